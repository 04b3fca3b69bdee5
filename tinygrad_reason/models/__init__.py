"""Real pretrained models: Hugging Face configs and folders (hf.py, hf_folder.py), GGUF files (gguf.py),
their tokenizers (pretrained_tokenizer.py) and chat templates (chat.py), one loader (pretrained.py)."""
from .hf import MODEL_TYPES, config_from_hf, hf_name, load_hf_weights, model_from_hf, our_name  # noqa: F401
