"""Real model families: Hugging Face config.json -> TransformerConfig and weight names (hf.py)."""
from .hf import MODEL_TYPES, config_from_hf, hf_name, load_hf_weights, our_name  # noqa: F401
