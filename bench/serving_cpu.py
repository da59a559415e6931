"""Serving speed on the CPU (issue 12): cached time to first token, and answers batched together.

Default model (SmolLM2-135M-Instruct, float32), 2K tokens of context in blocks of 128-256 tokens
(sample text, cycled; encoded before timing: they are cached) and a 24-token question.

- TTFT: full-attention prefill of the whole prompt against the cached path (place the blocks'
  KV, prefill the question, choose the first token), both through engine.generate; runs
  alternate between the two so that load from elsewhere on the machine hits both alike. The
  cached path is split into placing the blocks and the question's forward, to show where its
  time goes. Target: full / cached >= 40x. Both are also timed on one thread, in turn with the
  rest: with other jobs on the cores, each of the cached path's ~1000 small two-thread ops
  waits for whichever of its threads was descheduled (cached 2575 ms on 2 threads against
  191 ms on 1 at load ~4, 2026-12-05); one thread waits for none.
- Batching: 4 requests (each its own 2K context and question, --answer-tokens greedy tokens,
  no stop ids) through one GenerationBatch, against one request alone through engine.generate,
  prefill included: aggregate generated tokens/s. Also one request through the batch (its own
  overhead) and the decode step alone for 1 and 4 sequences. The batched answers must equal the
  lone ones token for token (checked). Target: 4 batched >= 2x one alone.

Medians of --runs runs after a warm-up; ratios are against baselines measured in the same run.

Ceilings: both cached paths are bound by memory, not arithmetic. Per cached prefill the weights
are read once (the tied 49152 x 576 embedding too, as lm_head for the last position), the
blocks' KV is read and written once by placement and read once by attention; per decode step
the weights and every sequence's KV are read once. Those bytes at the read bandwidth of a
512 MB sum, timed in turn with the other runs, give the least time each can take (writes
counted at the read rate: a lower bound), so full / cached floor is the best TTFT ratio this
machine allows at float32, and 4 x (weights + KV) / (weights + 4 x KV) the best ratio of 4
sequences' decode steps to one's.

    python bench/serving_cpu.py [--runs 7] [--threads 2] [--out bench/results/serving_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from pathlib import Path

import torch
from ttft_cpu import QUESTION_TOKENS, corpus_tokens, split_blocks

from blockrag.attention import BlockAttentionEngine
from blockrag.attention.cache import BlockCache
from blockrag.models import load_model
from blockrag.prompt import PromptTemplate

CONTEXT_TOKENS = 2048
CONCURRENT = 4
QUESTIONS = ("Which river runs through Veldmark, and when was its oldest bridge built?",
             "Who founded the observatory, and what did they first measure there?",
             "What does the harbour export, and to which cities?",
             "Summarise the history of the old mill in two sentences.")


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def medians(fns: dict, runs: int) -> dict[str, float]:
    """name -> median seconds; one warm-up each, then the functions take turns run by run."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            times[name].append(timed(fn))
    return {name: statistics.median(t) for name, t in times.items()}


def question_ids(template: PromptTemplate, text: str) -> list[int]:
    ids = template.final_ids(text)
    return (ids * 2)[:QUESTION_TOKENS] if len(ids) < QUESTION_TOKENS else ids[-QUESTION_TOKENS:]


