"""Load: N concurrent gRPC clients, mixed Ingest and Generate, against a local platform, for a
bounded time; throughput, time to first token, errors by status code and the platform's memory.

Starts `blockrag up` (the tests' launcher: its own Ray, a temporary state directory, free ports,
the embedded default model on the CPU), ingests the bundled sample documents, then runs
--clients threads, each with its own channel, for --duration seconds. Each request is an Ingest
of a new document (probability --ingest-share: fresh text, so it is segmented and precomputed)
or a Generate over the collection (a question from a fixed list, --max-new-tokens tokens).
Every --sample-every seconds the memory of the platform's processes (`blockrag up`, Ray's and
every worker it started) is read. Reported (and written to --out as JSON):
  throughput  requests completed per second, by kind, over the measured time;
  ttft        Generate's time to the first streamed message, client side, p50 / p99 (ms), and the
              replica's own (usage.ttft_ms, from the request's arrival);
  errors      by gRPC status code (target: none; a stream ending without its usage counts too);
  memory      the series of the processes' PSS (shared pages divided among the processes that
              map them: the memory the platform holds; RSS counts them once per process) and
              RSS; the PSS growth after --warmup seconds (target: flat), as the change from the
              first post-warm-up sample to the last and a least-squares slope (MB/min), and by
              process; the generation replicas' block caches (AdminService.CacheStats) at each
              sample, in all and by tier, which fill up to their capacity by design, and the
              growth outside them; the same figures again from the first sample at which the
              caches are full (their last tier has evicted: `after_cache_full`), the verdict a
              bounded cache cannot blur. --replica-cache-mb 32 fills them within seconds;
  probe       with --probe, what the generation and precompute replicas hold, read from inside
              them after warm-up and at the end (bench/replica_probe.py: live tensors, malloc's
              bytes in use and free in its arenas, the engine's buffer pool, the KV slots, the
              object types that grew), then what malloc_trim(0) gives back: a growth it gives
              back was freed memory the allocator kept, not a leak.
The platform is then stopped with SIGTERM (the drain path: new requests refused, requests in
flight finish) and its exit code recorded.

    .venv/bin/python bench/load.py --clients 6 --duration 180 --warmup 60 --sample-every 5 --probe --out bench/load-results.json

(bench/load-results.json: that command on the 2-core machine, its note says how to read it; a
shorter run: --duration 60 --warmup 20. Issue 14's before/after pair:
load-tier32-before-results.json and load-tier32-after-results.json, bench/README.md.)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import grpc
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fixtures.platform import start_platform  # noqa: E402  (the tests' launcher)

from blockrag.samples import sample_documents  # noqa: E402
from blockrag.v1 import admin_pb2, admin_pb2_grpc  # noqa: E402
from blockrag.v1 import generation_pb2 as pb  # noqa: E402
from blockrag.v1 import generation_pb2_grpc  # noqa: E402

GENERATION = (("application", "generation"),)
ADMIN = (("application", "admin"),)  # the platform runs without --auth: AdminService is open
COLLECTION = "load"
QUESTIONS = ["Which town is the railway's terminus?", "When did the line open?", "Who signs the permits?",
             "What does the harbour office do?", "How often does the ferry leave?", "Where do the boats unload?"]
STOP_TIMEOUT_S = 120


@dataclass
class Call:
    kind: str  # "ask" or "ingest"
    started: float  # seconds since the measurement began
    seconds: float
    code: str  # gRPC status code name; "INCOMPLETE" for a stream without its usage message
    ttft_ms: float | None = None  # client side, asks only
    server_ttft_ms: float | None = None


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))]


def new_document(rng: random.Random, words: list[str]) -> pb.Document:
    """~120 words of the samples in a fresh order, with an id inside: new blocks every time."""
    doc_id = f"doc-{uuid.uuid4().hex[:12]}"
    start = rng.randrange(len(words) - 120)
    text = f"Report {doc_id}. " + " ".join(words[start:start + 120]) + "."
    return pb.Document(id=doc_id, text=text)


def ask(stub, rng: random.Random, max_new_tokens: int, begin: float) -> Call:
    started = time.perf_counter()
    first = usage = None
    try:
        for reply in stub.Generate(pb.GenerateRequest(collection=COLLECTION, question=rng.choice(QUESTIONS),
                                                      max_new_tokens=max_new_tokens, seed=rng.randrange(1, 1 << 30)),
                                   metadata=GENERATION, timeout=120):
            if first is None:
                first = time.perf_counter()
            if reply.done:
                usage = reply.usage
        code = "OK" if usage is not None else "INCOMPLETE"
    except grpc.RpcError as e:
        code = e.code().name
    end = time.perf_counter()
    return Call("ask", started - begin, end - started, code,
                (first - started) * 1000 if first is not None and code == "OK" else None,
                usage.ttft_ms if usage is not None else None)


def ingest(stub, rng: random.Random, words: list[str], begin: float) -> Call:
    started = time.perf_counter()
    try:
        stub.Ingest(pb.IngestRequest(collection=COLLECTION, documents=[new_document(rng, words)]),
                    metadata=GENERATION, timeout=120)
        code = "OK"
    except grpc.RpcError as e:
        code = e.code().name
    return Call("ingest", started - begin, time.perf_counter() - started, code)


def process_name(p: psutil.Process) -> str:
    """Ray names its workers in their command line (ray::ServeReplica:generation:Generation ...)."""
    cmdline = p.cmdline()
    first = cmdline[0] if cmdline else p.name()
    if first.startswith("ray::"):  # the title names the method running now: ...:Generation.handle_request
        return first.split(".")[0].split()[0]
    if len(cmdline) > 1 and Path(first).name.startswith("python"):
        return f"{Path(first).name} {Path(cmdline[1]).name}"
    return Path(first).name


def platform_memory(pid: int) -> dict[str, tuple[int, int, int]]:
    """name -> (RSS, PSS, USS) bytes of a process and each of its descendants (alike names summed;
    USS: the pages no other process maps, so PSS - USS is the process's share of shared pages:
    libraries, the model's weights, Ray's object store).
    PSS shares each shared page among the processes that map it (the model's weights, Ray's
    object store, libraries), so the PSS total is the memory the platform holds; the RSS total
    counts shared pages once per process."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {}
    out: dict[str, tuple[int, int, int]] = {}
    for p in procs:
        try:
            info = p.memory_full_info()
            name = process_name(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss, pss, uss = out.get(name, (0, 0, 0))
        out[name] = (rss + info.rss, pss + getattr(info, "pss", info.rss), uss + info.uss)
    return out


def slope_mb_per_min(samples: list[tuple[float, int]]) -> float | None:
    """Least-squares slope of RSS over time."""
    if len(samples) < 2:
        return None
    ts, ys = [t for t, _ in samples], [b / 2**20 for _, b in samples]
    mt, my = statistics.fmean(ts), statistics.fmean(ys)
    var = sum((t - mt) ** 2 for t in ts)
    return sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / var * 60 if var else None


def malloc_env(args: argparse.Namespace) -> dict[str, str]:
    """glibc's allocator settings for every process of the platform (Ray's workers inherit them)."""
    return {"MALLOC_ARENA_MAX": str(args.malloc_arena_max)} if args.malloc_arena_max else {}


def join_ray(pid: int) -> str:
    """Join the platform's own Ray cluster as a driver (for --probe); its GCS address, read from
    the platform's raylet's command line: other Ray clusters may run on the machine."""
    import ray

    for p in psutil.Process(pid).children(recursive=True):
        address = next((a.split("=", 1)[1] for a in p.cmdline() if a.startswith("--gcs-address=")), None)
        if address:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False, configure_logging=False)
            return address
    raise RuntimeError("no Ray process with --gcs-address among the platform's processes")


