"""Self-consistency (Wang et al., 2022): sample many reasoning paths, majority-vote their answers.

* :func:`sample_paths` -- N paths for one problem in ONE batched ``generate`` call: N copies of the
  prompt with N distinct row seeds ``seed_offset + j`` (so the result is deterministic given
  ``cfg.seed`` and the offset, and path j does not depend on N: the first n of 32 paths ARE the
  n paths an SC@n run with the same seeds would sample).
* Paths vote by their answers' canonical forms (:func:`grading.rewards.canonical_answer`: ``4.0``,
  ``8/2`` and ``04`` are one answer), and a vote is graded by :func:`grading.rewards.is_correct`, the
  package's one definition of a correct answer. Clustering by sympy equivalence (O(N^2) grader calls)
  is not done: our tasks' answers are numbers, for which the canonical form is exact.
* :func:`vote` -- paths without an answer abstain. ``weighting``:
    - ``"count"``: one vote per path (plain majority).
    - ``"sum"``  : path weight = softmax over the answering paths of (sum of token log-probs) / T.
      This is the normalized sequence probability p(path)^(1/T): favours SHORT, confident paths.
    - ``"mean"`` : the same with the MEAN token log-prob (length-normalized; Wang et al.'s best
      weighted variant).
  The distribution returned maps answer -> total weight (counts for "count", weights summing to 1
  otherwise). The chosen answer has the largest total; ties (exactly equal totals) go to the answer
  whose paths have the higher mean (over its paths) of the per-path mean token log-prob, then to the
  smaller answer string (deterministic). Log-probs are the MODEL's (``GenerationResult.logprobs``:
  raw logits, temperature 1), not the sampling distribution's.
* :func:`accuracy_vs_n` -- SC accuracy for N in (1, 2, 4, 8, 16, 32) on a split from ONE set of
  max(N) paths per problem (SC@n votes over the first n), several problems per generate call (rows
  do not depend on their batch, so this equals one call per problem). :func:`curve_table` renders
  markdown, :func:`plot_curve` a PNG when matplotlib is installed (False otherwise).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..data.formats import parse_completion, prompt_ids
from ..grading.rewards import canonical_answer, is_correct
from ..generate import GenerationResult, SamplingConfig, generate

__all__ = ["Path", "Vote", "paths_from_result", "vote",
           "sample_paths", "self_consistency", "accuracy_vs_n", "curve_table", "plot_curve",
           "path_rows", "SEED_STRIDE", "WEIGHTINGS", "DEFAULT_NS"]

WEIGHTINGS = ("count", "sum", "mean")
DEFAULT_NS = (1, 2, 4, 8, 16, 32)
SEED_STRIDE = 100_003      # problem p's path j uses row seed p * SEED_STRIDE + j


@dataclass
class Path:
    tokens: list
    answer: str | None          # canonical
    sum_logprob: float
    n_tokens: int
    finish_reason: str = "stop"

    @property
    def mean_logprob(self) -> float:
        return self.sum_logprob / self.n_tokens if self.n_tokens else float("-inf")


@dataclass
class Vote:
    answer: str | None                                  # the chosen answer (None: every path abstained)
    distribution: dict = field(default_factory=dict)    # answer -> total weight (count or softmax mass)
    counts: dict = field(default_factory=dict)          # answer -> number of paths
    mean_logprob: dict = field(default_factory=dict)    # answer -> mean over its paths of path mean log-prob
    weighting: str = "count"
    n_paths: int = 0


def paths_from_result(result: GenerationResult, tok, fmt: str, rows=None) -> list[Path]:
    rows = range(len(result.tokens)) if rows is None else rows
    out = []
    for i in rows:
        toks = result.tokens[i]
        out.append(Path(list(toks), canonical_answer(parse_completion(toks, tok, fmt)),
                        float(np.sum(result.logprobs[i])), len(toks), result.finish_reasons[i]))
    return out


def vote(paths: Sequence[Path], weighting: str = "count", temperature: float = 1.0) -> Vote:
    """Majority / weighted vote over paths (see the module docstring for the rules)."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"vote: weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if not temperature > 0:
        raise ValueError(f"vote: temperature must be > 0, got {temperature!r}")
    answering = [p for p in paths if p.answer is not None]
    v = Vote(None, weighting=weighting, n_paths=len(paths))
    if not answering:
        return v
    if weighting == "count":
        weights = np.ones(len(answering))
    else:
        score = np.array([p.sum_logprob if weighting == "sum" else p.mean_logprob for p in answering])
        score = np.where(np.isfinite(score), score, -1e300) / temperature
        e = np.exp(score - score.max())
        weights = e / e.sum()
    means: dict = {}
    for p, w in zip(answering, weights):
        v.distribution[p.answer] = v.distribution.get(p.answer, 0.0) + float(w)
        v.counts[p.answer] = v.counts.get(p.answer, 0) + 1
        means.setdefault(p.answer, []).append(p.mean_logprob)
    v.mean_logprob = {a: float(np.mean(m)) for a, m in means.items()}
    if weighting == "count":
        v.distribution = {a: int(c) for a, c in v.distribution.items()}
    v.answer = min(v.distribution, key=lambda a: (-v.distribution[a], -v.mean_logprob[a], a))
    return v


