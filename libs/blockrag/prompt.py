"""PromptTemplate: a chat template cut into cacheable blocks and a final block.

A block-attention prompt is [prefix][block 1]...[block n][final]. The prefix (system message and
the opening of the user turn) is a block like any other, cached once. The final block carries
the question and the close of the user turn plus the assistant header, so the model answers
from there. The cut points come from the tokenizer's own chat template.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

DEFAULT_SYSTEM = "You answer questions using the documents the user gives. Answer in one short sentence."
_SENTINEL = "\u2063BLOCKRAG-CUT\u2063"


class PromptTemplate:
    """Token ids of the prompt's pieces for one tokenizer."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, system: str = DEFAULT_SYSTEM):
        self.tokenizer = tokenizer
        if tokenizer.chat_template:
            messages = [{"role": "system", "content": system}, {"role": "user", "content": _SENTINEL}]
            rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            self.prefix, self.suffix = rendered.split(_SENTINEL)
        else:  # a base model: plain text framing
            self.prefix, self.suffix = f"{system}\n\n", "\nAnswer:"

    def _ids(self, text: str) -> list[int]:
        # the template's special tokens are in the text itself; add none of our own
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def prefix_ids(self) -> list[int]:
        """The opening block (system message, start of the user turn)."""
        return self._ids(self.prefix + "Documents:\n")

    def block_ids(self, text: str) -> list[int]:
        """One context block: a passage, ending in a blank line so that blocks read apart."""
        return self._ids(text.strip() + "\n\n")

    def final_ids(self, question: str) -> list[int]:
        """The final block: the question, the end of the user turn and the assistant header."""
        return self._ids(f"Question: {question.strip()}{self.suffix}")
