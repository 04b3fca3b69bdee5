"""Data: the Record type, synthetic reasoning tasks, GSM8K/MATH loaders, splits, safe_eval.

Nothing here knows where data files live: loaders take paths.
"""

from .records import Record, normalize_question, derive_seed, records_to_jsonl, records_digest
from ..grading.safe_eval import (Limits, DEFAULT_LIMITS, safe_eval, parse, evaluate, format_number,
                        find_annotations, check_annotations, Annotation)
from .arithmetic import generate_arithmetic
from .multiplication import generate_multiplication, multiplication_steps
from .countdown import generate_countdown, check_countdown, countdown_question
from .loaders import (LoadResult, load_gsm8k, load_math, parse_gsm8k_answer, last_boxed,
                      split_math_solution)
from .splits import TASKS, make_splits, ood_knobs, dedup_keys, split_records, generate

__all__ = [
    "Record", "normalize_question", "derive_seed", "records_to_jsonl", "records_digest",
    "Limits", "DEFAULT_LIMITS", "safe_eval", "parse", "evaluate", "format_number",
    "find_annotations", "check_annotations", "Annotation",
    "generate_arithmetic", "generate_multiplication", "multiplication_steps",
    "generate_countdown", "check_countdown", "countdown_question",
    "LoadResult", "load_gsm8k", "load_math", "parse_gsm8k_answer", "last_boxed",
    "split_math_solution",
    "TASKS", "make_splits", "ood_knobs", "dedup_keys", "split_records", "generate",
]
