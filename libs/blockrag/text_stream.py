"""TextStream: generated token ids in, printable text pieces out.

Byte-level BPE tokens are not text on their own (one character may span several tokens), so the
whole answer is decoded at each step and only the new, complete part is emitted.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase


class TextStream:
    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.tokenizer = tokenizer
        self.tokens: list[int] = []
        self.text = ""

    def push(self, token: int) -> str:
        """Add one token; the new text it completes ("" while a character is unfinished)."""
        self.tokens.append(token)
        full = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        if len(full) > len(self.text) and not full.endswith("\ufffd"):
            piece, self.text = full[len(self.text):], full
            return piece
        return ""
