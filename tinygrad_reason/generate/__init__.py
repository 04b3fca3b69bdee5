"""Text generation: logits processing and sampling (sampling.py), the batched KV-cache decode loop
(decode.py), and the calculator tool that forces tokens into it (tools.py)."""
from .decode import COMPACT_AT, GenerationResult, generate, generate_stream, inference, row_generators  # noqa: F401
from .sampling import (Sample, SamplingConfig, apply_repetition_penalty, apply_temperature, log_softmax,  # noqa: F401
                       ngram_bans, process_logits, sample_from_logits, top_k_filter, top_p_filter)
from .tools import CalculatorTool  # noqa: F401
