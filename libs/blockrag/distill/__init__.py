"""Block distillation: a block-attention student (base + LoRA) learns from the same model under full attention."""