def ttft(engine: BlockAttentionEngine, kvs, blocks, question, runs: int, probe) -> dict:
    prompt = [t for b in blocks for t in b] + question
    laid, offsets, context = engine.layout(kvs)

    def place() -> BlockCache:
        cache = BlockCache(engine.num_layers, engine.num_kv_heads, engine.head_dim, context + len(question) + 1,
                           engine.dtype, engine.device, engine.buffers)
        with torch.inference_mode():
            cache.write_blocks(laid, offsets, engine.reencoder)
        cache.set_length(context)
        return cache

    def question_forward() -> None:
        cache = place()
        with torch.inference_mode():
            engine._forward(tuple(question), context, cache, 1)

    def one_thread(fn):
        def run() -> None:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                fn()
            finally:
                torch.set_num_threads(threads)
        return run

    full = lambda: next(engine.generate([], prompt, max_new_tokens=1))  # noqa: E731
    cached = lambda: next(engine.generate(kvs, question, max_new_tokens=1))  # noqa: E731
    s = medians({"full": full, "cached": cached, "full_1": one_thread(full), "cached_1": one_thread(cached),
                 "place": place, "place_and_forward": question_forward, "read": probe[0]}, runs)
    nbytes = memory_bytes(engine, context, len(question))
    floor = floor_ms(nbytes["cached_prefill"], probe[1], s["read"])
    return {"context_tokens": context, "blocks": len(kvs), "question_tokens": len(question),
            "full_prefill_ms": round(1000 * s["full"], 1), "cached_ms": round(1000 * s["cached"], 2),
            "speedup": round(s["full"] / s["cached"], 1), "target_speedup": 40,
            "cached_place_ms": round(1000 * s["place"], 2),
            "cached_forward_ms": round(1000 * (s["place_and_forward"] - s["place"]), 2),
            "read_gb_per_s": round(probe[1] / s["read"] / 1e9, 2), "cached_bytes_mb": round(nbytes["cached_prefill"] / 1e6),
            "cached_floor_ms": floor, "ceiling_speedup": round(1000 * s["full"] / floor, 1),
            "one_thread": {"full_prefill_ms": round(1000 * s["full_1"], 1), "cached_ms": round(1000 * s["cached_1"], 2),
                           "speedup": round(s["full_1"] / s["cached_1"], 1)}}


def memory_bytes(engine: BlockAttentionEngine, context: int, question: int) -> dict[str, int]:
    """Bytes the cached paths read or write at least (module docstring): weights (the tied lm_head
    counted once), one sequence's KV, a cached prefill (weights, placement's read and write of the
    context's KV, attention's read of all of it)."""
    weights = sum(p.nbytes for p in engine.model.parameters())
    kv_per_token = 2 * engine.num_layers * engine.num_kv_heads * engine.head_dim * engine.dtype.itemsize
    kv = kv_per_token * (context + question)
    return {"weights": weights, "kv": kv, "cached_prefill": weights + 2 * kv_per_token * context + kv}


def bandwidth_probe() -> tuple:
    """A 512 MB float32 sum (larger than any cache), timed among the other runs so that load hits
    it alike, and its size in bytes: the machine's read bandwidth at that moment."""
    data = torch.ones(128 << 20)
    return (lambda: data.sum()), data.nbytes


def floor_ms(nbytes: int, probe_bytes: int, probe_seconds: float) -> float:
    return round(1000 * nbytes * probe_seconds / probe_bytes, 1)


