"""Using trained verifiers: score sampled solutions, rerank them, weigh their votes, and measure
how accuracy grows with the number of samples N for every way of choosing among them.

* :func:`score_completions` -- one forward of the verifier over a batch of prompt + completion
  rows (no second pass per step): the ORM score of a completion is sigmoid(logit) at its last
  token; the PRM scores are sigmoid(logit) at each <|step|> token and at the last token (the
  answer's own "step", see train/verifier.py).
* :func:`solution_score` -- a PRM's solution score from its step scores: "min" (the weakest
  step) or "prod" (the chance that every step is right, if steps were independent; Lightman et al.).
* :func:`best_of_n` -- the path with the highest score; ties (exactly equal scores) go to the
  earliest path, so reranking is deterministic. :func:`weighted_vote` -- every answering path
  votes for its answer with its verifier score; the largest total wins, ties go to the answer with
  more paths, then to the smaller answer string.
* :func:`verifier_curve` -- ONE set of max(N) sampled paths per problem (row seeds
  p * SEED_STRIDE + j, the same paths self-consistency samples), scored once; for every N the
  first N paths give: majority vote, best-of-N by the task's exact step checker (the fraction of a
  path's steps grading.steps accepts; it never sees the reference answer), by ORM / PRM-min / PRM-prod, verifier-weighted
  votes, pass@N (at least one path right: the ceiling of any reranker) and the mean number of
  distinct answers. Per-problem correctness is kept so methods are compared on the same problems
  (McNemar's paired test, train.stats.mcnemar_p).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from types import SimpleNamespace

import numpy as np

from ..data.formats import parse_completion, prompt_ids
from ..generate import generate
from ..grading.rewards import is_correct
from ..tensor import no_grad
from ..train.progress import Progress
from ..train.stats import wilson_interval
from ..train.verifier import make_example
from .self_consistency import SEED_STRIDE, path_rows, paths_from_result, vote
from .verifier_data import label_completion, solution_steps

AGGREGATES = ("min", "prod")


@dataclass
class Scored:
    orm: float | None          # sigmoid at the last token (None without an ORM)
    steps: list                # PRM sigmoid at each step token and the last token ([] without a PRM)
    checked: float = 0.0       # the fraction of its steps the task's exact checker accepts (0 without steps)


def _rows(prompt, completion, tok):
    """(ids, index of the last token, indices of the step tokens and the last token)."""
    completion = list(completion) or [tok.eot_id]      # an empty completion is scored at a stop token
    _, ends = solution_steps(completion, tok)
    n = len(prompt)
    last = n + len(completion) - 1
    positions = [n + e for e in ends]
    if not positions or positions[-1] != last:
        positions.append(last)
    return list(prompt) + completion, last, positions


def verifier_logits(verifier, rows, pad_id: int):
    """(B, T) float64 logits of right-padded rows of token ids, in one forward."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=bool)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
        mask[i, :len(r)] = True
    with no_grad():
        return verifier(ids, mask).numpy().astype(np.float64)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def score_completions(tok, prompts, completions, orm=None, prm=None, batch: int = 64) -> list:
    """A Scored per (prompt, completion) pair: one forward per verifier per batch of rows."""
    if len(prompts) != len(completions):
        raise ValueError(f"score_completions: {len(prompts)} prompts for {len(completions)} completions")
    if orm is None and prm is None:
        raise ValueError("score_completions: give an ORM, a PRM or both")
    out = []
    for v in (orm, prm):
        if v is not None:
            v.eval()
    for start in range(0, len(prompts), batch):
        rows = [_rows(p, c, tok) for p, c in zip(prompts[start:start + batch], completions[start:start + batch])]
        ids = [r[0] for r in rows]
        o = _sigmoid(verifier_logits(orm, ids, tok.pad_id)) if orm is not None else None
        s = _sigmoid(verifier_logits(prm, ids, tok.pad_id)) if prm is not None else None
        for i, (_, last, positions) in enumerate(rows):
            out.append(Scored(float(o[i, last]) if o is not None else None,
                              [float(s[i, p]) for p in positions] if s is not None else []))
    return out


def solution_score(step_scores, aggregate: str = "min") -> float:
    if aggregate not in AGGREGATES:
        raise ValueError(f"solution_score: aggregate must be one of {AGGREGATES}, got {aggregate!r}")
    if not step_scores:
        raise ValueError("solution_score: no step scores (was the solution scored by a PRM?)")
    return float(min(step_scores)) if aggregate == "min" else float(np.prod(step_scores))


def best_of_n(scores) -> int:
    """Index of the highest score; exactly equal scores go to the earliest path."""
    if len(scores) == 0:
        raise ValueError("best_of_n: no paths to choose from")
    best = 0
    for i, s in enumerate(scores):
        if s > scores[best]:
            best = i
    return best


