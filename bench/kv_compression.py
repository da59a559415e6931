"""KV compression: bytes per token in the store and host tiers, and the drift of answers, per setting.

The served model (the embedded default with its shipped adapter, as `blockrag up` serves it),
the project's QA set (held-out split, blockrag.distill.qa_set). For each setting of
blockrag.kvcache.KVCompression:
- bytes per token of a stored frame (KVCodec, the store tier) and of a host-tier entry (the
  quantized tensors and scales), over the prompts' own blocks, against the uncompressed ones
  in the model's dtype and, for comparison, in bfloat16 (what a GPU replica stores);
- the mean answer-token KL(uncompressed || compressed) and the accuracy on both sides
  (blockrag.kvcache.compression_gate.DriftProbe: the gate's own measurement), and whether the
  gate passes it.

    OMP_NUM_THREADS=2 nice python bench/kv_compression.py [--questions 60] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from blockrag.attention import BlockKV
from blockrag.distill.fidelity import qa_questions
from blockrag.errors import BlockRAGError
from blockrag.kvcache.codec import KVCodec
from blockrag.kvcache.compression import KVCompression
from blockrag.kvcache.compression_gate import CompressionGate, DriftProbe, DriftReport
from blockrag.kvcache.quantize import compress
from blockrag.model_runtime import ModelRuntime
from blockrag.model_spec import ModelSpec


def sizes(kvs: list[BlockKV], version: str) -> dict[str, list[int]]:
    """Bytes of every setting over ``kvs``: [stored frames, host-tier entries, tokens]."""
    tokens = sum(kv.num_tokens for kv in kvs)
    out = {}
    for setting in KVCompression:
        frame = sum(len(KVCodec.encode(kv, version, tenant="bench", block_id=f"b{i}", compression=setting))
                    for i, kv in enumerate(kvs))
        host = sum(kv.nbytes if setting is KVCompression.NONE else compress(kv, setting).nbytes for kv in kvs)
        out[setting.value] = [frame, host, tokens]
    bf16 = sum(len(KVCodec.encode(kv.to("cpu", torch.bfloat16), version, tenant="bench", block_id=f"b{i}"))
               for i, kv in enumerate(kvs))
    out["none (bfloat16)"] = [bf16, sum(kv.nbytes // 2 for kv in kvs), tokens]
    return out


def per_token(totals: dict[str, list[int]], blocks: int) -> dict:
    tokens = next(iter(totals.values()))[2]
    return {"blocks": blocks, "tokens": tokens, "settings": {
        name: {"store_bytes_per_token": frame / tokens, "host_bytes_per_token": host / tokens}
        for name, (frame, host, _) in totals.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=60)
    parser.add_argument("--split", default="heldout", choices=["dev", "heldout"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--settings", nargs="*", default=[s.value for s in KVCompression if s is not KVCompression.NONE])
    parser.add_argument("--out", type=Path, default=Path("bench/kv_compression-results.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    runtime = ModelRuntime.load(ModelSpec(device="cpu"))
    settings = [KVCompression.parse(name) for name in args.settings]
    gate = CompressionGate()
    result = {"model": runtime.spec.source, "adapter": runtime.spec.adapter, "dtype": str(runtime.engine.dtype),
              "device": str(runtime.engine.device), "split": args.split, "questions": 0,
              "gate": {"max_kl": gate.max_kl, "max_accuracy_drop": gate.max_accuracy_drop}}
    reports: dict[KVCompression, list[DriftReport]] = {s: [] for s in settings}
    totals: dict[str, list[int]] = {}
    blocks = 0
    # one question at a time, the results written after each: a run stopped early still reports
    # the questions it finished (result["questions"] says how many)
    for i, question in enumerate(qa_questions(args.questions, args.split)):
        probe = DriftProbe(runtime.engine, runtime.template, [question])
        kvs = probe.references[0].kvs[1:] if blocks else probe.references[0].kvs  # the opening once
        for name, counts in sizes(kvs, runtime.version).items():
            totals[name] = [a + b for a, b in zip(totals.get(name, [0, 0, 0]), counts)]
        blocks += len(kvs)
        for setting in settings:
            reports[setting].append(probe.score(setting))
        result["questions"] = i + 1
        result["bytes"] = per_token(totals, blocks)
        result["drift"] = {}
        for setting in settings:
            report = DriftReport.combine(reports[setting])
            try:
                gate.check(report)
                verdict = "pass"
            except BlockRAGError as e:
                verdict = f"refused: {e}"
            result["drift"][setting.value] = {**report.to_dict(), "gate": verdict}
        result["seconds"] = time.perf_counter() - started
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
        print(f"{i + 1} questions ({result['seconds']:.0f} s): " + "; ".join(
            f"{name} KL {row['kl']:.5f} right {row['correct']}/{row['reference_correct']}"
            for name, row in result["drift"].items()), flush=True)
    for name, row in result["bytes"]["settings"].items():
        print(f"{name:>16}: store {row['store_bytes_per_token']:.0f} B/token, host {row['host_bytes_per_token']:.0f} B/token")


if __name__ == "__main__":
    main()
