"""Labelled samples for verifiers: N sampled solutions per problem, each with its outcome label
(grading.rewards.is_correct) and exact step labels (grading.steps.step_labels), saved as JSON lines
so a verifier can be retrained without sampling again.

A label file's first line is a header {"format", "version", "meta"} (meta holds the sampling seed,
temperature, N, ...); every later line is one LabelledSolution. Loading checks the format and
version and names the file and line of anything malformed.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

from ..data.formats import parse_completion, prompt_ids
from ..data.multiplication import given_numbers
from ..generate import SamplingConfig, generate
from ..grading.rewards import is_correct
from ..grading.steps import step_labels
from ..io.atomic import write_text
from ..train.progress import Progress
from .self_consistency import SEED_STRIDE

LABELS_FORMAT = "tinygrad_reason.verifier_labels"
LABELS_VERSION = 1


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
            prompts, seeds = [], []
            for k, r in enumerate(chunk):
                prompts += [prompt_ids(r, tok, fmt)] * n
                seeds += [(start + k) * SEED_STRIDE + j for j in range(n)]
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


def load_labels(path) -> tuple[dict, list]:
    """(meta, solutions) of a label file; a clear error naming the file and line when it is not one."""
    with open(path) as f:
        lines = f.read().splitlines()
    try:
        header = json.loads(lines[0]) if lines else None
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != LABELS_FORMAT:
        raise ValueError(f"{path}: line 1 is not a {LABELS_FORMAT} header")
    if header.get("version") != LABELS_VERSION:
        raise ValueError(f"{path}: label file version {header.get('version')!r}, this code reads version "
                         f"{LABELS_VERSION}; sample the labels again")
    names = [f.name for f in LabelledSolution.__dataclass_fields__.values()]
    solutions = []
    for i, line in enumerate(lines[1:], start=2):
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or sorted(row) != sorted(names):
                raise ValueError(f"fields {sorted(row) if isinstance(row, dict) else type(row).__name__}, "
                                 f"expected {sorted(names)}")
            if len(row["step_ends"]) != len(row["step_labels"]):
                raise ValueError(f"{len(row['step_ends'])} step ends but {len(row['step_labels'])} step labels")
        except ValueError as e:
            raise ValueError(f"{path}: line {i}: {e}") from None
        solutions.append(LabelledSolution(**row))
    return header["meta"], solutions
