"""Training steps of the default model's shape on a GPU: one example per forward against one
right-padded batch per step (DistillConfig.micro_batch), for distillation and block fine-tuning.

SmolLM2-135M's shape (30 layers, hidden 576, 9 query / 3 KV heads, vocabulary 49,152) with
random fp32 weights, LoRA r16 on every linear layer; examples shaped like the CLI's (2-6
blocks of 24-160 tokens, a final block and a 48-64 token target: ~700 tokens each), or the
examples of a file written by `blockrag model distill --examples-file`. A model this small is
bound by kernel launches on a GPU, so how many examples share a forward sets the step time.
Median of --runs steps after --warmup.

    python3 bench/gpu/distill_batch.py [--examples-per-step 8] [--examples-file F] [--tf32] [--out DIR]
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
from blockrag.distill.config import DistillConfig
from blockrag.distill.example import Example
from blockrag.distill.recipe import DistillationRecipe
from blockrag.distill.training import read_examples, step_batch


def smollm2_135m() -> LlamaConfig:
    return LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                       num_attention_heads=9, num_key_value_heads=3, head_dim=64, max_position_embeddings=8192,
                       rope_parameters={"rope_type": "default", "rope_theta": 100000.0}, rms_norm_eps=1e-5,
                       tie_word_embeddings=True, attn_implementation="block_sdpa")


def synthetic_examples(n: int, seed: int = 0) -> list[Example]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        sizes = torch.randint(24, 161, (int(torch.randint(2, 7, (1,), generator=g)),), generator=g).tolist()
        blocks = [torch.randint(3, 49000, (s,), generator=g).tolist() for s in sizes]
        final = torch.randint(3, 49000, (20,), generator=g).tolist()
        target = torch.randint(3, 49000, (int(torch.randint(48, 65, (1,), generator=g)),), generator=g).tolist()
        out.append(Example.of(blocks, final, target))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--examples-per-step", type=int, default=8)
    parser.add_argument("--examples-file", type=Path)
    parser.add_argument("--tf32", action="store_true", help="TF32 matmuls (the CLI's setting on CUDA)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    examples = read_examples(args.examples_file) if args.examples_file else synthetic_examples(256)
    per_step = args.examples_per_step
    rows = {}
    for objective in ("kl", "ce"):
        for micro_batch in (1, per_step):
            torch.manual_seed(0)
            with torch.device(args.device):
                model = AutoModelForCausalLM.from_config(smollm2_135m(), dtype=torch.float32)
            if objective == "kl":
                config = DistillConfig(sink_token="<|endoftext|>", examples_per_step=per_step, micro_batch=micro_batch)
            else:
                config = DistillConfig.block_fine_tuning(examples_per_step=per_step, micro_batch=micro_batch)
            recipe = DistillationRecipe(config, model, 0 if config.sink_token else None)
            recipe.setup()
            seconds, tokens = [], []
            for step in range(args.warmup + args.runs):
                metrics = recipe.train_step(step_batch(examples, step, per_step, 0))  # ends with .item() syncs
                if step >= args.warmup:
                    seconds.append(metrics.seconds)
                    tokens.append(metrics.tokens)
            name = f"{'distillation' if objective == 'kl' else 'block fine-tuning'}, micro_batch {micro_batch}"
            rows[name] = {"step_s": statistics.median(seconds), "tokens_per_s": sum(tokens) / sum(seconds),
                          "runs": seconds}
            print(f"{name}: {rows[name]['step_s']:.3f} s per step of {per_step} examples, "
                  f"{rows[name]['tokens_per_s']:.0f} tok/s", flush=True)
            del recipe, model
            torch.cuda.empty_cache() if args.device == "cuda" else None
    result = {"model": "SmolLM2-135M shape, fp32, LoRA r16 on all linear layers", "tf32": args.tf32,
              "examples_per_step": per_step, "examples": "file" if args.examples_file else "synthetic",
              "rows": rows, "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
              "at": time.strftime("%Y-%m-%d %H:%M")}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"distill_batch{'-tf32' if args.tf32 else ''}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
