"""Data: the Record type, synthetic reasoning tasks with exactly checkable answers, GSM8K/MATH
loaders, splits, and the two training formats (formats.py). Answers are graded by grading/.

Nothing here knows where data files live: loaders take paths.
"""

from .records import Record, normalize_question, derive_seed, records_to_jsonl, records_digest
from .arithmetic import generate_arithmetic
from .multiplication import generate_multiplication, multiplication_steps
from .countdown import generate_countdown, check_countdown, countdown_question
from .loaders import (LoadResult, load_gsm8k, load_math, parse_gsm8k_answer,
                      split_math_solution)
from .splits import TASKS, make_splits, ood_knobs, dedup_keys, split_records, generate

__all__ = [
    "Record", "normalize_question", "derive_seed", "records_to_jsonl", "records_digest",
    "generate_arithmetic", "generate_multiplication", "multiplication_steps",
    "generate_countdown", "check_countdown", "countdown_question",
    "LoadResult", "load_gsm8k", "load_math", "parse_gsm8k_answer",
    "split_math_solution",
    "TASKS", "make_splits", "ood_knobs", "dedup_keys", "split_records", "generate",
]
