"""Model loading (safetensors, no remote code unless asked), the embedded default model, tiny test models."""
from rlcustom.models.embedded import DEFAULT_MODEL, EMBEDDED, cache_root, prepare_embedded
from rlcustom.models.loading import load_causal_lm, load_tokenizer, resolve_model_path

__all__ = ["DEFAULT_MODEL", "EMBEDDED", "cache_root", "prepare_embedded", "load_causal_lm", "load_tokenizer",
           "resolve_model_path"]
