"""Time to first token through the platform: blocks from the replica's memory, from the KV store,
and computed on the fly (the no-cache baseline, measured in the same run).

Starts `blockrag up` (its own Ray, a temporary state directory, free ports; the embedded default
model on the CPU), then for contexts of 2, 8 and 32 blocks of ~200 tokens asks one question over
gRPC, max_new_tokens=1, three ways:
  computed  literal text blocks never seen before: Generate encodes them (through Precompute)
  store     the same blocks after Ingest: read from the object store, decoded, placed
  memory    the same again: the generation replica's in-memory LRU
Each run uses fresh text (a run id inside every block), so nothing is cached across runs.
Reported: the replica's TTFT (usage.ttft_ms, from the request's arrival) and the client's wall time
to the first streamed message, median of --runs runs; ratios against `memory` from the same run.

    .venv/bin/python bench/platform_ttft.py [--runs 5] [--out bench/results/platform_ttft.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fixtures.platform import start_platform, stop_platform  # noqa: E402  (the tests' launcher)

from blockrag.samples import sample_documents  # noqa: E402
from blockrag.v1 import generation_pb2 as pb  # noqa: E402
from blockrag.v1 import generation_pb2_grpc  # noqa: E402

BLOCKS = (2, 8, 32)
WORDS_PER_BLOCK = 150  # ~200 tokens of the default tokenizer
GENERATION = (("application", "generation"),)
QUESTION = "Which town is the railway's terminus, and when did the line open?"


def block_texts(n: int, run: str) -> list[str]:
    words = " ".join(sample_documents().values()).split()
    out = []
    for i in range(n):
        start = (i * 97) % (len(words) - WORDS_PER_BLOCK)
        out.append(f"[{run}-{i}] " + " ".join(words[start:start + WORDS_PER_BLOCK]))
    return out


def ask(stub, context: list[pb.ContextBlock]) -> tuple[float, float, pb.Usage]:
    """(server TTFT ms, client time to first message ms, usage)."""
    started = time.perf_counter()
    first = None
    usage = None
    for reply in stub.Generate(pb.GenerateRequest(question=QUESTION, context=context, max_new_tokens=1),
                               metadata=GENERATION):
        first = first or (time.perf_counter() - started) * 1000
        usage = reply.usage if reply.done else usage
    return usage.ttft_ms, first, usage


def measure(stub, n: int, runs: int) -> dict:
    rows: dict[str, list[tuple[float, float]]] = {"computed": [], "store": [], "memory": []}
    tokens = 0
    for r in range(runs + 1):  # the first run warms up
        texts = block_texts(n, uuid.uuid4().hex[:8])
        computed = ask(stub, [pb.ContextBlock(text=t) for t in texts])
        assert dict(computed[2].blocks_by_tier) == {"computed": n}, computed[2]
        ingest = stub.Ingest(pb.IngestRequest(collection=f"bench-{uuid.uuid4().hex[:8]}", documents=[
            pb.Document(id=str(i), text=t.replace(t[:12], t[:12] + " again")) for i, t in enumerate(texts)]),
            metadata=GENERATION)
        ids = [pb.ContextBlock(block_id=d.block_ids[0]) for d in ingest.documents]
        store, memory = ask(stub, ids), ask(stub, ids)
        assert dict(store[2].blocks_by_tier) == {"store": n} and dict(memory[2].blocks_by_tier) == {"memory": n}
        tokens = memory[2].prompt_tokens
        if r:
            for name, result in (("computed", computed), ("store", store), ("memory", memory)):
                rows[name].append(result[:2])
    med = {name: {"server_ms": statistics.median(v[0] for v in vals),
                  "client_ms": statistics.median(v[1] for v in vals)} for name, vals in rows.items()}
    return {"blocks": n, "prompt_tokens": tokens, **med}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench/results/platform_ttft.json"))
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        with console.status("starting the platform (blockrag up)..."):
            platform = start_platform(Path(tmp) / "state")
        try:
            with grpc.insecure_channel(platform.grpc) as channel:
                stub = generation_pb2_grpc.GenerationServiceStub(channel)
                results = []
                for n in BLOCKS:
                    with console.status(f"{n} blocks, {args.runs} runs..."):
                        results.append(measure(stub, n, args.runs))
        finally:
            stop_platform(platform)
    table = Table("blocks", "prompt tokens", "computed (ms)", "store (ms)", "memory (ms)", "computed / memory",
                  "store / memory", title="Time to first token through gRPC (replica-measured; client in brackets)")
    for r in results:
        m = r["memory"]["server_ms"]
        table.add_row(str(r["blocks"]), str(r["prompt_tokens"]),
                      *(f"{r[k]['server_ms']:.0f} [{r[k]['client_ms']:.0f}]" for k in ("computed", "store", "memory")),
                      f"{r['computed']['server_ms'] / m:.1f}x", f"{r['store']['server_ms'] / m:.2f}x")
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"runs": args.runs, "results": results}, indent=2))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
