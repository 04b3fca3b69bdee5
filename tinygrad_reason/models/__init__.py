"""Real model families: Hugging Face config.json -> TransformerConfig and weight names (hf.py)."""
