"""Example and Layout: one training prompt, and the two sequences (teacher, student) built from it.

An example is a block-attention prompt plus the tokens that follow it:

    blocks: [b_1] [b_2] ... [b_n]     context blocks (the prompt's opening block included)
    final:  [q]                        the final block's prompt (question, assistant header)
    target: [t_1 ... t_m]              what follows: supervised

The teacher reads b_1 ... b_n q t under full causal attention. The student reads the same
tokens under the block mask, each block after its sink token when sinks are on:

    [s b_1] [s b_2] ... [s b_n] [q t]

so the student's forward is exactly the engine's cached path on that prompt (tests check it).
Block dropout makes some blocks global: their tokens attend to everything before them, as the
final block's do, and their next-token predictions are supervised too.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import torch

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


def build_layout(example: Example, sink_token_id: int | None, global_blocks: Collection[int] = ()) -> Layout:
    """The teacher and student sequences of `example`; global_blocks: indices of blocks made global."""
    teacher: list[int] = []
    student: list[int] = []
    segment: list[int] = []  # student position -> segment number (block i -> i, final -> n)
    is_global: list[bool] = []  # per segment
    student_index: list[int] = []
    teacher_index: list[int] = []
    answer: list[bool] = []
    for i, block in enumerate(example.blocks):
        if sink_token_id is not None:
            student.append(sink_token_id)
            segment.append(i)
        start_t, start_s = len(teacher), len(student)
        teacher.extend(block)
        student.extend(block)
        segment.extend([i] * len(block))
        is_global.append(i in global_blocks)
        if i in global_blocks:  # supervised inside the block: token j predicts token j + 1
            for j in range(len(block) - 1):
                student_index.append(start_s + j)
                teacher_index.append(start_t + j)
                answer.append(False)
    final = example.final + example.target
    start_t, start_s = len(teacher), len(student)
    teacher.extend(final)
    student.extend(final)
    segment.extend([len(example.blocks)] * len(final))
    is_global.append(True)
    for j in range(len(example.final) - 1, len(final) - 1):  # the predictions of t_1 .. t_m
        student_index.append(start_s + j)
        teacher_index.append(start_t + j)
        answer.append(True)

    seg = torch.tensor(segment)
    n = seg.numel()
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    global_query = torch.tensor(is_global)[seg][:, None]  # [Ns, 1]
    mask = causal & ((seg[:, None] == seg[None, :]) | global_query)
    labels = torch.tensor(teacher)[torch.tensor(teacher_index) + 1]
    return Layout(
        teacher_ids=torch.tensor(teacher),
        student_ids=torch.tensor(student),
        student_positions=torch.arange(n),
        student_mask=mask,
        student_index=torch.tensor(student_index),
        teacher_index=torch.tensor(teacher_index),
        labels=labels,
        answer=torch.tensor(answer),
    )


def pick_global_blocks(num_blocks: int, probability: float, generator: torch.Generator) -> set[int]:
    """Block dropout: each block independently global with `probability`. The prompt's first
    block (usually the opening of the chat template) is included: it is a block like any other."""
    if probability <= 0:
        return set()
    draws = torch.rand(num_blocks, generator=generator)
    return {i for i in range(num_blocks) if draws[i] < probability}
