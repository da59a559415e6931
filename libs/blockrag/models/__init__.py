"""Model loading: any Hugging Face causal LM with rotary positions, and the bundled default."""

from blockrag.models.fingerprint import model_fingerprint
from blockrag.models.loader import DEFAULT_MODEL, load_model, load_tokenizer

__all__ = ["DEFAULT_MODEL", "load_model", "load_tokenizer", "model_fingerprint"]
