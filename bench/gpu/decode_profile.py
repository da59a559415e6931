"""Where a graphed decode step's time goes (issue 12): the 2026-12-05 H200 run measured ~3.2 ms a
token for the SmolLM2 shape at every context (floor 0.1-0.25 ms) and 7.9-8.2 ms for the 8B shape
(floor 4.0-4.9 ms), so a few milliseconds of each step do not scale with the bytes read.

For each shape, one lone answer of --tokens tokens through engine.generate (graphed decode) at
--context tokens of cached blocks, under torch.profiler: wall ms per token, the device time per
token (sum of CUDA kernel time) and the top operations by device and by host time. If device time
per token is near the wall time, the graph itself is slow (a kernel sized by the workspace, not
by the context?); if far below, the host is (the per-token sync, sampling, Python).

Variants (--variants), each on a fresh model, so that their ratios come from one run:
  plain        fuse=False: eager module forwards inside the graph, separate projections
               (the decode path before 2026-12-06);
  projections  q/k/v and gate/up as one matmul each (fusion.fuse_projections), modules eager;
  fused        decode_fusion=True: projections fused, RMSNorm and MLP compiled in the graph.
Every variant also times the first token through engine.generate (the serving path), median of
5. Only the last variant at the first context is profiled, its first token too: wall ms against
kernel ms and the host operations that fill the difference (issue 12 item 4: ~9 ms of the 32K
TTFT was not accounted for by device work).

    PYTHONPATH=libs python3 bench/gpu/decode_profile.py --out DIR [--contexts 4096 32768] [--tokens 64]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from run import BLOCK, QUESTION, SHAPES, random_ids
from transformers import AutoModelForCausalLM, LlamaConfig

from blockrag.attention import BlockAttentionEngine


VARIANTS = ("plain", "projections", "fused")


def profile(name: str, variant: str, context: int, tokens: int, g: torch.Generator, profiled: bool) -> dict:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from blockrag.attention.fusion import fuse_projections

    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(LlamaConfig(**SHAPES[name]), dtype=torch.bfloat16,
                                                 attn_implementation="block_sdpa").eval()
    if variant == "projections":
        fuse_projections(model)
    engine = BlockAttentionEngine.for_serving(model, graph_decode_tokens=1024, fuse=variant == "fused",
                                              decode_fusion=variant == "fused")
    vocab = model.config.vocab_size
    kvs = engine.encode_blocks([random_ids(vocab, BLOCK, g) for _ in range(context // BLOCK)])
    question = random_ids(vocab, QUESTION, g)

    def answer() -> float:
        stream = engine.generate(kvs, question, tokens, stop_ids=[])
        next(stream)
        torch.cuda.synchronize()
        started = time.perf_counter()
        rest = sum(1 for _ in stream)
        return (time.perf_counter() - started) * 1e3 / rest

    answer()  # captures the graphs
    plain = [answer() for _ in range(5)]
    row = {"shape": name, "variant": variant, "context": context, "tokens": tokens,
           "wall_ms_per_token": sorted(plain)[2],
           "ttft_wall_ms": sorted(first_token_ms(engine, kvs, question) for _ in range(5))[2]}
    if profiled:
        row.update(ttft_profile(engine, kvs, question))
        with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            row["wall_ms_per_token_profiled"] = answer()
        events = prof.key_averages()
        device_us = sum(e.self_device_time_total for e in events)  # every kernel of the profiled answer
        row.update({"device_ms_per_token": device_us / 1e3 / tokens,  # prefill's kernels included: an upper bound
                    "kernels_per_token": sum(e.count for e in events if e.self_device_time_total > 0) / tokens,
                    "top_device": events.table(sort_by="self_device_time_total", row_limit=25),
                    "top_host": events.table(sort_by="self_cpu_time_total", row_limit=15)})
    return row  # the model and its blocks go with this frame


def first_token_ms(engine: BlockAttentionEngine, kvs, question) -> float:
    """Wall ms to the first token through engine.generate (the serving path: the held graphed
    prefill, no copy of the prompt's KV out of the workspace), synchronised before."""
    torch.cuda.synchronize()
    started = time.perf_counter()
    stream = engine.generate(kvs, question, 1, stop_ids=[])
    next(stream)  # an int: the token is on the host
    elapsed = (time.perf_counter() - started) * 1e3
    stream.close()
    return elapsed


def ttft_profile(engine: BlockAttentionEngine, kvs, question) -> dict:
    """One first token under the profiler: kernel ms, kernel count and the top host operations."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        profiled = first_token_ms(engine, kvs, question)
    events = prof.key_averages()
    return {"ttft_wall_ms_profiled": profiled,
            "ttft_device_ms": sum(e.self_device_time_total for e in events) / 1e3,
            "ttft_kernels": sum(e.count for e in events if e.self_device_time_total > 0),
            "top_ttft_device": events.table(sort_by="self_device_time_total", row_limit=15),
            "top_ttft_host": events.table(sort_by="self_cpu_time_total", row_limit=20)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--contexts", type=int, nargs="+", default=[4096])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    rows = []
    for name in args.models:
        for variant in args.variants:
            for context in args.contexts:
                profiled = variant == args.variants[-1] and context == args.contexts[0]
                rows.append(profile(name, variant, context, args.tokens, g, profiled))
                print({k: v for k, v in rows[-1].items() if not k.startswith("top_")}, flush=True)
                torch.cuda.empty_cache()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "decode_profile.json").write_text(json.dumps(rows, indent=2))
    for row in rows:
        if "top_device" in row:
            print(row["shape"], row["variant"], row["context"])
            for key in ("top_ttft_device", "top_ttft_host", "top_device", "top_host"):
                print(key)
                print(row[key])


if __name__ == "__main__":
    main()
