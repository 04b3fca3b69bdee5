"""Labelled samples for verifiers: N sampled solutions per problem, each with its outcome label
(grading.rewards.is_correct) and exact step labels (grading.steps.step_labels), saved as JSON lines
so a verifier can be retrained without sampling again.

Monte-Carlo step values (Math-Shepherd, Wang et al. 2023) sit beside the exact labels: a step's value
is the fraction of k continuations sampled after it that reach the right answer (`mc_step_labels`).
They need no checker of the steps, only of the final answer, so they are what a task without the
exact checker would train its process reward model on; `label_agreement` measures how far they
agree with the exact labels where both exist.

A label file's first line is a header {"format", "version", "meta"} (meta holds the sampling seed,
temperature, N, ...); every later line is one LabelledSolution. Loading checks the format and
version and names the file and line of anything malformed. Version 2 added mc_values / mc_k; a
version-1 file still loads, its solutions with mc_values [] and mc_k 0 (not Monte-Carlo labelled).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace

from ..data.formats import parse_completion, prompt_ids
from ..data.multiplication import given_numbers
from ..generate import SamplingConfig, generate
from ..grading.rewards import is_correct
from ..grading.steps import step_labels
from ..io.atomic import write_text
from ..train.progress import Progress
from .self_consistency import path_rows

LABELS_FORMAT = "tinygrad_reason.verifier_labels"
LABELS_VERSION = 2
READ_VERSIONS = (1, 2)       # version 1: no mc_values / mc_k (they load as [] and 0)
V1_ABSENT = ("mc_values", "mc_k")

# Row seeds of the Monte-Carlo continuations: solution i (its index in the list), step s, continuation j
#     MC_SEED_OFFSET + (i * MC_STRIDE + s) * MC_STRIDE + j
# cfg.seed is left as given; the offset 2**62 keeps these apart from sample_labelled's p * SEED_STRIDE + j
# for any p below 4.6e13, and j's seed does not depend on k, so k = 8 reuses k = 4's four continuations.
MC_SEED_OFFSET = 1 << 62
MC_STRIDE = 1 << 16          # the most steps per solution and the largest k


@dataclass
class LabelledSolution:
    problem: int                 # index of the problem in the sampled records
    question: str
    reference: str
    completion: list             # generated token ids (stop token included)
    answer: str | None           # parsed from the completion
    correct: bool                # outcome label
    step_ends: list = field(default_factory=list)     # index in completion of each <|step|> token
    step_labels: list = field(default_factory=list)   # exact label of each step (same length)
    mc_values: list = field(default_factory=list)     # Monte-Carlo value of each step (same length when mc_k > 0)
    mc_k: int = 0                                     # continuations per step behind mc_values; 0: none sampled


def solution_steps(completion, tok) -> tuple[list, list]:
    """(step texts, index of each step's <|step|> token) of the steps before <|answer|> / the end."""
    texts, ends, start = [], [], 0
    for i, t in enumerate(completion):
        if t in (tok.answer_id, tok.eot_id):
            break
        if t == tok.step_id:
            texts.append(tok.decode([x for x in completion[start:i] if not tok.is_special(x)]))
            ends.append(i)
            start = i + 1
    return texts, ends


def label_completion(problem: int, record, completion, tok, fmt: str = "cot") -> LabelledSolution:
    """Outcome and exact step labels of one sampled completion of `record`."""
    completion = [int(t) for t in completion]
    answer = parse_completion(completion, tok, fmt)
    texts, ends = solution_steps(completion, tok)
    given = given_numbers(record) if record.meta.get("task") == "multiplication" else ()
    return LabelledSolution(problem, record.question, str(record.answer), completion, answer,
                            bool(is_correct(answer, record.answer)), ends, step_labels(record.question, texts, given))


def step_targets(solution: LabelledSolution) -> tuple[list, list]:
    """(positions of the <|step|> tokens in the completion, their labels): what a process reward model
    is trained on. A solution without step tokens is a clear error."""
    if not solution.step_ends:
        raise ValueError(f"step_targets: solution {solution.completion[:12]}... of problem {solution.problem} "
                         "has no <|step|> token, so it has no step to label")
    return solution.step_ends, solution.step_labels


def sample_labelled(model, tok, records, n: int, cfg: SamplingConfig, fmt: str = "cot", rows_per_call: int = 64,
                    progress: bool = True) -> list:
    """n sampled solutions of every record, labelled. Problem p's path j has row seed
    p * SEED_STRIDE + j (as self-consistency samples them), so the same cfg.seed gives the same set;
    the n copies of a prompt share one prompt forward and its keys (generate does)."""
    if n < 1:
        raise ValueError(f"sample_labelled: n must be >= 1, got {n}")
    per_call = max(1, rows_per_call // n)
    bar = Progress(len(records), "problems", progress)
    out = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(records), per_call):
            chunk = records[start:start + per_call]
            prompts, seeds = path_rows(chunk, start, n, tok, fmt)
            result = generate(model, prompts, cfg, row_seeds=seeds)
            for row, completion in enumerate(result.tokens):
                p = start + row // n
                out.append(label_completion(p, records[p], completion, tok, fmt))
            bar.update(start + len(chunk))
    finally:
        model.train(was_training)
        bar.close()
    return out


def save_labels(path, solutions, meta: dict) -> None:
    """Write the label set atomically: a header line, then one solution per line."""
    header = {"format": LABELS_FORMAT, "version": LABELS_VERSION, "meta": meta, "saved": time.strftime("%Y-%m-%d")}
    write_text(path, "\n".join([json.dumps(header)] + [json.dumps(asdict(s)) for s in solutions]) + "\n")


def _check_mc(row) -> None:
    """mc_k a count >= 0; with mc_k > 0 one value in [0, 1] per step end, with mc_k 0 none."""
    k, values = row["mc_k"], row["mc_values"]
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise ValueError(f"mc_k {k!r} is not an integer >= 0")
    if not isinstance(values, list):
        raise ValueError(f"mc_values is a {type(values).__name__}, not a list")
    if k == 0 and values:
        raise ValueError(f"mc_k 0 (no continuations sampled) but {len(values)} mc_values")
    if k > 0 and len(values) != len(row["step_ends"]):
        raise ValueError(f"{len(row['step_ends'])} step ends but {len(values)} mc_values")
    for v in values:
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0.0 <= v <= 1.0:
            raise ValueError(f"mc_values holds {v!r}, not a fraction in [0, 1]")


def load_labels(path) -> tuple[dict, list]:
    """(meta, solutions) of a label file; a clear error naming the file and line when it is not one.
    A version-1 file loads with mc_values [] and mc_k 0 on every solution."""
    with open(path) as f:
        lines = f.read().splitlines()
    try:
        header = json.loads(lines[0]) if lines else None
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != LABELS_FORMAT:
        raise ValueError(f"{path}: line 1 is not a {LABELS_FORMAT} header")
    version = header.get("version")
    if isinstance(version, bool) or version not in READ_VERSIONS:
        raise ValueError(f"{path}: label file version {version!r}, this code reads version "
                         f"{' or '.join(map(str, READ_VERSIONS))}; sample the labels again")
    names = [f.name for f in LabelledSolution.__dataclass_fields__.values()]
    if version == 1:
        names = [n for n in names if n not in V1_ABSENT]
    solutions = []
    for i, line in enumerate(lines[1:], start=2):
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or sorted(row) != sorted(names):
                raise ValueError(f"fields {sorted(row) if isinstance(row, dict) else type(row).__name__}, "
                                 f"expected {sorted(names)} (version {version})")
            if len(row["step_ends"]) != len(row["step_labels"]):
                raise ValueError(f"{len(row['step_ends'])} step ends but {len(row['step_labels'])} step labels")
            if version > 1:
                _check_mc(row)
        except ValueError as e:
            raise ValueError(f"{path}: line {i}: {e}") from None
        solutions.append(LabelledSolution(**row))
    return header["meta"], solutions


def mc_seed(solution: int, step: int, j: int) -> int:
    """Row seed of continuation j after step `step` of solution `solution` (see MC_SEED_OFFSET)."""
    if not (0 <= step < MC_STRIDE and 0 <= j < MC_STRIDE and solution >= 0):
        raise ValueError(f"mc_seed: solution {solution}, step {step}, continuation {j}: each must be >= 0 "
                         f"and step, continuation below {MC_STRIDE}")
    return MC_SEED_OFFSET + (solution * MC_STRIDE + step) * MC_STRIDE + j


def mc_step_labels(model, tok, records, solutions, k: int, cfg: SamplingConfig, fmt: str = "cot",
                   rows_per_call: int = 64, progress: bool = True) -> list:
    """Copies of `solutions` with mc_values (per step end: the fraction of k continuations of
    prompt + completion up to and including that <|step|> token whose answer is correct) and
    mc_k = k; a solution without steps gets []. A continuation is graded as one completion with
    the prefix it continues (parse_completion, then is_correct against the record's answer).

    Row seeds: mc_seed(i, s, j) for solution i of the list, step s, continuation j, so the values
    depend on cfg.seed and the list, never on rows_per_call. The k copies of a prefix sit side by
    side in one generate call and share its prompt forward.

    Context: cfg.max_new_tokens counts new tokens only. A prefix with fewer than max_new_tokens
    positions left in model.cfg.context_length gets exactly the positions left (0 when it fills the
    context: the continuation is empty and, with no answer, wrong), like the sampling that wrote it.
    generate would otherwise give a whole batch the room of its longest prompt, so such prefixes run
    in batches of their own length; a prefix longer than the context is an error."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MC_STRIDE:
        raise ValueError(f"mc_step_labels: k must be an integer in [1, {MC_STRIDE}], got {k!r}")
    if rows_per_call < 1:
        raise ValueError(f"mc_step_labels: rows_per_call must be >= 1, got {rows_per_call}")
    ctx = model.cfg.context_length
    groups = {}                          # new-token budget -> [(solution, step, prefix)]
    for i, sol in enumerate(solutions):
        if not 0 <= sol.problem < len(records) or records[sol.problem].question != sol.question:
            raise ValueError(f"mc_step_labels: solution {i} is of problem {sol.problem} ({sol.question[:40]!r}), "
                             f"which is not that entry of the {len(records)} records given")
        prompt = prompt_ids(records[sol.problem], tok, fmt)
        for s, e in enumerate(sol.step_ends):
            if not 0 <= e < len(sol.completion) or sol.completion[e] != tok.step_id:
                raise ValueError(f"mc_step_labels: solution {i}'s step end {e} is not a <|step|> token "
                                 "of its completion")
            prefix = prompt + [int(t) for t in sol.completion[:e + 1]]
            if len(prefix) > ctx:
                raise ValueError(f"mc_step_labels: solution {i}'s prefix up to step {s} has {len(prefix)} tokens, "
                                 f"more than the model's context length {ctx}")
            groups.setdefault(min(cfg.max_new_tokens, ctx - len(prefix)), []).append((i, s, prefix))
    n_prefixes = sum(len(g) for g in groups.values())
    right = {}                           # (solution, step) -> continuations with a correct answer
    per_call = max(1, rows_per_call // k)
    bar = Progress(n_prefixes, "prefixes", progress)
    done = 0
    was_training = model.training
    model.eval()
    try:
        for budget, jobs in groups.items():
            run_cfg = cfg if budget == cfg.max_new_tokens else replace(cfg, max_new_tokens=budget)
            for start in range(0, len(jobs), per_call):
                chunk = jobs[start:start + per_call]
                prompts, seeds = [], []
                for i, s, prefix in chunk:
                    prompts += [prefix] * k
                    seeds += [mc_seed(i, s, j) for j in range(k)]
                rows = generate(model, prompts, run_cfg, row_seeds=seeds).tokens if budget > 0 else [[]] * len(prompts)
                for c, (i, s, prefix) in enumerate(chunk):
                    sol, answer_of = solutions[i], records[solutions[i].problem].answer
                    head = [int(t) for t in sol.completion[:sol.step_ends[s] + 1]]
                    right[i, s] = sum(bool(is_correct(parse_completion(head + cont, tok, fmt), answer_of))
                                      for cont in rows[c * k:(c + 1) * k])
                done += len(chunk)
                bar.update(done)
    finally:
        model.train(was_training)
        bar.close()
    return [replace(sol, mc_values=[right[i, s] / k for s in range(len(sol.step_ends))], mc_k=k)
            for i, sol in enumerate(solutions)]


def mc_hard_labels(values) -> list:
    """Math-Shepherd's hard estimation: a step is good when any continuation reached the right answer."""
    return [v > 0 for v in values]


def _agreement(pairs) -> dict:
    """Counts of (exact, mc) label pairs; confusion[e][m] counts exact label e against MC label m
    (0 wrong, 1 right). Cohen's kappa is nan where it is undefined (no steps, or both labellers
    constant and equal, so chance agreement is 1)."""
    confusion = [[0, 0], [0, 0]]
    for e, m in pairs:
        confusion[int(e)][int(m)] += 1
    n = sum(map(sum, confusion))
    agree = confusion[0][0] + confusion[1][1]
    if n == 0:
        return {"n": 0, "agree": 0, "confusion": confusion, "agreement": math.nan, "kappa": math.nan}
    exact_right, mc_right = (confusion[1][0] + confusion[1][1]) / n, (confusion[0][1] + confusion[1][1]) / n
    chance = exact_right * mc_right + (1 - exact_right) * (1 - mc_right)
    po = agree / n
    kappa = math.nan if chance >= 1.0 else (po - chance) / (1 - chance)
    return {"n": n, "agree": agree, "confusion": confusion, "agreement": po, "kappa": kappa}


def label_agreement(solutions, threshold: float = 0.5) -> dict:
    """How well Monte-Carlo labels agree with the exact step labels, over every step of the solutions
    that have both (mc_k > 0): {"n_solutions", "hard": counts for value > 0 (mc_hard_labels),
    "soft": counts for value >= threshold, "threshold"}; counts as in _agreement (n, agree,
    confusion[exact][mc], agreement, kappa). The exact labels are the reference a cheaper
    labeller is judged by where the task has a checker."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"label_agreement: threshold must be in (0, 1], got {threshold}")
    hard, soft, used = [], [], 0
    for i, sol in enumerate(solutions):
        if sol.mc_k <= 0:
            continue
        if len(sol.mc_values) != len(sol.step_labels):
            raise ValueError(f"label_agreement: solution {i} has {len(sol.step_labels)} step labels but "
                             f"{len(sol.mc_values)} mc_values")
        used += 1
        hard += zip(sol.step_labels, mc_hard_labels(sol.mc_values))
        soft += zip(sol.step_labels, [v >= threshold for v in sol.mc_values])
    return {"n_solutions": used, "threshold": threshold, "hard": _agreement(hard), "soft": _agreement(soft)}