def weighted_vote(answers, scores):
    """The answer with the largest total verifier score over its paths (None answers abstain);
    ties go to the answer with more paths, then the smaller answer string. None when all abstain."""
    totals, counts = {}, {}
    for a, s in zip(answers, scores):
        if a is None:
            continue
        totals[a] = totals.get(a, 0.0) + float(s)
        counts[a] = counts.get(a, 0) + 1
    if not totals:
        return None
    return min(totals, key=lambda a: (-totals[a], -counts[a], a))


def choose(method: str, paths, scored) -> str | None:
    """The answer `method` picks from paths (self_consistency.Path) and their Scored."""
    answers = [p.answer for p in paths]
    if method == "majority":
        return vote(paths).answer
    if method == "orm":
        return answers[best_of_n([s.orm for s in scored])]
    if method in ("prm-min", "prm-prod"):
        agg = method.split("-")[1]
        return answers[best_of_n([solution_score(s.steps, agg) for s in scored])]
    if method == "wvote-orm":
        return weighted_vote(answers, [s.orm for s in scored])
    if method == "wvote-prm":
        return weighted_vote(answers, [solution_score(s.steps, "min") for s in scored])
    if method == "checker":
        return answers[best_of_n([s.checked for s in scored])]
    raise ValueError(f"choose: unknown method {method!r}")


def curve_methods(orm, prm) -> list:
    """The selection methods that the given verifiers allow: majority vote first, the exact step
    checker (no learning: the reference a perfect process verifier would approach), then the learned."""
    out = ["majority", "checker"]
    if orm is not None:
        out += ["orm", "wvote-orm"]
    if prm is not None:
        out += ["prm-min", "prm-prod", "wvote-prm"]
    return out


