"""GPU benchmark: checks and times block attention at the scale users run, in one process.

For a Llama-3.1-8B-shaped model and a SmolLM2-135M-shaped one (random initialisation, bf16):
- ceilings measured in the same run: bf16 matrix-multiply rate, device-to-device copy bandwidth,
  pinned host-to-device bandwidth;
- correctness: the correctness gate, and cached-path logits against the masked reference
  (relative error; the run fails past the gate's bf16 bound);
- time to first token at 4K-32K tokens of context in 512-token blocks plus a 64-token question:
  full-attention prefill (the plain Hugging Face forward, SDPA) against cached-block prefill with
  blocks in GPU memory and in pinned host memory (read in place, or staged by copies), beside
  the bare host-to-device copy time of the same KV bytes; CUDA events, median of --runs;
- re-encoding (rotate keys to their offsets, lay K and V into the cache) in GB/s against the
  copy bandwidth, for the Triton kernel and the PyTorch loop;
- precompute throughput: batches of 16 blocks of 512 tokens, tokens/s and model FLOP utilisation;
- decoding: a lone answer through engine.generate (wall clock, every token read back as the
  server does), ms per token after the first, with CUDA graphs (the held workspace) and without,
  against the floor of reading the weights and the prompt's KV once per token at the measured
  copy bandwidth; and the first token through generate (no copy out of the workspace);
- concurrency (--parts batch): --requests answers of --batch-tokens tokens, each over its own
  --batch-context tokens of cached blocks, added at once to one GenerationBatch (continuous
  batching) and stepped to the end: aggregate generated tokens/s and the time to each answer's
  first token, against one lone answer through generate in the same run (wall clock, median).

    PYTHONPATH=libs python bench/gpu/run.py --out DIR      (bench/gpu/device_run.sh on the device)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from blockrag.attention import BlockAttentionEngine
from blockrag.attention.cache import BlockCache
from blockrag.attention.gate import relative_error
from blockrag.attention.placement import place_blocks_torch
from blockrag.attention.reference import reference_logits

BLOCK, QUESTION = 512, 64

SHAPES = {
    "llama-3.1-8b": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-5,
                         max_position_embeddings=131072, tie_word_embeddings=False,
                         rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                          "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                          "original_max_position_embeddings": 8192}),
    "smollm2-135m": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, head_dim=64, rms_norm_eps=1e-5,
                         max_position_embeddings=65536, tie_word_embeddings=True,
                         rope_parameters={"rope_type": "default", "rope_theta": 100000.0}),
}


def timed_ms(fn, runs: int, warmup: int = 2) -> float:
    """Median milliseconds of fn() between CUDA events, after warm-up."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def ceilings(runs: int) -> dict:
    """bf16 matmul TFLOP/s, device copy GB/s (read + write), pinned host-to-device GB/s."""
    n = 8192
    a, b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16), torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    matmul_ms = timed_ms(lambda: a @ b, runs, warmup=3)
    src = torch.randn(1 << 30, device="cuda", dtype=torch.bfloat16)  # 2 GiB
    dst = torch.empty_like(src)
    copy_ms = timed_ms(lambda: dst.copy_(src), runs)
    host = torch.empty(1 << 30, dtype=torch.bfloat16).pin_memory()
    h2d_ms = timed_ms(lambda: dst.copy_(host, non_blocking=True), runs)
    del a, b, src, dst, host
    return {"matmul_tflops": 2 * n**3 / matmul_ms / 1e9, "copy_gbs": 2 * 2 * (1 << 30) / copy_ms / 1e6,
            "h2d_gbs": 2 * (1 << 30) / h2d_ms / 1e6}


def random_ids(vocab: int, n: int, g: torch.Generator) -> list[int]:
    return torch.randint(vocab, (n,), generator=g).tolist()


