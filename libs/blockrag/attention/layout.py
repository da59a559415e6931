"""SequenceLayout: a block-attention prompt as one forward (token ids, position ids, mask) that
equals the engine's cached path. It is the reference the correctness gate and the tests compare
the engine against, and the student's view of an example in block distillation.

For context blocks b_0 .. b_n (b_0 the opening when there is one) and the final block f:

    plain:    [b_0] [b_1] ... [b_n] [f]          a block sees itself; f sees everything
    sinks:    [s b_0] [s b_1] ... [s b_n] [f]    a block sees its sink and itself; f everything
    opening:  [b_0] [o b_1] ... [o b_n] [f]      o: a copy of the opening b_0 ending `gap`
                                                 positions before its block, seen by it only

The engine encodes every block after the opening at the same distance wherever the block lands
(so its KV can be reused anywhere), so in one forward each block needs its own copy at its own
positions; f sees b_0 and the blocks, never the copies. Positions are the prompt's: a sink
takes one (the engine lays sinks out), a copy takes none (it lies before its block, over other
blocks' positions). A global block (block dropout) sees everything before it as f does, and has
no copy.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import torch

from blockrag.errors import InvalidBlockError, InvalidRequestError

# Positions between the opening's end and a block's start when the block is encoded. Adjacent (0)
# is where the first passage sits under full attention, but every block encoded there reads as a
# first passage: SmolLM2-135M's answer-token KL against full attention was 0.75 of plain block
# attention's with gap 0 and about 0.4 with a few hundred, as far as later passages actually lie
# (bench/gpu/DISTILLATION.md, "A shared opening").
DEFAULT_GAP = 500


@dataclass(frozen=True)
class Opening:
    """A shared opening: every prompt's first block is `tokens` (the chat template's system
    message and the start of the user turn), and every other block is encoded after it, `gap`
    positions apart."""

    tokens: tuple[int, ...]
    gap: int = DEFAULT_GAP

    def __post_init__(self) -> None:
        if not self.tokens or self.gap < 0:
            raise InvalidRequestError(f"an opening needs at least one token and a gap >= 0; got "
                                      f"{len(self.tokens)} tokens, gap {self.gap}")

    def to_dict(self) -> dict:
        return {"tokens": list(self.tokens), "gap": self.gap}

    @classmethod
    def from_dict(cls, data: dict) -> Opening:
        return cls(tuple(int(t) for t in data["tokens"]), int(data["gap"]))


@dataclass(frozen=True)
class SequenceLayout:
    """ids, positions: [N]; allowed: bool [N, N], True where query q may attend key k; index:
    for each prompt token (the blocks' tokens, then the final block's, in order), its place in
    the sequence."""

    ids: list[int]
    positions: list[int]
    allowed: torch.Tensor
    index: list[int]


def sequence_layout(blocks: Sequence[Sequence[int]], final: Sequence[int], *, sink_token_id: int | None = None,
                    opening: Opening | None = None, global_blocks: Collection[int] = ()) -> SequenceLayout:
    """The one-forward form of a prompt (module docstring). With an opening, blocks[0] must be it."""
    if opening is not None and (not blocks or tuple(blocks[0]) != opening.tokens):
        raise InvalidBlockError("with an opening, the prompt's first block must be the opening")
    ids: list[int] = []
    positions: list[int] = []
    segment: list[int] = []  # per sequence token
    sees: list[set[int]] = []  # per segment: the segments its queries may attend
    real: set[int] = set()  # segments of the prompt itself (blocks with their sinks), not copies
    index: list[int] = []
    position = 0

    def add(tokens: Sequence[int], first_position: int, seg: int, of_prompt: bool) -> None:
        for j, t in enumerate(tokens):
            if of_prompt:
                index.append(len(ids))
            ids.append(int(t))
            positions.append(first_position + j)
            segment.append(seg)

    for i, block in enumerate(blocks):
        own = len(sees)
        sees.append({own} | (set(real) if i in global_blocks else set()))
        if opening is not None and i > 0 and i not in global_blocks:
            copy = len(sees)
            sees.append({copy})
            sees[own].add(copy)
            add(opening.tokens, position - opening.gap - len(opening.tokens), copy, of_prompt=False)
        if sink_token_id is not None:
            add([sink_token_id], position, own, of_prompt=False)
            position += 1
        add(block, position, own, of_prompt=True)
        position += len(block)
        real.add(own)
    own = len(sees)
    sees.append({own} | real)
    add(final, position, own, of_prompt=True)

    seg = torch.tensor(segment)
    visible = torch.zeros(len(sees), len(sees), dtype=torch.bool)  # [segments, segments]
    for s, targets in enumerate(sees):
        visible[s, list(targets)] = True
    n = seg.numel()
    allowed = torch.ones(n, n, dtype=torch.bool).tril() & visible[seg[:, None], seg[None, :]]
    return SequenceLayout(ids, positions, allowed, index)
