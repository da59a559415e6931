"""DistillationRecipe: setup / train_step / evaluate / save and load a checkpoint.

One recipe object owns the student (base + LoRA), its optimizer and schedule, and the random
state of block dropout; the Ray Train job (services/blockrag_services/distillation) and
`blockrag model distill` drive it the same way. A checkpoint is the adapter, the optimizer,
the schedule, the step and the random state: a run resumed from it continues exactly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from blockrag.attention.layout import Opening
from blockrag.distill.adapter import Adapter
from blockrag.distill.config import DistillConfig
from blockrag.distill.example import Example, Layout, build_layout, pick_global_blocks
from blockrag.distill.loss import backward_ce, backward_kl, sensitivity_weights, token_kl
from blockrag.distill.student import attach_lora, decoder_hidden_batch, output_head, teacher_mode, trainable_parameters
from blockrag.errors import InvalidRequestError
from blockrag.models.fingerprint import model_fingerprint


@dataclass(frozen=True)
class StepMetrics:
    """What one optimiser step did. loss: weighted mean per supervised token; kl: mean
    KL(teacher || student) per supervised token (None for block fine-tuning, which runs no
    teacher); tokens: sequence tokens through the student."""

    step: int
    loss: float
    kl: float | None
    tokens: int
    supervised: int
    seconds: float
    learning_rate: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {"step": self.step, "loss": self.loss, "kl": self.kl, "tokens": self.tokens,
                "supervised": self.supervised, "seconds": self.seconds,
                "tokens_per_s": self.tokens_per_s, "learning_rate": self.learning_rate}


def resolve_sink(tokenizer: PreTrainedTokenizerBase, sink_token: str | None) -> int | None:
    """The id of the sink token's text; InvalidRequestError if the tokenizer has no such token."""
    if sink_token is None:
        return None
    token_id = tokenizer.convert_tokens_to_ids(sink_token)
    if token_id is None or (token_id == tokenizer.unk_token_id and sink_token != tokenizer.unk_token):
        raise InvalidRequestError(f"sink token {sink_token!r} is not a single token of this tokenizer")
    return int(token_id)


def resolve_opening(tokenizer: PreTrainedTokenizerBase, config: DistillConfig) -> Opening | None:
    """The opening every served prompt starts with (the prompt template's), when the config shares it."""
    from blockrag.prompt import PromptTemplate

    return Opening(tuple(PromptTemplate(tokenizer).prefix_ids()), config.opening_gap) if config.opening else None