def correctness(model, engine, vocab: int, g: torch.Generator) -> dict:
    """bf16 cached-path logits at 4K context (8 blocks) against the masked reference.

    The truth is the masked reference computed in fp32 with the same (bf16-valued) weights. The
    plain bf16 forward of the reference is itself off from it by bf16 rounding; the cached path
    must be no further than twice that (the bound, measured in the same run), or the run fails.
    """
    blocks = [random_ids(vocab, BLOCK, g) for _ in range(8)]
    final = random_ids(vocab, QUESTION, g)
    cached = engine.prefill(engine.encode_blocks(blocks), final).logits
    ref_bf16 = reference_logits(model, blocks, final)
    with torch.device("cuda"):
        exact = AutoModelForCausalLM.from_config(model.config, dtype=torch.float32,
                                                 attn_implementation="block_sdpa").eval()
    exact.load_state_dict(model.state_dict())
    ref_fp32 = reference_logits(exact, blocks, final)
    del exact
    torch.cuda.empty_cache()
    plain, error = relative_error(ref_bf16, ref_fp32), relative_error(cached, ref_fp32)
    return {"cached_vs_fp32": error, "bf16_reference_vs_fp32": plain, "bound": 2 * plain,
            "cached_vs_bf16_reference": relative_error(cached, ref_bf16),
            "argmax_agreement": float((cached.argmax(-1) == ref_fp32.argmax(-1)).float().mean()),
            "gate": vars(engine.gate_report)}


