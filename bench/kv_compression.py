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

from blockrag.distill.fidelity import qa_questions
from blockrag.errors import BlockRAGError
from blockrag.kvcache.codec import KVCodec
from blockrag.kvcache.compression import KVCompression
from blockrag.kvcache.compression_gate import CompressionGate, DriftProbe
from blockrag.kvcache.quantize import compress
from blockrag.model_runtime import ModelRuntime
from blockrag.model_spec import ModelSpec


def sizes(probe: DriftProbe, version: str) -> dict[str, dict]:
    """Bytes per token of every setting over the probe's blocks: stored frame, host-tier entry."""
    kvs = [kv for ref in probe.references for kv in ref.kvs]
    tokens = sum(kv.num_tokens for kv in kvs)
    out = {}
    for setting in KVCompression:
        frame = sum(len(KVCodec.encode(kv, version, tenant="bench", block_id=f"b{i}", compression=setting))
                    for i, kv in enumerate(kvs))
        host = sum(kv.nbytes if setting is KVCompression.NONE else compress(kv, setting).nbytes for kv in kvs)
        out[setting.value] = {"store_bytes_per_token": frame / tokens, "host_bytes_per_token": host / tokens}
    bf16 = sum(len(KVCodec.encode(kv.to("cpu", torch.bfloat16), version, tenant="bench", block_id=f"b{i}"))
               for i, kv in enumerate(kvs))
    out["none (bfloat16)"] = {"store_bytes_per_token": bf16 / tokens,
                              "host_bytes_per_token": sum(kv.nbytes // 2 for kv in kvs) / tokens}
    return {"blocks": len(kvs), "tokens": tokens, "settings": out}


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
    questions = qa_questions(args.questions, args.split)
    probe = DriftProbe(runtime.engine, runtime.template, questions,
                       progress=lambda i, n: i % 10 == 0 and print(f"  references {i}/{n}", flush=True))
    print(f"references over uncompressed KV: {time.perf_counter() - started:.0f} s", flush=True)
    result = {"model": runtime.spec.source, "adapter": runtime.spec.adapter, "dtype": str(runtime.engine.dtype),
              "device": str(runtime.engine.device), "split": args.split, "questions": len(questions),
              "gate": {"max_kl": CompressionGate().max_kl, "max_accuracy_drop": CompressionGate().max_accuracy_drop},
              "bytes": sizes(probe, runtime.version), "drift": {}}
    for name in args.settings:
        setting = KVCompression.parse(name)
        report = probe.score(setting)
        try:
            CompressionGate().check(report)
            verdict = "pass"
        except BlockRAGError as e:
            verdict = f"refused: {e}"
        result["drift"][name] = {**report.to_dict(), "gate": verdict}
        print(f"{name}: KL {report.kl:.5f} (worst question {report.max_question_kl:.4f}), accuracy "
              f"{report.correct}/{report.scored} vs {report.reference_correct}/{report.scored} uncompressed, "
              f"same answers {report.same_answers}/{report.questions}; gate {verdict.split(':')[0]} "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
    for name, row in result["bytes"]["settings"].items():
        print(f"{name:>16}: store {row['store_bytes_per_token']:.0f} B/token, host {row['host_bytes_per_token']:.0f} B/token")
    result["seconds"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