class DistillationRecipe:
    """Block distillation (or block fine-tuning) of `model`, changed in place into a peft model."""

    def __init__(self, config: DistillConfig, model: PreTrainedModel, sink_token_id: int | None,
                 opening: Opening | None = None):
        """sink_token_id: config.sink_token's id in the model's tokenizer (resolve_sink), None
        when the config has no sinks; opening: the template's opening (resolve_opening), given
        exactly when config.opening."""
        if (sink_token_id is None) != (config.sink_token is None):
            raise InvalidRequestError("sink_token_id must be given exactly when the config has a sink_token")
        if (opening is None) == config.opening:
            raise InvalidRequestError("opening must be given exactly when the config has opening=true")
        self.config = config
        self.model = model
        self.sink_token_id = sink_token_id
        self.opening = opening
        self.step = 0

    @classmethod
    def for_tokenizer(cls, config: DistillConfig, model: PreTrainedModel,
                      tokenizer: PreTrainedTokenizerBase) -> DistillationRecipe:
        """The recipe with the config's sink token or opening resolved in the model's tokenizer."""
        return cls(config, model, resolve_sink(tokenizer, config.sink_token), resolve_opening(tokenizer, config))

    # -- setup -------------------------------------------------------------------------------------

    def setup(self) -> None:
        """Fingerprint the base, attach fresh adapters, build the optimizer and the schedule."""
        self.base_fingerprint = model_fingerprint(self.model)
        self.device = next(self.model.parameters()).device
        self.student = attach_lora(self.model, self.config.lora, self.config.seed)
        self.student.train()
        self.head = output_head(self.student)
        self.optimizer = torch.optim.AdamW(trainable_parameters(self.student), lr=self.config.learning_rate,
                                           weight_decay=0.0)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.generator = torch.Generator().manual_seed(self.config.seed)

    def _lr_factor(self, step: int) -> float:
        """Linear warm-up, then cosine down to a tenth."""
        warmup, total = self.config.warmup_steps, self.config.steps
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    # -- train ---------------------------------------------------------------------------------------

    def train_step(self, examples: Sequence[Example]) -> StepMetrics:
        """One optimiser step over `examples`, gradients accumulated over micro-batches."""
        if not examples:
            raise InvalidRequestError("a training step needs at least one example")
        started = time.perf_counter()
        layouts = [self._layout(e) for e in examples]
        supervised = sum(layout.supervised for layout in layouts)
        scale = 1.0 / max(1, supervised)
        loss = kl = 0.0
        self.optimizer.zero_grad(set_to_none=True)
        size = self.config.micro_batch or (len(layouts) if self.device.type == "cuda" else 1)
        for start in range(0, len(layouts), size):
            batch = layouts[start : start + size]
            if self.config.objective == "kl":
                parts = self._kl_backward(batch, scale)
                loss, kl = loss + parts.loss, kl + parts.kl
            else:
                loss += self._ce_backward(batch, scale)
        self.optimizer.step()
        learning_rate = self.schedule.get_last_lr()[0]
        self.schedule.step()
        self.step += 1
        tokens = sum(int(layout.student_ids.numel()) for layout in layouts)
        return StepMetrics(self.step, loss * scale, kl * scale if self.config.objective == "kl" else None,
                           tokens, supervised, time.perf_counter() - started, learning_rate)

    def _layout(self, example: Example) -> Layout:
        if example.num_tokens > self.config.max_example_tokens:
            raise InvalidRequestError(
                f"an example of {example.num_tokens} tokens exceeds max_example_tokens "
                f"({self.config.max_example_tokens}); build shorter examples or raise the limit")
        global_blocks = pick_global_blocks(len(example.blocks), self.config.block_dropout, self.generator)
        return build_layout(example, self.sink_token_id, global_blocks, self.opening, self._lead)

    @property
    def _lead(self) -> bool:
        """The first passage in its lead form: only where there is an opening to lead from."""
        return self.config.lead_block and self.opening is not None

    def _full_hidden(self, layouts: Sequence[Layout]) -> torch.Tensor:
        """Hidden states [S, H] at the supervised positions of every layout, one after another,
        under plain causal attention (the teacher's view)."""
        d = self.device
        hidden = decoder_hidden_batch(self.student, [x.teacher_ids.to(d) for x in layouts])
        return torch.cat([h[x.teacher_index.to(d)] for h, x in zip(hidden, layouts)])

    def _block_hidden(self, layouts: Sequence[Layout]) -> torch.Tensor:
        """Hidden states [S, H] at the supervised positions under the block mask (the student's view)."""
        d = self.device
        hidden = decoder_hidden_batch(self.student, [x.student_ids.to(d) for x in layouts],
                                      [x.student_positions.to(d) for x in layouts], [x.student_mask for x in layouts])
        return torch.cat([h[x.student_index.to(d)] for h, x in zip(hidden, layouts)])

    def _kl_backward(self, layouts: Sequence[Layout], scale: float):
        with teacher_mode(self.student):
            teacher = self._full_hidden(layouts)
            weights = torch.ones(teacher.shape[0], device=self.device)
            if self.config.token_weighting > 0:  # the teacher itself under the block mask
                divergence = token_kl(self.head, teacher, self._block_hidden(layouts), self.config.kl_chunk_tokens)
                # normalised within each example: a long example's weights do not dilute a short one's
                weights = torch.cat([sensitivity_weights(part, self.config.token_weighting)
                                     for part in divergence.split([x.supervised for x in layouts])])
        labels = label_weights = None
        if self.config.hard_label_weight > 0:  # on the target tokens only, not on global blocks' text
            labels = torch.cat([x.labels for x in layouts]).to(self.device)
            label_weights = torch.cat([x.answer for x in layouts]).to(self.device).float() * self.config.hard_label_weight
        return backward_kl(self.head, self._block_hidden(layouts), teacher, weights, self.config.kl_chunk_tokens, scale,
                           labels, label_weights)

    def _ce_backward(self, layouts: Sequence[Layout], scale: float) -> float:
        """The predecessor's step: the examples under the block mask and again under the full mask."""
        labels, chunk = torch.cat([x.labels for x in layouts]).to(self.device), self.config.kl_chunk_tokens
        total = backward_ce(self.head, self._block_hidden(layouts), labels, chunk, scale / 2)
        total += backward_ce(self.head, self._full_hidden(layouts), labels, chunk, scale / 2)
        return total / 2

    # -- evaluate ------------------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, examples: Sequence[Example]) -> float:
        """Mean KL(teacher under full attention || student under block attention) per target
        token, without dropout: the fidelity of what would be served."""
        self.student.eval()
        total, count = 0.0, 0
        try:
            for example in examples:
                layout = build_layout(example, self.sink_token_id, opening=self.opening, lead=self._lead)
                with teacher_mode(self.student):
                    teacher = self._full_hidden([layout])
                kl = token_kl(self.head, teacher, self._block_hidden([layout]), self.config.kl_chunk_tokens)
                total, count = total + float(kl.sum()), count + kl.numel()
        finally:
            self.student.train()
        return total / max(1, count)

    # -- checkpoints -----------------------------------------------------------------------------------

    def adapter(self) -> Adapter:
        return Adapter.from_student(self.student, self.config.lora, self.sink_token_id, self.base_fingerprint,
                                    self.opening)

    def state_dict(self) -> dict:
        """Everything a resumed run needs (torch.save-able)."""
        return {"step": self.step, "adapter": self.adapter().to_bytes(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(), "generator": self.generator.get_state(),
                "config": self.config.to_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a checkpoint of the same config (after setup)."""
        if state["config"] != self.config.to_dict():
            raise InvalidRequestError("the checkpoint was written by a run with another config; start a new run")
        from peft import set_peft_model_state_dict

        adapter = Adapter.from_bytes(state["adapter"])
        set_peft_model_state_dict(self.student, {k: v.to(self.model.dtype) for k, v in adapter.weights.items()})
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.generator.set_state(state["generator"])
        self.step = state["step"]