def ttft(model, engine, vocab: int, context: int, runs: int, g: torch.Generator) -> dict:
    blocks = [random_ids(vocab, BLOCK, g) for _ in range(context // BLOCK)]
    question = random_ids(vocab, QUESTION, g)
    kvs = engine.encode_blocks(blocks)
    prompt = torch.tensor([t for b in blocks for t in b] + question, device="cuda")[None]
    row = {"context": context, "blocks": len(blocks)}
    with torch.inference_mode():
        row["full_ms"] = timed_ms(lambda: model(input_ids=prompt, logits_to_keep=1).logits[0, -1].argmax(), runs)
    row["cached_gpu_ms"] = timed_ms(lambda: engine.prefill(kvs, question, logits_to_keep=1).logits[-1].argmax(), runs)
    engine.cuda_graphs = False  # the same path without CUDA graphs, for comparison
    row["cached_gpu_eager_ms"] = timed_ms(
        lambda: engine.prefill(kvs, question, logits_to_keep=1).logits[-1].argmax(), runs)
    engine.cuda_graphs = True
    row["question_alone_ms"] = timed_ms(lambda: engine.full_prefill(question, logits_to_keep=1).logits[-1].argmax(), runs)

    kv_bytes = sum(kv.nbytes for kv in kvs)
    offsets = [i * BLOCK for i in range(len(kvs))]
    cache = BlockCache(engine.num_layers, engine.num_kv_heads, engine.head_dim, context + QUESTION,
                       engine.dtype, "cuda")
    with torch.inference_mode():
        row["reencode_triton_ms"] = timed_ms(lambda: cache.write_blocks(kvs, offsets, engine.reencoder), runs)
        row["reencode_torch_ms"] = timed_ms(
            lambda: place_blocks_torch(kvs, offsets, engine.reencoder, cache.key_buffer, cache.value_buffer), runs)
    row["kv_gb"] = kv_bytes / 1e9
    row["reencode_triton_gbs"] = 2 * kv_bytes / row["reencode_triton_ms"] / 1e6
    row["reencode_torch_gbs"] = 2 * kv_bytes / row["reencode_torch_ms"] / 1e6

    del cache
    row.update(host_reads(engine, kvs, question, runs))
    del kvs
    torch.cuda.empty_cache()
    row["speedup_gpu"] = row["full_ms"] / row["cached_gpu_ms"]
    return row


def host_reads(engine, kvs, question, runs: int) -> dict:
    """Cached TTFT with every block in pinned host memory, per engine host_reads mode, against the
    bare host-to-device copy of the same bytes (issue 12 target: at most 1.1x at 32K)."""
    kv_bytes = sum(kv.nbytes for kv in kvs)
    host = [kv.to("cpu").pin_memory() for kv in kvs]
    flat = torch.empty(kv_bytes // 2, dtype=torch.bfloat16).pin_memory()
    landing = torch.empty(kv_bytes // 2, dtype=torch.bfloat16, device="cuda")
    row = {"h2d_copy_ms": timed_ms(lambda: landing.copy_(flat, non_blocking=True), runs)}
    del flat, landing
    default = engine.host_reads
    for mode in ("direct", "staged", "layered"):
        engine.host_reads = mode
        row[f"cached_host_{mode}_ms"] = timed_ms(
            lambda: engine.prefill(host, question, logits_to_keep=1).logits[-1].argmax(), runs)
        row[f"host_{mode}_over_copy"] = row[f"cached_host_{mode}_ms"] / row["h2d_copy_ms"]
    engine.host_reads = default
    return row


def host_only(engine, vocab: int, context: int, runs: int, g: torch.Generator) -> dict:
    """--parts host: the host_reads rows alone, without the rest of the TTFT part."""
    kvs = engine.encode_blocks([random_ids(vocab, BLOCK, g) for _ in range(context // BLOCK)])
    row = {"context": context, **host_reads(engine, kvs, random_ids(vocab, QUESTION, g), runs)}
    del kvs
    torch.cuda.empty_cache()
    return row


def precompute(model, engine, vocab: int, runs: int, matmul_tflops: float, g: torch.Generator) -> dict:
    """16 blocks of 512 tokens per batch: tokens/s and model FLOP utilisation."""
    config = model.config
    blocks = [random_ids(vocab, BLOCK, g) for _ in range(16)]
    engine.max_batch_tokens = 16 * BLOCK
    engine.encode_blocks(blocks)  # first call at this size compiles the fused modules
    ms = timed_ms(lambda: engine.encode_blocks(blocks), runs)
    params = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n and "lm_head" not in n)
    heads_dim = config.num_attention_heads * config.head_dim
    # per token: 2 FLOPs per weight, plus QK^T and PV over (L+1)/2 keys on average (causal)
    flops = 16 * BLOCK * (2 * params + 4 * config.num_hidden_layers * heads_dim * (BLOCK + 1) / 2)
    return {"batch_tokens": 16 * BLOCK, "ms": ms, "tokens_per_s": 16 * BLOCK / ms * 1e3,
            "tflops": flops / ms / 1e9, "mfu": flops / ms / 1e9 / matmul_tflops}


def decode(model, engine, vocab: int, context: int, runs: int, copy_gbs: float, g: torch.Generator,
           new_tokens: int = 64, eager_tokens: int = 16) -> dict:
    """A lone answer at `context` tokens of cached blocks: median time to the first token through
    generate and median ms per token after it, graphed and eager (greedy, no stop ids)."""
    blocks = [random_ids(vocab, BLOCK, g) for _ in range(context // BLOCK)]
    question = random_ids(vocab, QUESTION, g)
    kvs = engine.encode_blocks(blocks)

    def answer(n: int) -> tuple[float, float]:
        torch.cuda.synchronize()
        started = time.perf_counter()
        tokens = engine.generate(kvs, question, n, stop_ids=[])
        next(tokens)  # int(argmax): the token is on the host, as a server streams it
        first = time.perf_counter()
        rest = sum(1 for _ in tokens)
        done = time.perf_counter()
        assert rest == n - 1
        return (first - started) * 1e3, (done - first) * 1e3 / rest

    def median_of(n: int, times: int) -> tuple[float, float]:
        answer(n)  # warm-up (captures the decode graph the first time)
        ttfts, steps = zip(*(answer(n) for _ in range(times)))
        return statistics.median(ttfts), statistics.median(steps)

    row = {"context": context}
    row["generate_ttft_ms"], row["decode_ms"] = median_of(new_tokens, runs)
    engine.cuda_graphs = False
    row["generate_ttft_eager_ms"], row["decode_eager_ms"] = median_of(eager_tokens, max(3, runs // 3))
    engine.cuda_graphs = True
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    kv = sum(kv.nbytes for kv in kvs)
    # a copy of X bytes reads X and writes X: copy_gbs (read + write) is also the read rate
    row["decode_floor_ms"] = (weights + kv) / (copy_gbs * 1e9) * 1e3
    del kvs
    torch.cuda.empty_cache()
    return row


def concurrency(engine, vocab: int, context: int, requests: int, new_tokens: int, runs: int,
                g: torch.Generator) -> dict:
    """`requests` answers at once through engine.batch against one alone through generate."""
    question = random_ids(vocab, QUESTION, g)
    kvs = [engine.encode_blocks([random_ids(vocab, BLOCK, g) for _ in range(context // BLOCK)])
           for _ in range(requests)]

    def lone() -> tuple[float, float]:
        torch.cuda.synchronize()
        started = time.perf_counter()
        tokens = engine.generate(kvs[0], question, new_tokens, stop_ids=[])
        next(tokens)
        first = time.perf_counter()
        n = 1 + sum(1 for _ in tokens)
        return (first - started) * 1e3, n / (time.perf_counter() - started)

    def together(batch) -> tuple[list[float], float]:
        torch.cuda.synchronize()
        started = time.perf_counter()
        ids = [batch.add(engine.request(kv, question, new_tokens, stop_ids=[])) for kv in kvs]
        first: dict[int, float] = {}
        emitted = 0
        for out in batch.run():
            now = time.perf_counter()
            for seq in out.tokens:
                first.setdefault(seq, (now - started) * 1e3)
            emitted += len(out.tokens)
        assert emitted == requests * new_tokens and sorted(first) == sorted(ids)
        return sorted(first.values()), emitted / (time.perf_counter() - started)

    lone()  # warm-up
    alone = [lone() for _ in range(runs)]
    ttft_alone, rate_alone = statistics.median(a[0] for a in alone), statistics.median(a[1] for a in alone)
    row = {"context": context, "requests": requests, "new_tokens": new_tokens,
           "lone_ttft_ms": ttft_alone, "lone_tokens_per_s": rate_alone}
    # the decode steps eager, then replayed from graphs (engine.graph_batch_decode), one pool at a time
    for mode, graphs in (("eager", False), ("graphed", True)):
        engine.graph_batch_decode = graphs
        batch = engine.batch(slots=requests, slot_tokens=context + QUESTION + new_tokens)
        together(batch)  # warm-up
        batched = [together(batch) for _ in range(max(2, runs // 2))]
        p99 = statistics.median(b[0][min(len(b[0]) - 1, int(0.99 * len(b[0])))] for b in batched)
        rate = statistics.median(b[1] for b in batched)
        row[mode] = {"ttft_p50_ms": statistics.median(statistics.median(b[0]) for b in batched),
                     "ttft_p99_ms": p99, "tokens_per_s": rate,
                     "throughput_ratio": rate / rate_alone, "ttft_p99_ratio": p99 / ttft_alone}
        del batch
        torch.cuda.empty_cache()
    engine.graph_batch_decode = False
    del kvs
    torch.cuda.empty_cache()
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(SHAPES))
    parser.add_argument("--contexts", type=int, nargs="+", default=[4096, 8192, 16384, 32768])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--parts", nargs="+", default=["correctness", "precompute", "ttft", "decode", "batch"],
                        choices=["correctness", "precompute", "ttft", "host", "decode", "batch"])
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--batch-context", type=int, default=8192)
    parser.add_argument("--batch-tokens", type=int, default=128)
    parser.add_argument("--no-decode-fusion", action="store_true",
                        help="the engine with decode_fusion=False (separate projections, eager modules in graphs)")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    g = torch.Generator().manual_seed(0)
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "runs": args.runs}
    import transformers
    import triton

    result["transformers"], result["triton"] = transformers.__version__, triton.__version__
    result["ceilings"] = ceilings(args.runs)
    print(json.dumps(result, indent=1), flush=True)
    failed = False
    for name in args.models:
        torch.manual_seed(0)
        with torch.device("cuda"):
            model = AutoModelForCausalLM.from_config(LlamaConfig(**SHAPES[name]), dtype=torch.bfloat16,
                                                     attn_implementation="block_sdpa").eval()
        started = time.perf_counter()
        # fuses RMSNorm/MLP for large inputs on CUDA; decode graphs for answers of up to 1024 tokens
        engine = BlockAttentionEngine.for_serving(model, graph_decode_tokens=1024, decode_fusion=not args.no_decode_fusion)
        entry = {"gate_s": time.perf_counter() - started, "decode_fusion": engine.decode_fusion}
        vocab = model.config.vocab_size
        if "correctness" in args.parts:
            entry["correctness"] = correctness(model, engine, vocab, g)
            failed |= not entry["correctness"]["cached_vs_fp32"] <= entry["correctness"]["bound"]
            print(name, json.dumps(entry["correctness"]), flush=True)
        if "precompute" in args.parts:
            entry["precompute"] = precompute(model, engine, vocab, args.runs, result["ceilings"]["matmul_tflops"], g)
            print(name, json.dumps(entry["precompute"]), flush=True)
        for part, measure in (("ttft", lambda c: ttft(model, engine, vocab, c, args.runs, g)),
                              ("host", lambda c: host_only(engine, vocab, c, args.runs, g)),
                              ("decode", lambda c: decode(model, engine, vocab, c, args.runs,
                                                          result["ceilings"]["copy_gbs"], g))):
            if part not in args.parts:
                continue
            entry[part] = []
            for context in args.contexts:
                row = measure(context)
                entry[part].append(row)
                print(name, part, json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}),
                      flush=True)
        if "batch" in args.parts:
            entry["batch"] = concurrency(engine, vocab, args.batch_context, args.requests, args.batch_tokens,
                                         args.runs, g)
            print(name, "batch", json.dumps({k: round(v, 3) if isinstance(v, float) else v
                                             for k, v in entry["batch"].items()}), flush=True)
        result[name] = entry
        del model, engine
        torch.cuda.empty_cache()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_results.json").write_text(json.dumps(result, indent=2))
    (args.out / "RESULTS.md").write_text(render(result, args.models))
    print(render(result, args.models))
    return 1 if failed else 0


def render(result: dict, models: list[str]) -> str:
    """A markdown report of one run."""
    c = result["ceilings"]
    lines = [f"Device: {result['device']}; torch {result['torch']}, transformers {result['transformers']}, "
             f"triton {result['triton']}; median of {result['runs']} runs (CUDA events).", "",
             f"Ceilings measured in this run: bf16 matmul {c['matmul_tflops']:.0f} TFLOP/s, device copy "
             f"{c['copy_gbs'] / 1e3:.2f} TB/s (read + write), pinned host-to-device {c['h2d_gbs']:.1f} GB/s.", ""]
    for name in models:
        e = result[name]
        lines += [f"## {name} (random init, bf16)", ""]
        if "correctness" in e:
            k = e["correctness"]
            lines += [f"Correctness at 4K context (8 blocks + 64-token question), relative max error of the logits "
                      f"against the masked reference in fp32: cached bf16 path {k['cached_vs_fp32']:.2e}, plain bf16 "
                      f"reference forward {k['bf16_reference_vs_fp32']:.2e}; bound (2x the plain bf16 error) "
                      f"{k['bound']:.2e}; cached vs bf16 reference {k['cached_vs_bf16_reference']:.2e}; argmax "
                      f"agreement with fp32 {k['argmax_agreement']:.3f}. Gate: layer-0 key error "
                      f"{k['gate']['key_error']:.2e}, logit error {k['gate']['logit_error']:.2e}.", ""]
        if "precompute" in e:
            p = e["precompute"]
            lines += [f"Precompute, 16 x 512-token blocks: {p['ms']:.1f} ms, {p['tokens_per_s']:.0f} tokens/s, "
                      f"{p['tflops']:.0f} TFLOP/s = {100 * p['mfu']:.1f}% of the measured matmul rate.", ""]
        if "ttft" in e:
            lines += ["| context | full ms | cached (GPU) ms | speedup | cached, no graphs ms | question alone ms "
                      "| host direct ms | host staged ms | host layered ms | bare H2D copy ms | direct/copy "
                      "| staged/copy | layered/copy | re-encode Triton GB/s (% copy) | re-encode torch GB/s |",
                      "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
            for r in e["ttft"]:
                lines.append(
                    f"| {r['context']} | {r['full_ms']:.1f} | {r['cached_gpu_ms']:.2f} | {r['speedup_gpu']:.1f}x "
                    f"| {r['cached_gpu_eager_ms']:.2f} | {r['question_alone_ms']:.2f} | {r['cached_host_direct_ms']:.1f} "
                    f"| {r['cached_host_staged_ms']:.1f} | {r['cached_host_layered_ms']:.1f} "
                    f"| {r['h2d_copy_ms']:.1f} | {r['host_direct_over_copy']:.2f} | {r['host_staged_over_copy']:.2f} "
                    f"| {r['host_layered_over_copy']:.2f} "
                    f"| {r['reencode_triton_gbs']:.0f} ({100 * r['reencode_triton_gbs'] / c['copy_gbs']:.0f}%) "
                    f"| {r['reencode_torch_gbs']:.0f} |")
            lines.append("")
        if "decode" in e:
            lines += ["A lone answer through engine.generate, wall clock (median): first token, then ms per token.", "",
                      "| context | first token ms | decode ms/token | floor ms/token (weights + KV at copy rate) "
                      "| decode / floor | first token, no graphs ms | decode, no graphs ms/token | graphs speedup |",
                      "|---|---|---|---|---|---|---|---|"]
            for r in e["decode"]:
                lines.append(
                    f"| {r['context']} | {r['generate_ttft_ms']:.2f} | {r['decode_ms']:.2f} | {r['decode_floor_ms']:.2f} "
                    f"| {r['decode_ms'] / r['decode_floor_ms']:.2f} | {r['generate_ttft_eager_ms']:.2f} "
                    f"| {r['decode_eager_ms']:.2f} | {r['decode_eager_ms'] / r['decode_ms']:.1f}x |")
            lines.append("")
        if "batch" in e:
            b = e["batch"]
            lines += [f"{b['requests']} answers of {b['new_tokens']} tokens, each over its own {b['context']} tokens of "
                      "cached blocks, added at once to one GenerationBatch, against one alone through generate "
                      f"({b['lone_tokens_per_s']:.1f} tokens/s, first token {b['lone_ttft_ms']:.2f} ms; wall clock, median):",
                      "", "| decode steps | batch tokens/s | ratio (target >= 10x) | TTFT p50 ms | TTFT p99 ms "
                      "| p99 / lone (target <= 3x) |", "|---|---|---|---|---|---|"]
            lines += [f"| {mode} | {r['tokens_per_s']:.1f} | {r['throughput_ratio']:.2f}x | {r['ttft_p50_ms']:.2f} "
                      f"| {r['ttft_p99_ms']:.2f} | {r['ttft_p99_ratio']:.2f}x |"
                      for mode, r in ((m, b[m]) for m in ("eager", "graphed"))]
            lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