def path_rows(records, start: int, n: int, tok, fmt: str) -> tuple:
    """(prompts, row seeds) of n paths for each record of a chunk that begins at problem `start`:
    the n copies of a prompt sit side by side (one shared prompt forward), path j of problem p with
    row seed p * SEED_STRIDE + j, so a path never depends on how problems are batched."""
    prompts, seeds = [], []
    for k, r in enumerate(records):
        prompts += [prompt_ids(r, tok, fmt)] * n
        seeds += [(start + k) * SEED_STRIDE + j for j in range(n)]
    return prompts, seeds


def _check_n(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"self-consistency: the number of paths must be an integer >= 1, got {n!r}")
    return int(n)


def sample_paths(model, prompt: Sequence[int], n: int, cfg: SamplingConfig, seed_offset: int = 0,
                 tool=None) -> GenerationResult:
    """N paths for one prompt in one batched generate call, row seeds seed_offset + 0..n-1."""
    n = _check_n(n)
    return generate(model, [list(prompt)] * n, cfg, row_seeds=[seed_offset + j for j in range(n)], tool=tool)


def self_consistency(model, tok, record, n: int, cfg: SamplingConfig, fmt: str = "cot",
                     weighting: str = "count", seed_offset: int = 0, tool=None):
    """(Vote, paths, GenerationResult) for one problem (a Record or a prompt's token ids)."""
    prompt = prompt_ids(record, tok, fmt) if hasattr(record, "question") else list(record)
    result = sample_paths(model, prompt, n, cfg, seed_offset, tool)
    paths = paths_from_result(result, tok, fmt)
    return vote(paths, weighting), paths, result


def accuracy_vs_n(model, tok, records, fmt: str, cfg: SamplingConfig, ns: Sequence[int] = DEFAULT_NS,
                  weighting: str = "count", rows_per_call: int = 64, tool=None) -> dict:
    """SC accuracy for every n in `ns`, all from one generation of max(ns) paths per problem.

    Problem p's path j has row seed p * SEED_STRIDE + j. Returns {"ns", "weighting", "n_problems",
    "accuracy": {n: acc}, "correct": {n: count}, "ci95": {n: [lo, hi]}, "answers": per problem
    [answer at each n], "generated_tokens", "seconds"}."""
    from ..train.stats import wilson_interval
    ns = sorted({_check_n(n) for n in ns})
    if not ns:
        raise ValueError("accuracy_vs_n: ns is empty")
    big = ns[-1]
    if big > SEED_STRIDE:
        raise ValueError(f"accuracy_vs_n: at most {SEED_STRIDE} paths per problem")
    per_call = max(1, rows_per_call // big)
    t0 = time.perf_counter()
    correct = {n: 0 for n in ns}
    answers, generated = [], 0
    for start in range(0, len(records), per_call):
        chunk = records[start:start + per_call]
        prompts, seeds = path_rows(chunk, start, big, tok, fmt)
        result = generate(model, prompts, cfg, row_seeds=seeds, tool=tool)
        generated += result.total_generated
        for k, r in enumerate(chunk):
            paths = paths_from_result(result, tok, fmt, range(k * big, (k + 1) * big))
            row = []
            for n in ns:
                a = vote(paths[:n], weighting).answer
                row.append(a)
                correct[n] += is_correct(a, r.answer)
            answers.append(row)
    total = len(records)
    acc = {n: (correct[n] / total if total else float("nan")) for n in ns}
    ci = {n: [round(x, 4) for x in wilson_interval(correct[n], total)] for n in ns}
    return {"ns": ns, "weighting": weighting, "n_problems": total, "accuracy": acc, "correct": correct,
            "ci95": ci, "answers": answers, "generated_tokens": generated,
            "seconds": time.perf_counter() - t0}


def curve_table(curve: dict) -> str:
    lines = [f"| paths N | accuracy ({curve['weighting']} vote) | correct / n | 95% CI (Wilson) |",
             "| --- | --- | --- | --- |"]
    for n in curve["ns"]:
        lo, hi = curve["ci95"][n]
        acc = curve["accuracy"][n]
        lines.append(f"| {n} | {acc:.1%} | {curve['correct'][n]} / {curve['n_problems']} | "
                     f"[{lo:.1%}, {hi:.1%}] |" if not math.isnan(acc) else f"| {n} | - | 0 / 0 | - |")
    return "\n".join(lines) + "\n"


def plot_curve(curve: dict, png_path: str) -> bool:
    """Accuracy vs number of paths (log2 x axis) with Wilson bars; False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ns = curve["ns"]
    acc = np.array([curve["accuracy"][n] for n in ns])
    lo = np.array([curve["ci95"][n][0] for n in ns])
    hi = np.array([curve["ci95"][n][1] for n in ns])
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.errorbar(ns, acc, yerr=[acc - lo, hi - acc], marker="o", capsize=3)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="sampled paths N", ylabel="accuracy", ylim=(0, 1),
           title=f"self-consistency ({curve['weighting']} vote)")
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    return True
