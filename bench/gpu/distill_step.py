"""A block-distillation step on a GPU: Llama-3.1-8B shape (random bf16 weights), LoRA on every
linear layer, 8K tokens in 512-token blocks, against the same model's full-attention forward
and backward over the same tokens.

The distillation step is DistillationRecipe.train_step exactly: the teacher's full-attention
forward (adapter off, no grad), the teacher under the block mask for token weights, the
student's forward under the block mask (with sinks and dropout), the chunked KL and the
backward. The baseline is one forward + backward of the student under plain causal attention
(SDPA's fused causal kernels) with a chunked cross-entropy on the same supervised positions.
Median of --runs after --warmup.

    python3 bench/gpu/distill_step.py [--runs 5] [--layers 32] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

import blockrag.attention.sdpa  # noqa: F401  (registers block_sdpa)
from blockrag.distill.config import DistillConfig, LoraSettings
from blockrag.distill.example import Example
from blockrag.distill.loss import backward_ce
from blockrag.distill.recipe import DistillationRecipe
from blockrag.distill.student import decoder_hidden


def llama31_8b(layers: int) -> LlamaConfig:
    return LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=layers,
                       num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072,
                       rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                        "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                        "original_max_position_embeddings": 8192},
                       attn_implementation="block_sdpa", tie_word_embeddings=False)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, runs: int, warmup: int) -> list[float]:
    out = []
    for i in range(warmup + runs):
        _sync()
        start = time.perf_counter()
        fn()
        _sync()
        if i >= warmup:
            out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--block", type=int, default=512)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--device", default="cuda", help="cpu: a smoke run of the script with --layers 1 --tokens 1024")
    args = parser.parse_args()
    torch.manual_seed(0)
    with torch.device(args.device):
        model = AutoModelForCausalLM.from_config(llama31_8b(args.layers), dtype=torch.bfloat16)
    g = torch.Generator().manual_seed(0)
    n_blocks = args.tokens // args.block - 1  # context blocks; the last 512 tokens: final block + target
    blocks = [torch.randint(1000, 128000, (args.block,), generator=g).tolist() for _ in range(n_blocks)]
    final = torch.randint(1000, 128000, (args.block,), generator=g).tolist()
    example = Example.of(blocks, final[:64], final[64:])
    config = DistillConfig(sink_token="<|sink|>", lora=LoraSettings(rank=16), kl_chunk_tokens=1024,
                           max_example_tokens=args.tokens + 1)
    recipe = DistillationRecipe(config, model, sink_token_id=128000)
    recipe.setup()
    distill = timed(lambda: recipe.train_step([example]), args.runs, args.warmup)
    layout = recipe._layout(example)
    ids, index, labels = (t.to(args.device) for t in (layout.teacher_ids, layout.teacher_index, layout.labels))

    def full_step():
        recipe.optimizer.zero_grad(set_to_none=True)
        hidden = decoder_hidden(recipe.student, ids)[index]
        backward_ce(recipe.head, hidden, labels, config.kl_chunk_tokens, 1.0 / index.numel())

    full = timed(full_step, args.runs, args.warmup)
    # block fine-tuning, the predecessor's step (block mask and full mask, cross-entropy), on the
    # same adapters: the baseline distillation should not be slower than
    bft_config = DistillConfig.block_fine_tuning(lora=config.lora, kl_chunk_tokens=config.kl_chunk_tokens,
                                                 max_example_tokens=config.max_example_tokens)
    bft_recipe = DistillationRecipe(bft_config, recipe.student.get_base_model(), sink_token_id=None)
    bft_recipe.student, bft_recipe.head = recipe.student, recipe.head
    bft_recipe.optimizer, bft_recipe.schedule = recipe.optimizer, recipe.schedule
    bft_recipe.generator, bft_recipe.device = recipe.generator, recipe.device
    bft = timed(lambda: bft_recipe.train_step([example]), args.runs, args.warmup)
    tokens = int(layout.student_ids.numel())
    result = {
        "model": f"Llama-3.1-8B shape, {args.layers} layers, bf16, LoRA r16 on all linear layers",
        "tokens": tokens, "blocks": n_blocks, "block_tokens": args.block,
        "distill_step_s": statistics.median(distill), "full_fwd_bwd_s": statistics.median(full),
        "distill_tokens_per_s": tokens / statistics.median(distill),
        "full_tokens_per_s": int(layout.teacher_ids.numel()) / statistics.median(full),
        "ratio_step_time": statistics.median(distill) / statistics.median(full),
        "block_fine_tuning_step_s": statistics.median(bft),
        "distill_vs_block_fine_tuning": statistics.median(distill) / statistics.median(bft),
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9 if args.device == "cuda" else None,
        "runs": {"distill": distill, "full": full, "block_fine_tuning": bft},
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
    }
    print(json.dumps(result, indent=1))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "distill_step.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
