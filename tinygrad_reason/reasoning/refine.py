"""Self-refinement for k rounds, in the chain-of-thought format our models already know.

Our tiny models are trained only on ``<|question|> q <|think|> step <|step|> ... <|answer|> a
<|endoftext|>``; they have never seen "here is your previous attempt, check it". So a refinement
round cannot show the model its solution and ask for a critique. Instead it RE-SOLVES with the
checked part of the previous attempt as context -- prefix-conditioned regeneration, which the
format supports as is (the prefix is literally the beginning of a chain of thought):

1. Check every step of the current attempt (:func:`check_step`): a step is ``ok`` when it has at
   least one ``<<expr=result>>`` annotation, every annotation is closed, ``safe_eval(expr)`` equals
   ``result`` exactly, and the number written right after ``>>`` (if any) equals it too. A step
   without annotations is unverifiable (``none``) and counts as not ok; so does a step the model
   never closed with ``<|step|>``.
2. Keep the longest prefix of ``ok`` steps (their exact tokens). At the first step that is not ok:
     * ``repair``: if all its annotations are closed and their expressions evaluate, rewrite that
       step with the correct results (``<<expr=v>>v``) and append it to the prefix, then continue
       with the BASE decoding config (greedy by default);
     * ``resample``: otherwise (no annotation, unparseable expression, unfinished step, or every
       step ok but no answer) drop that step and continue from the prefix with sampling
       (``resample_temperature``, default 0.7; row seed ``round * SEED_STRIDE + problem``) -- with
       greedy decoding, re-solving from an unchanged prefix would reproduce the same tokens.
   An attempt whose steps are all ok and that has an answer is not revised (the loop stops).
3. Score a candidate (:func:`score`) as the tuple ``(verified, mean token log-prob)``: ``verified``
   is 1 when every step is ok and an answer was written, else 0; the mean is over the whole
   completion under the model (one uncached forward, :func:`score_completions`, so prefix tokens
   from an earlier attempt and the repaired step are scored in their new context). Tuples compare
   lexicographically, and a revision is KEPT only if its score is >= the current one (ties keep the
   revision); otherwise the previous attempt stays.

Round 0 is the base decoding of the plain prompt (greedy: the same as the ``greedy`` method), so
``refine@0`` is greedy and ``refine@k`` costs at most k more (shorter) generations per problem.
Tokens generated counts every round's continuation; the rescoring forwards are reported separately
(``scored_tokens``). All problems that need a revision in a round share one batched generate call.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np

from ..data.formats import parse_completion, prompt_ids
from ..grading.safe_eval import find_annotations, format_number, safe_eval
from ..generate import SamplingConfig, generate, inference, log_softmax
from ..grading.rewards import canonical_answer
from ..grading.steps import ANNOTATION_WITH_COPY, STEP_BAD, STEP_NONE, STEP_OK, check_step
from .self_consistency import SEED_STRIDE

__all__ = ["Attempt", "split_steps", "check_step", "repair_step", "score", "accept", "score_completions",
           "refine", "STEP_OK", "STEP_BAD", "STEP_NONE"]



@dataclass
class Attempt:
    completion: list                 # generated tokens after the prompt
    logprobs: np.ndarray             # model log-probs of those tokens (rescored)
    score: tuple                     # (verified 0/1, mean log-prob)
    answer: str | None               # canonical answer
    history: list = field(default_factory=list)   # per round: mode, first bad step, scores, kept


def split_steps(completion, tok):
    """(steps, has_answer): steps = [(tokens without the <|step|>, closed?)] before <|answer|> /
    <|endoftext|>; an unclosed trailing step is (tokens, False)."""
    steps, cur = [], []
    has_answer = False
    for t in completion:
        if t == tok.step_id:
            steps.append((cur, True))
            cur = []
        elif t == tok.answer_id:
            has_answer = True
            break
        elif t == tok.eot_id:
            break
        else:
            cur.append(t)
    if cur and any(not tok.is_special(t) for t in cur):
        steps.append((cur, False))
    return steps, has_answer


def repair_step(text: str) -> str | None:
    """The step with every annotation's result (and the number after it) recomputed; None when an
    annotation is unclosed or its expression does not evaluate."""
    anns = list(find_annotations(text))
    if not anns or text.count("<<") != len(anns) or text.count(">>") != len(anns):
        return None
    if any(a.value is None for a in anns):
        return None

    def fix(m):
        expr = m.group(1).rsplit("=", 1)[0] if "=" in m.group(1) else m.group(1)
        v = format_number(safe_eval(expr))
        return f"<<{expr}={v}>>" + (v if m.group(2) is not None else "")
    return ANNOTATION_WITH_COPY.sub(fix, text)


def score(completion, logprobs, tok, fmt: str = "cot") -> tuple:
    steps, has_answer = split_steps(completion, tok)
    ans = parse_completion(completion, tok, fmt)
    verified = bool(steps) and has_answer and bool(ans) and all(
        closed and check_step(tok.decode(s)) == STEP_OK for s, closed in steps)
    lp = np.asarray(logprobs, dtype=np.float64)
    return (int(verified), float(lp.mean()) if lp.size else float("-inf"))


def accept(old: tuple, new: tuple) -> bool:
    """Keep a revision only if its score does not drop (lexicographic tuple comparison)."""
    return tuple(new) >= tuple(old)


def score_completions(model, prompts, completions, batch: int = 16) -> list:
    """Model log-probs of each completion given its prompt: one uncached right-padded forward."""
    out = []
    for s in range(0, len(prompts), batch):
        seqs = [list(p) + list(c) for p, c in zip(prompts[s:s + batch], completions[s:s + batch])]
        width = max(len(q) for q in seqs)
        ids = np.zeros((len(seqs), width), dtype=np.int64)
        mask = np.zeros((len(seqs), width), dtype=bool)
        for i, q in enumerate(seqs):
            ids[i, :len(q)] = q
            mask[i, :len(q)] = True
        with inference(model):
            logits = model.logits(model.hidden_states(ids, pad_mask=mask)).data    # (B, T, V), any device
        for i, (p, c) in enumerate(zip(prompts[s:s + batch], completions[s:s + batch])):
            if not len(c):
                out.append(np.zeros(0))
                continue
            lp = log_softmax(logits[i, len(p) - 1:len(p) + len(c) - 1])
            out.append(lp[np.arange(len(c)), list(c)])
    return out


def _revision_prefix(completion, tok):
    """(prefix tokens, mode, first bad step index) or None when the attempt needs no revision."""
    steps, has_answer = split_steps(completion, tok)
    prefix = []
    for k, (s, closed) in enumerate(steps):
        text = tok.decode(s)
        status = check_step(text) if closed else STEP_BAD
        if status == STEP_OK:
            prefix += list(s) + [tok.step_id]
            continue
        fixed = repair_step(text) if closed and status == STEP_BAD else None
        if fixed is not None:
            return prefix + tok.encode(fixed) + [tok.step_id], "repair", k
        return prefix, "resample", k
    if has_answer and steps and parse_completion(completion, tok, "cot"):
        return None
    return prefix, "resample", len(steps)


def refine(model, tok, records, rounds: int, cfg: SamplingConfig, resample_temperature: float = 0.7,
           fmt: str = "cot", rows_per_call: int = 64) -> dict:
    """Run round 0 (cfg on the plain prompts) and `rounds` refinement rounds; returns
    {"attempts": [Attempt], "answers", "generated_tokens", "scored_tokens", "revisions_tried",
    "revisions_kept", "seconds"}."""
    if fmt != "cot":
        raise ValueError("refine needs a chain-of-thought (cot) run: it re-checks the reasoning steps")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
        raise ValueError(f"refine: rounds must be an integer >= 0, got {rounds!r}")
    t0 = time.perf_counter()
    prompts = [prompt_ids(r, tok, fmt) for r in records]
    generated = scored = 0
    completions = []
    for s in range(0, len(prompts), rows_per_call):
        res = generate(model, prompts[s:s + rows_per_call], cfg, row_seeds=range(s, min(s + rows_per_call, len(prompts))))
        completions += res.tokens
        generated += res.total_generated
    lps = score_completions(model, prompts, completions)
    scored += sum(len(p) + len(c) for p, c in zip(prompts, completions))
    attempts = [Attempt(c, lp, score(c, lp, tok, fmt), canonical_answer(parse_completion(c, tok, fmt)))
                for c, lp in zip(completions, lps)]
    resample_cfg = dataclasses.replace(cfg, temperature=resample_temperature)
    ctx = model.cfg.context_length
    tried = kept = 0
    for rnd in range(1, rounds + 1):
        todo = []
        for i, a in enumerate(attempts):
            plan = _revision_prefix(a.completion, tok)
            if plan is not None and len(prompts[i]) + len(plan[0]) < ctx:   # room to continue
                todo.append((i, *plan))
        if not todo:
            break
        new_completions = {}
        for mode, mcfg in (("repair", cfg), ("resample", resample_cfg)):
            group = [(i, pre) for i, pre, m, _ in todo if m == mode]
            for s in range(0, len(group), rows_per_call):
                chunk = group[s:s + rows_per_call]
                res = generate(model, [prompts[i] + pre for i, pre in chunk], mcfg,
                               row_seeds=[rnd * SEED_STRIDE + i for i, _ in chunk])
                generated += res.total_generated
                for (i, pre), cont in zip(chunk, res.tokens):
                    new_completions[i] = pre + cont
        order = [i for i, _, _, _ in todo]
        new_lps = score_completions(model, [prompts[i] for i in order], [new_completions[i] for i in order])
        scored += sum(len(prompts[i]) + len(new_completions[i]) for i in order)
        for (i, _, mode, k), lp in zip(todo, new_lps):
            a, c = attempts[i], new_completions[i]
            new_score = score(c, lp, tok, fmt)
            ok = accept(a.score, new_score)
            tried += 1
            kept += ok
            a.history.append({"round": rnd, "mode": mode, "first_bad_step": k, "old_score": list(a.score),
                              "new_score": list(new_score), "kept": bool(ok)})
            if ok:
                a.completion, a.logprobs, a.score = c, lp, new_score
                a.answer = canonical_answer(parse_completion(c, tok, fmt))
    return {"attempts": attempts, "answers": [a.answer for a in attempts], "generated_tokens": generated,
            "scored_tokens": scored, "revisions_tried": tried, "revisions_kept": kept,
            "seconds": time.perf_counter() - t0}