def batching(engine: BlockAttentionEngine, requests, runs: int, probe) -> dict:
    n = requests[0].max_new_tokens
    slot_tokens = max(engine.layout(r.kvs)[2] + len(r.final_ids) for r in requests) + n
    alone = [list(engine._generate(r)) for r in requests]
    batch = engine.batch(slots=CONCURRENT, slot_tokens=slot_tokens)  # one pool, reused by every run

    def batched(subset) -> list[list[int]]:
        ids = {batch.add(r): i for i, r in enumerate(subset)}
        tokens = [[] for _ in subset]
        for out in batch.run():
            for seq_id, token in out.tokens.items():
                tokens[ids[seq_id]].append(token)
        return tokens

    if batched(requests) != alone:
        raise SystemExit("batched answers differ from the lone ones")

    def decode_step(k: int):
        def run() -> None:
            for r in requests[:k]:
                batch.add(r)
            batch.step()  # prefill: the step that is timed decodes only
            decode_times.append(timed(batch.step))
            for seq_id in [s.id for s in batch.running]:
                batch.cancel(seq_id)
        decode_times: list[float] = []
        return run, decode_times

    step_one, one_times = decode_step(1)
    step_all, all_times = decode_step(CONCURRENT)
    s = medians({"one_alone": lambda: list(engine._generate(requests[0])),
                 "one_batched": lambda: batched(requests[:1]),
                 "all_batched": lambda: batched(requests),
                 "decode_one": step_one, "decode_all": step_all, "read": probe[0]}, runs)
    nbytes = memory_bytes(engine, slot_tokens - n - QUESTION_TOKENS, QUESTION_TOKENS)
    weights, kv = nbytes["weights"], nbytes["kv"]
    one_tps = n / s["one_alone"]
    all_tps = CONCURRENT * n / s["all_batched"]
    return {"concurrent": CONCURRENT, "answer_tokens": n, "context_tokens": slot_tokens - n - QUESTION_TOKENS,
            "one_alone_tokens_per_s": round(one_tps, 2), "one_batched_tokens_per_s": round(n / s["one_batched"], 2),
            "batched_tokens_per_s": round(all_tps, 2), "speedup": round(all_tps / one_tps, 2), "target_speedup": 2,
            "decode_step_ms_1": round(1000 * statistics.median(one_times[1:]), 2),
            f"decode_step_ms_{CONCURRENT}": round(1000 * statistics.median(all_times[1:]), 2),
            "read_gb_per_s": round(probe[1] / s["read"] / 1e9, 2),
            "decode_floor_ms_1": floor_ms(weights + kv, probe[1], s["read"]),
            f"decode_floor_ms_{CONCURRENT}": floor_ms(weights + CONCURRENT * kv, probe[1], s["read"]),
            "decode_ceiling_speedup": round(CONCURRENT * (weights + kv) / (weights + CONCURRENT * kv), 2),
            "batched_equals_alone": True}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--answer-tokens", type=int, default=32)
    parser.add_argument("--skip", choices=("ttft", "batching"), default=None)
    parser.add_argument("--out", type=Path, default=Path("bench/results/serving_cpu.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, tokenizer = load_model()
    engine = BlockAttentionEngine.for_serving(model)
    template = PromptTemplate(tokenizer)
    corpus = corpus_tokens(tokenizer, CONTEXT_TOKENS * (CONCURRENT + 1))
    rng = random.Random(0)
    contexts = [split_blocks(corpus[i * 997 : i * 997 + CONTEXT_TOKENS], rng) for i in range(CONCURRENT)]
    kvs = [engine.encode_blocks(blocks) for blocks in contexts]
    questions = [question_ids(template, q) for q in QUESTIONS]

    result = {"benchmark": "serving_cpu", "model": "SmolLM2-135M-Instruct", "dtype": "float32",
              "threads": torch.get_num_threads(), "runs": args.runs,
              "machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
              "torch": torch.__version__, "load_average_at_start": round(os.getloadavg()[0], 2)}
    probe = bandwidth_probe()
    if args.skip != "ttft":
        result["ttft"] = ttft(engine, kvs[0], contexts[0], questions[0], args.runs, probe)
        t = result["ttft"]
        print(f"TTFT at {t['context_tokens']} tokens: full {t['full_prefill_ms']} ms, cached {t['cached_ms']} ms "
              f"({t['speedup']}x, target >= 40x); cached = place {t['cached_place_ms']} ms + question forward "
              f"{t['cached_forward_ms']} ms; memory floor {t['cached_floor_ms']} ms ({t['cached_bytes_mb']} MB at "
              f"{t['read_gb_per_s']} GB/s), so at most {t['ceiling_speedup']}x; on one thread full "
              f"{t['one_thread']['full_prefill_ms']} ms, cached {t['one_thread']['cached_ms']} ms "
              f"({t['one_thread']['speedup']}x)")
    if args.skip != "batching":
        requests = [engine.request(kv, q, args.answer_tokens, stop_ids=[]) for kv, q in zip(kvs, questions)]
        result["batching"] = b = batching(engine, requests, args.runs, probe)
        print(f"{CONCURRENT} answers of {b['answer_tokens']} tokens over ~2K-token contexts: batched "
              f"{b['batched_tokens_per_s']} tokens/s against {b['one_alone_tokens_per_s']} for one alone "
              f"({b['speedup']}x, target >= 2x); one through the batch {b['one_batched_tokens_per_s']}; "
              f"decode step {b['decode_step_ms_1']} ms (1 sequence), {b[f'decode_step_ms_{CONCURRENT}']} ms "
              f"({CONCURRENT}); memory floors {b['decode_floor_ms_1']} and {b[f'decode_floor_ms_{CONCURRENT}']} ms "
              f"({b['read_gb_per_s']} GB/s): decode steps allow at most {b['decode_ceiling_speedup']}x")
    # other work on the machine inflates the small ops of the cached path most (a thread of a
    # 2-thread op waits for a core): read the figures with the load beside them
    result["load_average_at_end"] = round(os.getloadavg()[0], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