def probe_replicas(what: str) -> dict[str, dict]:
    """replica_probe.<what> in every Generation and Precompute replica, by replica name."""
    try:
        from ray import cloudpickle

        import replica_probe

        cloudpickle.register_pickle_by_value(replica_probe)  # the workers cannot import bench/
        return _probe_all(getattr(replica_probe, what))
    except Exception as e:  # noqa: BLE001 - a diagnostic: the load's own figures still count
        return {"error": {"what": what, "error": f"{type(e).__name__}: {e}"}}


def _probe_all(fn) -> dict[str, dict]:
    import ray
    from ray.util import list_named_actors

    names = sorted(a["name"] for a in list_named_actors(all_namespaces=True)
                   if a["name"].startswith("SERVE_REPLICA::") and a["name"].split("::")[1].split("#")[0]
                   in ("generation", "precompute"))
    actors = {a["name"]: ray.get_actor(a["name"], namespace=a["namespace"])
              for a in list_named_actors(all_namespaces=True) if a["name"] in names}
    return {name.split("::")[1]: ray.get(actor.__ray_call__.remote(fn), timeout=120) for name, actor in actors.items()}


def run(args: argparse.Namespace) -> dict:
    state = Path(tempfile.mkdtemp(prefix="blockrag-load-"))
    started = time.monotonic()
    extra = ["--answer-slots", str(args.answer_slots)]
    if args.replica_cache_mb is not None:
        extra += ["--replica-cache-bytes", str(args.replica_cache_mb << 20)]
    platform = start_platform(state, *extra, env=malloc_env(args))
    start_s = time.monotonic() - started
    words = " ".join(sample_documents().values()).split()
    with grpc.insecure_channel(platform.grpc) as channel:  # the collection every ask searches
        generation_pb2_grpc.GenerationServiceStub(channel).Ingest(pb.IngestRequest(
            collection=COLLECTION, documents=[pb.Document(id=k, text=v) for k, v in sample_documents().items()]),
            metadata=GENERATION, timeout=300)
    calls: list[Call] = []
    lock = threading.Lock()
    begin = time.perf_counter()
    deadline = begin + args.duration

    def client(i: int) -> None:
        rng = random.Random(args.seed * 1000 + i)
        with grpc.insecure_channel(platform.grpc) as channel:
            stub = generation_pb2_grpc.GenerationServiceStub(channel)
            while time.perf_counter() < deadline:
                call = (ingest(stub, rng, words, begin) if rng.random() < args.ingest_share
                        else ask(stub, rng, args.max_new_tokens, begin))
                with lock:
                    calls.append(call)

    memory: list[tuple[float, dict[str, tuple[int, int, int]]]] = []  # (seconds, name -> (RSS, PSS, USS))
    cache: list[int] = []  # the generation replicas' block caches (bytes), at each sample
    tiers: list[dict[str, int]] = []  # the same by tier name (host; device, pinned on a GPU), at each sample
    evictions: list[int] = []
    probes: dict[str, dict] = {}  # "warm" / "end" -> replica -> ReplicaProbe figures (--probe)
    ray_cluster = join_ray(platform.process.pid) if args.probe else None
    done = threading.Event()

    def sampler() -> None:
        with grpc.insecure_channel(platform.grpc) as channel:
            admin = admin_pb2_grpc.AdminServiceStub(channel)
            while True:
                memory.append((round(time.perf_counter() - begin, 2), platform_memory(platform.process.pid)))
                stats = admin.CacheStats(admin_pb2.CacheStatsRequest(), metadata=ADMIN, timeout=60)
                cache.append(sum(r.bytes for r in stats.replicas))
                capacity.append(sum(r.capacity_bytes for r in stats.replicas))
                by_tier: dict[str, int] = {}
                for r in stats.replicas:
                    for t in r.tiers:
                        by_tier[t.tier] = by_tier.get(t.tier, 0) + t.bytes
                tiers.append(by_tier)
                # blocks the replicas' last tiers dropped for room so far: > 0 once a cache is full
                evictions.append(sum(r.tiers[-1].evictions for r in stats.replicas if r.tiers))
                if ray_cluster is not None and "warm" not in probes and memory[-1][0] >= args.warmup:
                    probes["warm"] = probe_replicas("probe")
                if done.wait(args.sample_every):
                    return

    capacity: list[int] = []

    watcher = threading.Thread(target=sampler)
    watcher.start()
    clients = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    for t in clients:
        t.start()
    for t in clients:
        t.join()
    elapsed = time.perf_counter() - begin  # the last calls may end after the deadline
    done.set()
    watcher.join()
    if ray_cluster is not None:  # the load is over: what the replicas hold, then what malloc_trim gives back
        probes["end"] = probe_replicas("probe")
        probes["trim"] = probe_replicas("trim")
        import ray

        ray.shutdown()

    platform.process.send_signal(signal.SIGTERM)
    try:
        exit_code = platform.process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(platform.process.pid, signal.SIGKILL)
        exit_code = platform.process.wait()

    asks = [c for c in calls if c.kind == "ask"]
    ok = [c for c in calls if c.code == "OK"]
    ttft = [c.ttft_ms for c in asks if c.ttft_ms is not None]
    server_ttft = [c.server_ttft_ms for c in asks if c.server_ttft_ms is not None]
    mb = 2**20
    first_after = next((i for i, (t, _) in enumerate(memory) if t >= args.warmup), len(memory) - 1)
    # the memory verdict once the replicas' caches are full (their last tier has evicted) and
    # after warm-up: from then on a bounded cache cannot explain any growth
    full = next((i for i, e in enumerate(evictions) if e > 0), None)
    memory_section = {
        # [seconds, PSS MB, RSS MB] of all the platform's processes
        "total_mb": [[t, round(sum(p for _, p, _ in m.values()) / mb, 1),
                      round(sum(r for r, _, _ in m.values()) / mb, 1)] for t, m in memory],
        "replica_cache_mb": [round(b / mb, 1) for b in cache],  # at each sample, all tiers
        "replica_cache_tiers_mb": {name: [round(t.get(name, 0) / mb, 1) for t in tiers]
                                   for name in sorted({n for t in tiers for n in t})},
        "replica_cache_evictions": evictions,
        "replica_cache_capacity_mb": round(capacity[-1] / mb, 1) if capacity else None,
        "after_warmup": memory_window(memory, cache, first_after),
        "cache_full_at_s": memory[full][0] if full is not None else None,
        "after_cache_full": (memory_window(memory, cache, max(full, first_after)) if full is not None else None),
    }
    if probes:
        memory_section["probe"] = summarize_probes(probes)
    return {
        "benchmark": "load",
        "command": " ".join([".venv/bin/python bench/load.py", *sys.argv[1:]]),
        "settings": {k: getattr(args, k) for k in ("clients", "duration", "ingest_share", "max_new_tokens", "warmup",
                                                   "sample_every", "seed", "answer_slots", "replica_cache_mb",
                                                   "malloc_arena_max")},
        "machine": {"cpus": os.cpu_count(), "load_average_after": [round(x, 2) for x in os.getloadavg()]},
        "platform_start_s": round(start_s, 1),
        "elapsed_s": round(elapsed, 1),
        "requests": {"total": len(calls), "ok": len(ok), "ask": len(asks), "ingest": len(calls) - len(asks)},
        "throughput_per_s": {"all": round(len(ok) / elapsed, 3),
                             "ask": round(sum(c.code == "OK" for c in asks) / elapsed, 3),
                             "ingest": round(sum(c.code == "OK" and c.kind == "ingest" for c in calls) / elapsed, 3)},
        "ttft_ms": {"client_p50": _r(percentile(ttft, 50)), "client_p99": _r(percentile(ttft, 99)),
                    "server_p50": _r(percentile(server_ttft, 50)), "server_p99": _r(percentile(server_ttft, 99))},
        "latency_s": {kind: {"p50": _r(percentile([c.seconds for c in calls if c.kind == kind and c.code == "OK"], 50)),
                             "p99": _r(percentile([c.seconds for c in calls if c.kind == kind and c.code == "OK"], 99))}
                      for kind in ("ask", "ingest")},
        "errors_by_code": dict(Counter(c.code for c in calls if c.code != "OK")),
        "memory": memory_section,
        "sigterm_exit_code": exit_code,
    }


