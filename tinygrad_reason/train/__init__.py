"""Training: one loop (loop.py) with the tasks that run on it (sft.py), held-out evaluation
(evaluation.py), the statistics of every results table (stats.py), metrics and curves (metrics.py)
and a progress line (progress.py)."""
from .evaluation import evaluate, greedy_answers  # noqa: F401
from .loop import LoopConfig, NonFiniteError, run  # noqa: F401
from .sft import SFTTask, TrainConfig, train  # noqa: F401
from .stats import auroc, grouped_auroc, mcnemar_p, reliability, two_proportion_p, wilson_interval  # noqa: F401
from .verifier import VerifierConfig, VerifierExample, VerifierTask, make_example, train_verifier  # noqa: F401
