"""Example and Layout: one training prompt, and the two sequences (teacher, student) built from it.

An example is a block-attention prompt plus the tokens that follow it:

    blocks: [b_1] [b_2] ... [b_n]     context blocks (the prompt's opening block included)
    final:  [q]                        the final block's prompt (question, assistant header)
    target: [t_1 ... t_m]              what follows: supervised

The teacher reads b_1 ... b_n q t under full causal attention. The student reads the same
tokens under the block mask, each block after its sink token when sinks are on, or after its
own copy of the opening when blocks share one (attention/layout.py):

    [s b_1] [s b_2] ... [s b_n] [q t]      or      [b_1] [o b_2] ... [o b_n] [q t]

so the student's forward is exactly the engine's cached path on that prompt (tests check it).
With lead=True the first block after the opening is read as the platform serves the first
passage (exact_first_passage: the engine's lead form): straight after the real opening, gap 0,
seeing it, so only the later blocks are approximations.
Block dropout makes some blocks global: their tokens attend to everything before them, as the
final block's do, and their next-token predictions are supervised too.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import torch

from blockrag.attention.layout import Opening, sequence_layout
from blockrag.errors import InvalidRequestError


@dataclass(frozen=True)
class Example:
    """Token ids of one training prompt (see the module docstring)."""

    blocks: tuple[tuple[int, ...], ...]
    final: tuple[int, ...]
    target: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.blocks or any(not b for b in self.blocks):
            raise InvalidRequestError("an example needs at least one context block, none of them empty")
        if not self.final or not self.target:
            raise InvalidRequestError("an example needs a non-empty final block and target")

    @classmethod
    def of(cls, blocks: Sequence[Sequence[int]], final: Sequence[int], target: Sequence[int]) -> Example:
        return cls(tuple(tuple(int(t) for t in b) for b in blocks), tuple(map(int, final)), tuple(map(int, target)))

    @property
    def num_tokens(self) -> int:
        return sum(map(len, self.blocks)) + len(self.final) + len(self.target)


@dataclass(frozen=True)
class Layout:
    """Tensors of one example for one step (all on the CPU; the recipe moves them).

    teacher_ids [Nt]: positions 0..Nt-1, causal.
    student_ids, student_positions [Ns]; student_mask bool [Ns, Ns], True where q may attend k.
    student_index, teacher_index [S]: the positions whose next-token distributions are supervised,
    in each sequence (the same token); labels [S]: the tokens that follow them.
    answer [S] bool: which supervised positions predict target tokens (the rest: global blocks).
    """

    teacher_ids: torch.Tensor
    student_ids: torch.Tensor
    student_positions: torch.Tensor
    student_mask: torch.Tensor
    student_index: torch.Tensor
    teacher_index: torch.Tensor
    labels: torch.Tensor
    answer: torch.Tensor

    @property
    def supervised(self) -> int:
        return int(self.student_index.numel())


def build_layout(example: Example, sink_token_id: int | None, global_blocks: Collection[int] = (),
                 opening: Opening | None = None, lead: bool = False) -> Layout:
    """The teacher and student sequences of `example`; global_blocks: indices of blocks made global.

    opening: the engine's shared opening (attention/layout.py); an example whose first block is
    not the opening (a continuation of raw text) gets it as a first block, as every served prompt
    has it, and global_blocks then count that block too.
    lead: the block after the opening (index 1) in its lead form: global in the student's mask,
    but not supervised for that (only block dropout's global blocks are)."""
    if lead and opening is None:
        raise InvalidRequestError("the lead form of the first passage needs an opening")
    blocks = example.blocks
    if opening is not None and blocks[0] != opening.tokens:
        blocks = (opening.tokens, *blocks)
    final = example.final + example.target
    read_globally = set(global_blocks) | ({1} if lead and len(blocks) > 1 else set())
    student = sequence_layout(blocks, final, sink_token_id=sink_token_id, opening=opening, global_blocks=read_globally)
    teacher = [t for b in blocks for t in b] + list(final)
    teacher_index: list[int] = []
    answer: list[bool] = []
    start = 0
    for i, block in enumerate(blocks):
        if i in global_blocks:  # supervised inside the block: token j predicts token j + 1
            teacher_index.extend(range(start, start + len(block) - 1))
            answer.extend([False] * (len(block) - 1))
        start += len(block)
    # the predictions of t_1 .. t_m: from the final block's last token to the target's second-last
    teacher_index.extend(range(start + len(example.final) - 1, start + len(final) - 1))
    answer.extend([True] * len(example.target))
    index = torch.tensor(teacher_index)
    return Layout(
        teacher_ids=torch.tensor(teacher),
        student_ids=torch.tensor(student.ids),
        student_positions=torch.tensor(student.positions),
        student_mask=student.allowed,
        student_index=torch.tensor(student.index)[index],
        teacher_index=index,
        labels=torch.tensor(teacher)[index + 1],
        answer=torch.tensor(answer),
    )


def pick_global_blocks(num_blocks: int, probability: float, generator: torch.Generator) -> set[int]:
    """Block dropout: each block independently global with `probability`. The prompt's first
    block (usually the opening of the chat template) is included: it is a block like any other."""
    if probability <= 0:
        return set()
    draws = torch.rand(num_blocks, generator=generator)
    return {i for i in range(num_blocks) if draws[i] < probability}
