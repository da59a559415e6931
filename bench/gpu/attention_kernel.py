"""The split-over-keys attention kernel (final_block_kernel.py) under several tile configs.

Why: the profile of a first token at 32K (H100, 8B shape, 2026-12-06) put the 64-token
question's attention at 151 us a layer (4.85 ms of the 15.1 ms of kernels), where the same
kernel reads a decode step's KV at ~2.7 TB/s (50 us a layer). With 64 stacked rows a program
and 4 query heads per KV head, each KV chunk is read by 4 row tiles. Each config below runs the
launch the graphs replay (capacity N, valid length from a device tensor), bf16, median of
--runs CUDA-event timings, and its output is checked against the default config's.

    cd bench/gpu && PYTHONPATH=../../libs python3 attention_kernel.py --out DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from run import timed_ms

from blockrag.attention.final_block_kernel import final_block_attention, tiles

CONFIGS = [(64, 64, 4, 2), (64, 64, 4, 3), (64, 128, 4, 2), (128, 64, 8, 2), (128, 64, 8, 3), (128, 128, 8, 2),
           (128, 64, 4, 2)]
SHAPES = {"llama-3.1-8b": (32, 8, 128), "smollm2-135m": (9, 3, 64)}  # query heads, KV heads, head dim


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--context", type=int, default=32768)
    parser.add_argument("--capacity", type=int, default=32768 + 256 + 1024)  # the graph workspace's
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    g = torch.Generator(device="cuda").manual_seed(0)
    rows = []
    for name, (heads, kv_heads, dim) in SHAPES.items():
        key = torch.randn(1, kv_heads, args.capacity, dim, device="cuda", dtype=torch.bfloat16, generator=g)
        value = torch.randn(1, kv_heads, args.capacity, dim, device="cuda", dtype=torch.bfloat16, generator=g)
        for m in (1, 64):
            length = torch.tensor(args.context + m, device="cuda")
            query = torch.randn(1, heads, m, dim, device="cuda", dtype=torch.bfloat16, generator=g)
            expected = final_block_attention(query, key, value, None, length).float()
            kv_bytes = 2 * kv_heads * (args.context + m) * dim * 2
            flops = 4 * heads * m * (args.context + m) * dim
            for config in CONFIGS:
                try:
                    got = final_block_attention(query, key, value, None, length, config=config).float()
                    error = float((got - expected).abs().max())
                    us = 1e3 * timed_ms(lambda: final_block_attention(query, key, value, None, length, config=config),
                                        args.runs, warmup=3)
                except Exception as e:  # a config the compiler refuses (registers, shared memory)
                    rows.append({"shape": name, "m": m, "config": config, "error": repr(e)[:200]})
                    print(rows[-1], flush=True)
                    continue
                rows.append({"shape": name, "m": m, "config": config, "default": config == tiles(heads // kv_heads * m),
                             "us": us, "kv_tbs": kv_bytes / us / 1e6, "tflops": flops / us / 1e6,
                             "max_abs_diff_vs_default": error})
                print({k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "attention_kernel.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
