"""DistillConfig: every switch of a block-distillation run, validated once.

Defaults are the recipe of the shipped default adapter (default_adapter/TRAINING.md): what a
`blockrag model distill` or an admin-started run uses unless told otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from blockrag.errors import InvalidRequestError

Objective = Literal["kl", "ce"]


@dataclass(frozen=True)
class LoraSettings:
    """The trainable part of the student: low-rank adapters on these linear layers."""

    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

    def __post_init__(self) -> None:
        _check_types(self, ints=("rank",), floats=("alpha", "dropout"), what="lora ")
        if not isinstance(self.target_modules, tuple) or not all(isinstance(m, str) for m in self.target_modules):
            raise InvalidRequestError("distillation config: lora target_modules must be a list of module names")
        if self.rank < 1 or self.alpha <= 0 or not 0 <= self.dropout < 1 or not self.target_modules:
            raise InvalidRequestError(
                f"lora: rank must be >= 1, alpha > 0, dropout in [0, 1) and target_modules non-empty; "
                f"got rank={self.rank}, alpha={self.alpha}, dropout={self.dropout}, "
                f"target_modules={self.target_modules}")


@dataclass(frozen=True)
class DistillConfig:
    """objective: "kl" is block distillation (per-token KL(teacher under full attention ||
    student under block attention)); "ce" is block fine-tuning, the predecessor's method
    (cross-entropy on the target tokens under the block mask and again under the full mask),
    kept as the baseline the fidelity benchmark compares against.
    sink_token: the block sink token's text in the tokenizer (None: no sinks).
    opening: blocks share the prompt's opening instead of sinks: every block is encoded after
    the chat template's opening block (system message, start of the user turn), opening_gap
    positions apart (attention/layout.py); needs sink_token None.
    lead_block: the first passage is read as the platform serves it by default
    (PlatformConfig.exact_first_passage, the engine's lead form): global, right after the opening,
    so training spends itself on the blocks that stay approximate. Without an opening there is no
    lead form (the engine's encode_lead is encode_block there) and it changes nothing.
    block_dropout: the chance that a context block is made global for a step (it attends to
    everything before it and its tokens are supervised too).
    token_weighting: 0 weighs supervised tokens alike; w in (0, 1] mixes in weights from how far
    the teacher's own distribution moves between full and block attention at each token.
    hard_label_weight: under "kl", adds this times the cross-entropy of the target tokens (a
    question's target is the teacher's own greedy answer, so this pulls the student's argmax
    onto the teacher's: sequence-level distillation beside the token-level KL); 0 is KL alone.
    kl_chunk_tokens: positions whose [chunk, vocab] logits exist at once in the loss.
    micro_batch: examples per forward (right-padded into one batch); 0 is all of a step's
    examples at once on a GPU (a small model there is bound by kernel launches: 6.5x faster
    steps on an H200) and one at a time on a CPU (there 8 real examples in one batch ran out of
    24 GB: the CPU attention kernel keeps [B, heads, N, N] weights for the backward). The
    gradient is the same either way.
    """

    objective: Objective = "kl"
    sink_token: str | None = None
    opening: bool = True  # the shipped adapter's: more right answers and a lower KL than sinks
    # attention.layout.DEFAULT_GAP, not imported: the admin replica reads this config without torch
    opening_gap: int = 500
    lead_block: bool = True  # the shipped adapter's (TRAINING.md): as the platform serves by default
    block_dropout: float = 0.25
    token_weighting: float = 0.5
    hard_label_weight: float = 0.0
    kl_chunk_tokens: int = 128
    lora: LoraSettings = field(default_factory=LoraSettings)
    learning_rate: float = 1e-3
    warmup_steps: int = 10
    steps: int = 200
    examples_per_step: int = 16
    micro_batch: int = 0
    max_example_tokens: int = 1536
    eval_examples: int = 32
    checkpoint_every: int = 25
    seed: int = 0

    def __post_init__(self) -> None:
        _check_types(self, ints=("opening_gap", "kl_chunk_tokens", "warmup_steps", "steps", "examples_per_step",
                                 "micro_batch", "max_example_tokens", "eval_examples", "checkpoint_every", "seed"),
                     floats=("block_dropout", "token_weighting", "hard_label_weight", "learning_rate"), what="")
        if not isinstance(self.opening, bool) or not isinstance(self.lead_block, bool) \
                or not (self.sink_token is None or isinstance(self.sink_token, str)):
            raise InvalidRequestError("distillation config: opening and lead_block must be true or false, "
                                      "sink_token a string or null")
        if not isinstance(self.lora, LoraSettings):
            raise InvalidRequestError("distillation config: lora must be an object of LoRA settings")
        problems = []
        if self.objective not in ("kl", "ce"):
            problems.append(f"objective must be 'kl' or 'ce', got {self.objective!r}")
        if not 0 <= self.block_dropout <= 1:
            problems.append(f"block_dropout must lie in [0, 1], got {self.block_dropout}")
        if not 0 <= self.token_weighting <= 1:
            problems.append(f"token_weighting must lie in [0, 1], got {self.token_weighting}")
        for name in ("kl_chunk_tokens", "steps", "examples_per_step", "max_example_tokens", "checkpoint_every"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.opening_gap < 0:
            problems.append(f"opening_gap must be >= 0, got {self.opening_gap}")
        if self.opening and self.sink_token is not None:
            problems.append("opening replaces block sink tokens: with opening=true set sink_token=null")
        if self.hard_label_weight < 0:
            problems.append(f"hard_label_weight must be >= 0, got {self.hard_label_weight}")
        if self.micro_batch < 0:
            problems.append(f"micro_batch must be >= 0 (0: automatic), got {self.micro_batch}")
        if self.learning_rate <= 0 or self.warmup_steps < 0 or self.eval_examples < 0:
            problems.append("learning_rate must be > 0, warmup_steps and eval_examples >= 0")
        if self.objective == "ce" and (self.token_weighting or self.block_dropout or self.hard_label_weight):
            problems.append("block fine-tuning (objective 'ce') takes no token_weighting, block_dropout or "
                            "hard_label_weight: set them to 0")
        if problems:
            raise InvalidRequestError("distillation config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """Plain types (JSON, Ray, the registry)."""
        out = asdict(self)
        out["lora"]["target_modules"] = list(self.lora.target_modules)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DistillConfig:
        """The inverse of to_dict, and the way to build a config from overrides: missing keys
        (also inside "lora") take the defaults. Unknown keys and values of the wrong type are
        refused with InvalidRequestError (a typo must not pass silently)."""
        _check_keys(data, cls, "")
        data = dict(data)
        if "lora" in data and not isinstance(data["lora"], Mapping):
            raise InvalidRequestError("distillation config: lora must be an object of LoRA settings")
        if isinstance(data.get("lora"), Mapping):
            lora = dict(data["lora"])
            _check_keys(lora, LoraSettings, "lora ")
            if "target_modules" in lora:
                if isinstance(lora["target_modules"], str | bytes) or not isinstance(lora["target_modules"], list | tuple):
                    raise InvalidRequestError("distillation config: lora target_modules must be a list of module names")
                lora["target_modules"] = tuple(lora["target_modules"])
            data["lora"] = lora
        try:
            if "lora" in data:
                data["lora"] = LoraSettings(**data["lora"])
            return cls(**data)
        except TypeError as e:  # a value of the wrong type (a string for a number...)
            raise InvalidRequestError(f"distillation config: {e}") from e

    @classmethod
    def block_fine_tuning(cls, **overrides: Any) -> DistillConfig:
        """The predecessor's recipe on the same switches: CE, no sinks, no dropout, no weighting."""
        base = dict(objective="ce", sink_token=None, opening=False, block_dropout=0.0, token_weighting=0.0)
        return cls(**{**base, **overrides})


def _check_types(config: Any, ints: tuple[str, ...], floats: tuple[str, ...], what: str) -> None:
    """Whole numbers where counts go, finite numbers where rates go: JSON gives 1.5, 1e400 (inf),
    NaN, true or "3" as easily as 3, and each would pass a range check or fail it obscurely."""
    wrong = [f"{what}{name} must be a whole number, got {getattr(config, name)!r}" for name in ints
             if isinstance(getattr(config, name), bool) or not isinstance(getattr(config, name), int)]
    wrong += [f"{what}{name} must be a finite number, got {getattr(config, name)!r}" for name in floats
              if isinstance(getattr(config, name), bool) or not isinstance(getattr(config, name), int | float)
              or not math.isfinite(getattr(config, name))]
    if wrong:
        raise InvalidRequestError("distillation config: " + "; ".join(wrong))


def _check_keys(data: Mapping[str, Any], kind: type, what: str) -> None:
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InvalidRequestError(f"distillation config: unknown {what}keys {unknown}; known: {sorted(known)}")


def parse_overrides(pairs: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """["steps=50", "sink_token=null", "lora={\\"rank\\": 8}"] -> a dict for DistillConfig.from_dict:
    each value is read as JSON when it parses, else kept as a string."""
    import json

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidRequestError(f"a setting is KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out