def memory_window(memory: list[tuple[float, dict[str, tuple[int, int, int]]]], cache: list[int], start: int) -> dict:
    """The platform's PSS from sample ``start`` to the last: first, last, max, least-squares slope,
    the growth inside the replicas' caches and outside them (target: about 0), and by process."""
    mb = 2**20
    pss = [(t, sum(p for _, p, _ in m.values())) for t, m in memory[start:]]
    if not pss:
        return {}
    cache_growth = cache[-1] - cache[start] if cache else 0
    first, last = memory[start][1], memory[-1][1]
    return {
        "from_s": pss[0][0], "first_pss_mb": round(pss[0][1] / mb, 1), "last_pss_mb": round(pss[-1][1] / mb, 1),
        "max_pss_mb": round(max(b for _, b in pss) / mb, 1), "slope_pss_mb_per_min": _r(slope_mb_per_min(pss)),
        "growth_in_replica_cache_mb": round(cache_growth / mb, 1),
        "growth_outside_replica_cache_mb": round((pss[-1][1] - pss[0][1] - cache_growth) / mb, 1),
        # name -> [PSS MB first, last, USS MB first, last], largest PSS growth first
        "by_process_pss_uss_mb": dict(sorted(
            ((name, [round(first.get(name, (0, 0, 0))[i] / mb, 1) if j == 0 else round(last[name][i] / mb, 1)
                     for i in (1, 2) for j in (0, 1)]) for name in last),
            key=lambda kv: kv[1][0] - kv[1][1])),
    }


