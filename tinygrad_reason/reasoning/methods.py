"""Evaluation methods for a trained run: the same problems, different ways of decoding an answer.

    greedy      greedy decoding (temperature 0)
    tool        greedy decoding with the calculator tool (tools.CalculatorTool) forcing annotation results
    sc@N        self-consistency: N sampled paths (temperature `temperature`), majority vote
    refine@K    greedy, then K rounds of checked-prefix self-refinement (refine.py)
    bon@N:V     best of N sampled paths (sc@N's paths) by verifier V: orm, prm (min over steps),
                prm-min, prm-prod (verifiers.py), or checker (the task's exact step checker, no learning)
    wvote@N:V   the paths' answers voted with verifier V's scores (orm or prm; wvote@N: the ORM when
                given, else the PRM)
    search:prm  PRM-guided step-level beam search (expand K candidates per step, keep the best B)

Every method grades the same way, by :func:`grading.rewards.is_correct` (so ``4``, ``4.0`` and ``8/2``
agree), as ``train.evaluation`` does; greedy decoding is ``train.evaluation.greedy_answers``.
Each result row: method, accuracy, correct, n, 95% Wilson CI, tokens generated (every sampled or
forced token of every path / round), wall time, plus method-specific counters.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass

from ..generate import SamplingConfig
from ..grading.rewards import is_correct
from ..train.evaluation import greedy_answers
from ..train.stats import wilson_interval
from .self_consistency import accuracy_vs_n

__all__ = ["MethodSpec", "EvalSettings", "parse_methods", "run_method", "run_methods", "methods_table",
           "METHOD_HELP"]

METHOD_HELP = ("greedy, tool, sc@N (N >= 1 sampled paths, majority vote), refine@K (K >= 0 rounds), "
               "bon@N:orm|prm|prm-min|prm-prod|checker (best of N by a verifier), wvote@N[:orm|:prm] (verifier-"
               "weighted vote), search:prm (PRM-guided step search)")
_SPEC = re.compile(r"^(greedy|tool|sc@(\d+)|refine@(\d+)|bon@(\d+):(orm|prm|prm-min|prm-prod|checker)|"
                   r"wvote@(\d+)(?::(orm|prm))?|search:prm)$")
VERIFIER_KINDS = ("bon", "wvote", "search")


@dataclass(frozen=True)
class MethodSpec:
    kind: str          # greedy | tool | sc | refine | bon | wvote | search
    k: int = 0         # paths for sc / bon / wvote, rounds for refine
    by: str = ""       # the verifier of bon / wvote / search: orm, prm, prm-prod ("" for wvote: either)

    @property
    def name(self) -> str:
        if self.kind in ("bon", "wvote"):
            return f"{self.kind}@{self.k}" + (f":{self.by}" if self.by else "")
        return {"sc": f"sc@{self.k}", "refine": f"refine@{self.k}", "search": "search:prm"}.get(self.kind, self.kind)

    @property
    def verifiers(self) -> tuple:
        """The verifier kinds ("orm", "prm") this method needs; wvote without one takes either."""
        if self.kind == "search":
            return ("prm",)
        if self.kind in ("bon", "wvote") and self.by:
            return {"orm": ("orm",), "checker": ()}.get(self.by, ("prm",))
        return ()


@dataclass
class EvalSettings:
    max_new_tokens: int = 96
    temperature: float = 0.7       # sampling temperature of sc@N and of refine's resampling
    seed: int = 0
    rows_per_call: int = 64        # rows per batched generate call
    weighting: str = "count"       # sc vote weighting (self_consistency.vote)
    search_expand: int = 4         # search:prm: candidates sampled per open partial solution and step
    search_beam: int = 2           # search:prm: partial solutions kept per step


def parse_methods(text: str) -> list:
    """'greedy,sc@8,tool,refine@2' -> [MethodSpec]; ValueError (one line) for a bad name."""
    specs = []
    for raw in str(text).split(","):
        name = raw.strip().lower()
        m = _SPEC.match(name)
        if not m:
            raise ValueError(f"unknown method {raw.strip()!r}; expected a comma-separated list of {METHOD_HELP}")
        if name.startswith("sc@"):
            spec = MethodSpec("sc", int(m.group(2)))
            if spec.k < 1:
                raise ValueError(f"method {name!r}: sc@N needs N >= 1")
        elif name.startswith("refine@"):
            spec = MethodSpec("refine", int(m.group(3)))
        elif name.startswith("bon@"):
            spec = MethodSpec("bon", int(m.group(4)), m.group(5))
        elif name.startswith("wvote@"):
            spec = MethodSpec("wvote", int(m.group(6)), m.group(7) or "")
        elif name == "search:prm":
            spec = MethodSpec("search", 0, "prm")
        else:
            spec = MethodSpec(name)
        if spec.kind in ("bon", "wvote") and spec.k < 1:
            raise ValueError(f"method {name!r}: {spec.kind}@N needs N >= 1")
        if spec in specs:
            raise ValueError(f"method {spec.name!r} is listed twice")
        specs.append(spec)
    return specs


def run_method(spec: MethodSpec, model, tok, records, fmt: str, settings: EvalSettings | None = None,
               verifiers: dict | None = None) -> dict:
    """One method on the records. verifiers: {"orm": nn.Verifier, "prm": nn.Verifier} as the
    verifier methods need them."""
    st = settings or EvalSettings()
    verifiers = {k: v for k, v in (verifiers or {}).items() if v is not None}
    if spec.kind in VERIFIER_KINDS and spec.by != "checker":
        needed = spec.verifiers or ("orm or prm",)
        missing = [k for k in needed if k not in verifiers and not (k == "orm or prm" and verifiers)]
        if missing:
            raise ValueError(f"method {spec.name!r} needs a trained {missing[0].upper()} verifier "
                             "(eval --orm DIR / --prm DIR, written by verifier train)")
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    extra = {}
    try:
        if spec.kind in ("greedy", "tool"):
            tool = None
            if spec.kind == "tool":
                from ..generate.tools import CalculatorTool
                tool = CalculatorTool(tok)
            answers, generated = greedy_answers(model, tok, records, fmt, st.max_new_tokens, st.rows_per_call, tool,
                                                st.seed)
            correct = sum(is_correct(a, r.answer) for a, r in zip(answers, records))
            if tool is not None:
                extra = {"tool_fired": tool.fired, "tool_invalid": tool.invalid}
        elif spec.kind == "sc":
            cfg = SamplingConfig(temperature=st.temperature, max_new_tokens=st.max_new_tokens,
                                 stop_ids=(tok.eot_id,), seed=st.seed)
            curve = accuracy_vs_n(model, tok, records, fmt, cfg, ns=(spec.k,), weighting=st.weighting,
                                  rows_per_call=st.rows_per_call)
            correct, generated = curve["correct"][spec.k], curve["generated_tokens"]
            extra = {"temperature": st.temperature, "weighting": st.weighting}
        elif spec.kind == "refine":
            from .refine import refine
            cfg = SamplingConfig(temperature=0.0, max_new_tokens=st.max_new_tokens, stop_ids=(tok.eot_id,),
                                 seed=st.seed)
            out = refine(model, tok, records, spec.k, cfg, resample_temperature=st.temperature, fmt=fmt,
                         rows_per_call=st.rows_per_call)
            correct = sum(is_correct(a, r.answer) for a, r in zip(out["answers"], records))
            generated = out["generated_tokens"]
            extra = {k: out[k] for k in ("revisions_tried", "revisions_kept", "scored_tokens")}
            extra["verified"] = sum(a.score[0] for a in out["attempts"])
        elif spec.kind in ("bon", "wvote"):
            from .verifiers import verifier_curve
            cfg = SamplingConfig(temperature=st.temperature, max_new_tokens=st.max_new_tokens,
                                 stop_ids=(tok.eot_id,), seed=st.seed)
            by = spec.by or ("orm" if "orm" in verifiers else "prm")
            use = {"orm": "orm", "checker": "checker"}.get(by, "prm")
            curve = verifier_curve(model, tok, records, fmt, cfg, (spec.k,), orm=verifiers.get("orm") if use == "orm"
                                   else None, prm=verifiers.get("prm") if use == "prm" else None,
                                   rows_per_call=st.rows_per_call, progress=False)
            column = {"prm": "prm-min"}.get(by, by) if spec.kind == "bon" else f"wvote-{use}"
            correct, generated = curve["correct"][column][spec.k], curve["generated_tokens"]
            extra = {"temperature": st.temperature, "verifier": use, "selection": column,
                     "pass_at_n": curve["pass"][spec.k], "scored_tokens": curve["scored_tokens"],
                     "score_seconds": round(curve["score_seconds"], 3)}
        elif spec.kind == "search":
            from .verifiers import prm_search
            cfg = SamplingConfig(temperature=st.temperature, max_new_tokens=st.max_new_tokens,
                                 stop_ids=(tok.eot_id,), seed=st.seed)
            out = prm_search(model, verifiers["prm"], tok, records, cfg, st.search_expand, st.search_beam,
                             fmt=fmt, rows_per_call=st.rows_per_call, progress=False)
            correct = sum(is_correct(a, r.answer) for a, r in zip(out["answers"], records))
            generated = out["generated_tokens"]
            extra = {"expand": st.search_expand, "beam": st.search_beam, "rounds": out["rounds"],
                     "scored_tokens": out["scored_tokens"]}
        else:  # pragma: no cover - parse_methods only builds the kinds above
            raise ValueError(f"unknown method {spec.name!r}")
    finally:
        model.train(was_training)
    n = len(records)
    lo, hi = wilson_interval(correct, n)
    return {"method": spec.name, "accuracy": correct / n if n else float("nan"), "correct": int(correct), "n": n,
            "ci95": [round(lo, 4), round(hi, 4)], "generated_tokens": int(generated),
            "seconds": round(time.perf_counter() - t0, 3), **extra}


def run_methods(specs, model, tok, records, fmt: str, settings: EvalSettings | None = None,
                verifiers: dict | None = None) -> list:
    if isinstance(specs, str):
        specs = parse_methods(specs)
    return [run_method(s, model, tok, records, fmt, settings, verifiers) for s in specs]


def methods_table(rows, split: str) -> str:
    lines = ["| method | split | accuracy | n | 95% CI | tokens | seconds |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['method']} | {split} | {r['accuracy']:.1%} | {r['n']} | "
                     f"[{r['ci95'][0]:.1%}, {r['ci95'][1]:.1%}] | {r['generated_tokens']} | {r['seconds']:.1f} |")
    return "\n".join(lines) + "\n"