def verifier_curve(model, tok, records, fmt: str, cfg, ns, orm=None, prm=None, rows_per_call: int = 64,
                   progress: bool = True) -> dict:
    """Accuracy against N for every selection method, from one set of max(ns) paths per problem.

    Returns {"ns", "methods", "n_problems", "correct": {method: {n: count}}, "right": {method: {n:
    [bool per problem]}}, "pass": {n: count}, "distinct": {n: mean distinct answers}, "samples":
    [(problem, path index, ORM score, PRM min score, right)] for calibration, "generated_tokens",
    "sample_seconds", "score_seconds", "scored_tokens"}."""
    ns = sorted({int(n) for n in ns})
    if not ns or ns[0] < 1:
        raise ValueError(f"verifier_curve: ns must be integers >= 1, got {ns}")
    big = ns[-1]
    if big > SEED_STRIDE:
        raise ValueError(f"verifier_curve: at most {SEED_STRIDE} paths per problem")
    methods = curve_methods(orm, prm)
    right = {m: {n: [] for n in ns} for m in methods}
    passed = {n: 0 for n in ns}
    distinct = {n: 0.0 for n in ns}
    samples, generated, scored_tokens = [], 0, 0
    t_sample = t_score = 0.0
    per_call = max(1, rows_per_call // big)
    bar = Progress(len(records), "problems", progress)
    model.eval()
    for start in range(0, len(records), per_call):
        chunk = records[start:start + per_call]
        prompts, seeds = path_rows(chunk, start, big, tok, fmt)
        t0 = time.perf_counter()
        result = generate(model, prompts, cfg, row_seeds=seeds)
        t1 = time.perf_counter()
        generated += result.total_generated
        scored = score_completions(tok, prompts, result.tokens, orm, prm, rows_per_call) if orm or prm else \
            [Scored(None, []) for _ in prompts]
        t_score += time.perf_counter() - t1
        t_sample += t1 - t0
        scored_tokens += sum(len(p) + max(1, len(c)) for p, c in zip(prompts, result.tokens))
        for k, r in enumerate(chunk):
            rows = range(k * big, (k + 1) * big)
            paths = paths_from_result(result, tok, fmt, rows)
            marks = [bool(is_correct(p.answer, r.answer)) for p in paths]
            sc = [scored[i] for i in rows]
            for s, i in zip(sc, rows):
                labels = label_completion(start + k, r, result.tokens[i], tok, fmt).step_labels
                s.checked = sum(labels) / len(labels) if labels else 0.0
            for j, (s, ok) in enumerate(zip(sc, marks)):
                samples.append((start + k, j, s.orm, solution_score(s.steps, "min") if s.steps else None, ok))
            for n in ns:
                passed[n] += any(marks[:n])
                distinct[n] += len({p.answer for p in paths[:n] if p.answer is not None})
                for m in methods:
                    right[m][n].append(bool(is_correct(choose(m, paths[:n], sc[:n]), r.answer)))
        bar.update(start + len(chunk))
    bar.close()
    total = len(records)
    return {"ns": ns, "methods": methods, "n_problems": total,
            "correct": {m: {n: sum(right[m][n]) for n in ns} for m in methods}, "right": right,
            "pass": passed, "distinct": {n: distinct[n] / total if total else float("nan") for n in ns},
            "samples": samples, "generated_tokens": generated, "sample_seconds": t_sample,
            "score_seconds": t_score, "scored_tokens": scored_tokens,
            "verifier_passes": (orm is not None) + (prm is not None)}


METHOD_TITLES = {"majority": "majority vote", "checker": "best-of-N, exact step checker", "orm": "best-of-N, ORM", "wvote-orm": "ORM-weighted vote",
                 "prm-min": "best-of-N, PRM min", "prm-prod": "best-of-N, PRM product",
                 "wvote-prm": "PRM-weighted vote", "pass": "pass@N (ceiling)"}


def _cell(c: int, n: int) -> str:
    lo, hi = wilson_interval(c, n)
    return f"{c / n:.1%} [{lo:.0%}, {hi:.0%}]" if n else "-"


def verifier_curve_table(curve: dict) -> str:
    """Markdown: one row per N, one column per method (accuracy [Wilson 95% CI]), pass@N and the
    mean number of distinct answers."""
    cols = curve["methods"]
    n = curve["n_problems"]
    head = "| N | " + " | ".join(METHOD_TITLES[m] for m in cols) + " | pass@N | distinct answers |"
    lines = [head, "|" + " --- |" * (len(cols) + 3)]
    for k in curve["ns"]:
        cells = [_cell(curve["correct"][m][k], n) for m in cols]
        lines.append(f"| {k} | " + " | ".join(cells) + f" | {_cell(curve['pass'][k], n)} | "
                     f"{curve['distinct'][k]:.2f} |")
    return "\n".join(lines) + "\n"


def plot_verifier_curve(curve: dict, png_path: str, title: str = "") -> bool:
    """Accuracy vs N (log2 axis) per method with Wilson bars, pass@N dashed; False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ns, n = curve["ns"], curve["n_problems"]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    series = [(m, curve["correct"][m]) for m in curve["methods"]] + [("pass", curve["pass"])]
    for i, (m, counts) in enumerate(series):
        acc = np.array([counts[k] / n for k in ns])
        ci = np.array([wilson_interval(counts[k], n) for k in ns])
        x = np.array(ns) * (1 + 0.03 * (i - len(series) / 2))       # a small offset keeps the bars apart
        ax.errorbar(x, acc, yerr=[acc - ci[:, 0], ci[:, 1] - acc], marker="o", capsize=2,
                    linestyle="--" if m == "pass" else "-", label=METHOD_TITLES[m])
    ax.set_xscale("log", base=2)
    ax.set(xlabel="sampled solutions N", ylabel="accuracy", ylim=(0, 1), title=title or "verifiers vs N")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    return True


def examples_from_labels(solutions, tok, kind: str, orm_targets: str = "token", labels: str = "exact",
                         fmt: str = "cot") -> list:
    """Training examples (train.verifier.VerifierExample) of labelled solutions. labels: "exact" (the
    task's step checker) or "mc" (Monte-Carlo values; the solutions must carry them)."""
    if labels not in ("exact", "mc"):
        raise ValueError(f"examples_from_labels: labels must be 'exact' or 'mc', got {labels!r}")
    out = []
    for s in solutions:
        prompt = prompt_ids(SimpleNamespace(question=s.question), tok, fmt)
        values = s.step_labels
        if kind == "prm" and labels == "mc":
            if getattr(s, "mc_k", 0) <= 0:
                raise ValueError(f"examples_from_labels: solution of problem {s.problem} has no Monte-Carlo "
                                 "labels (label them with mc_step_labels first)")
            values = s.mc_values
        out.append(make_example(prompt, s.completion or [tok.eot_id], s.correct, kind, orm_targets,
                                s.step_ends if kind == "prm" else (), values if kind == "prm" else ()))
    return out


def split_by_problem(solutions, held_out: float = 0.1, seed: int = 0) -> tuple:
    """(train, held-out) solutions, whole problems on one side (no problem's samples leak across)."""
    problems = sorted({s.problem for s in solutions})
    rng = np.random.default_rng(seed)
    k = int(math.ceil(len(problems) * held_out)) if held_out > 0 else 0
    held = set(rng.permutation(problems)[:k].tolist())
    return [s for s in solutions if s.problem not in held], [s for s in solutions if s.problem in held]


def prm_search(model, prm, tok, records, cfg, expand: int = 4, beam: int = 2, max_rounds: int = 16,
               fmt: str = "cot", rows_per_call: int = 64, progress: bool = True) -> dict:
    """PRM-guided step-level beam search: every round, each of a problem's (at most `beam`) open
    partial solutions is extended by `expand` sampled next steps (generation stops at <|step|> or
    end-of-text); the PRM scores each candidate at its new last token (one forward over all
    candidates), a candidate's score is the min over its steps, and the best `beam` open ones go
    on. Finished candidates (end-of-text, or no budget left) wait in a pool; the answer is the
    best-scored finished one (ties: the earliest found). The whole completion is held to
    cfg.max_new_tokens. Row seeds p * SEED_STRIDE + 1000 * round + 10 ... (distinct per problem,
    round, beam and candidate, and independent of the batching).

    Returns {"answers", "generated_tokens", "scored_tokens", "rounds"}."""
    if max_rounds < 1:
        raise ValueError(f"prm_search: max_rounds must be >= 1, got {max_rounds}")
    if expand < 1 or beam < 1 or expand * beam > 1000:
        raise ValueError(f"prm_search: expand {expand} and beam {beam} must be >= 1 with expand * beam <= 1000")
    if prm is None:
        raise ValueError("prm_search: needs a process reward model")
    prm.eval()
    model.eval()
    prompts = [prompt_ids(r, tok, fmt) for r in records]
    open_ = [[([], [])] for _ in records]              # per problem: (completion, step scores) still open
    done = [[] for _ in records]                       # per problem: (score, order, completion)
    step_cfg = replace(cfg, stop_ids=tuple(sorted({tok.step_id, tok.eot_id, *cfg.stop_ids})))
    generated = scored_tokens = rounds = 0
    bar = Progress(max_rounds, "search rounds", progress)
    for rnd in range(max_rounds):
        jobs = [(p, b, c) for p in range(len(records)) for b in range(len(open_[p])) for c in range(expand)]
        if not jobs:
            break
        rounds += 1
        new = []
        for start in range(0, len(jobs), rows_per_call):
            chunk = jobs[start:start + rows_per_call]
            rows = [prompts[p] + open_[p][b][0] for p, b, _ in chunk]
            seeds = [p * SEED_STRIDE + 1000 * rnd + b * expand + c for p, b, c in chunk]
            room = max(0, min(cfg.max_new_tokens - max(len(open_[p][b][0]) for p, b, _ in chunk),
                              model.cfg.context_length - max(len(r) for r in rows)))
            out = generate(model, rows, replace(step_cfg, max_new_tokens=room), row_seeds=seeds) if room else None
            generated += out.total_generated if out else 0
            for i, (p, b, c) in enumerate(chunk):
                comp = open_[p][b][0] + (list(out.tokens[i]) if out else [])
                new.append((p, b, comp))
        scores = score_completions(tok, [prompts[p] for p, _, _ in new], [comp for _, _, comp in new], prm=prm,
                                   batch=rows_per_call)
        scored_tokens += sum(len(prompts[p]) + max(1, len(comp)) for p, _, comp in new)
        candidates = [[] for _ in records]
        for (p, b, comp), s in zip(new, scores):
            steps = open_[p][b][1] + [s.steps[-1]]
            finished = (bool(comp) and comp[-1] == tok.eot_id) or len(comp) >= cfg.max_new_tokens or \
                len(prompts[p]) + len(comp) >= model.cfg.context_length or (comp == open_[p][b][0])
            if finished:
                done[p].append((min(steps), -len(done[p]), comp))
            else:
                candidates[p].append((min(steps), -len(candidates[p]), comp, steps))
        for p in range(len(records)):
            best = sorted(candidates[p], key=lambda x: (x[0], x[1]), reverse=True)[:beam]
            open_[p] = [(comp, steps) for _, _, comp, steps in best]
        bar.update(rnd + 1)
    bar.close()
    answers = []
    for p in range(len(records)):
        pool = done[p] or [(min(st), 0, comp) for comp, st in open_[p]]     # out of rounds: the open ones
        if not pool:
            answers.append(None)
            continue
        best = max(pool, key=lambda x: (x[0], x[1]))
        answers.append(parse_completion(best[2], tok, fmt))
    return {"answers": answers, "generated_tokens": generated, "scored_tokens": scored_tokens, "rounds": rounds}


def plot_reliability(calibration: dict, png_path: str, title: str = "") -> bool:
    """Reliability diagram: per bin, the mean predicted chance of being right against the fraction
    actually right (the diagonal is perfect calibration), one line per verifier; False without
    matplotlib. calibration: {name: train.stats.reliability(...) plus "auroc"}."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    for name, c in calibration.items():
        bins = [b for b in c["bins"] if b["count"]]
        ax.plot([b["mean_predicted"] for b in bins], [b["fraction_right"] for b in bins], marker="o",
                label=f"{name} (AUROC {c['auroc']:.2f}, ECE {c['ece']:.3f})")
    ax.set(xlabel="predicted chance of being right", ylabel="fraction right", xlim=(0, 1), ylim=(0, 1),
           title=title or "verifier calibration")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    return True