def summarize_probes(probes: dict[str, dict]) -> dict:
    """Per replica: the probe's figures in MB after warm-up and at the end, the object types whose
    count grew most between them, and malloc_trim's effect."""
    mb = 2**20
    out = {}
    errors = [p["error"] for p in probes.values() if "error" in p]
    if errors:
        out["errors"] = errors
    for replica, end in probes.get("end", {}).items():
        if replica == "error":
            continue
        warm = probes.get("warm", {}).get(replica)
        figures = {}
        for key in ("uss", "tensors", "engine_pool", "kv_slots", "memory_tier"):
            figures[key] = [round(p[key] / mb, 1) for p in (warm, end) if p is not None]
        for key in ("in_use", "free_in_arenas", "mmapped", "arenas"):
            figures[f"malloc_{key}"] = [round(p["malloc"][key] / mb, 1) for p in (warm, end) if p is not None]
        figures["tensor_storages"] = [p["tensor_storages"] for p in (warm, end) if p is not None]
        if warm is not None:
            grew = {t: end["types"].get(t, 0) - warm["types"].get(t, 0) for t in end["types"]}
            figures["types_grown"] = dict(sorted(((t, g) for t, g in grew.items() if g > 0),
                                                 key=lambda kv: -kv[1])[:12])
        trim = probes.get("trim", {}).get(replica)
        if trim is not None:
            figures["malloc_trim_uss_mb"] = [round(trim["uss_before"] / mb, 1), round(trim["uss_after"] / mb, 1)]
        out[replica] = figures
    return out


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (calls under way finish)")
    parser.add_argument("--ingest-share", type=float, default=0.2, help="probability that a call is an Ingest")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds before memory must stay flat")
    parser.add_argument("--sample-every", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--answer-slots", type=int, default=4,
                        help="answers each generation replica decodes together (blockrag up --answer-slots; 1: one at a time)")
    parser.add_argument("--replica-cache-mb", type=int, default=None,
                        help="each generation replica's memory tier bound (blockrag up --replica-cache-bytes); "
                             "default the platform's (512 MiB): a small one fills during the run")
    parser.add_argument("--malloc-arena-max", type=int, default=0,
                        help="MALLOC_ARENA_MAX for the platform's processes (0: glibc's default, 8 per core)")
    parser.add_argument("--probe", action="store_true",
                        help="read the generation and precompute replicas' memory from inside "
                             "(bench/replica_probe.py) after warm-up and at the end, then malloc_trim")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.clients < 1 or args.duration <= 0 or not 0 <= args.ingest_share <= 1:
        parser.error("--clients >= 1, --duration > 0 and --ingest-share in [0, 1]")
    result = run(args)
    text = json.dumps(result, indent=2)
    print(json.dumps({k: v for k, v in result.items() if k != "memory"} | {"memory": {
        k: v for k, v in result["memory"].items() if k not in ("total_mb", "replica_cache_mb", "replica_cache_tiers_mb",
                                                               "replica_cache_evictions")}}, indent=2))
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
