"""ReplicaProbe: what holds a Serve replica's memory, read from inside the replica (bench only).

bench/load.py --probe joins the platform's Ray cluster as a driver and runs `probe` in the
Generation and Precompute replica actors through Ray's `__ray_call__` (the function is pickled by
value): no switch in the services' code. Each probe reads
  uss          the process's private memory (what the load's memory series shows);
  malloc       glibc's mallinfo2: `in_use` (bytes the program holds through malloc, tensors' data
               included: PyTorch's CPU allocator is malloc), `free_in_arenas` (freed, kept by the
               allocator: fragmentation or a high-water mark), `mmapped`, `arenas` (main heap + the
               per-thread arenas' bytes from the system);
  tensors      live torch tensors the garbage collector tracks: distinct storages' bytes (a
               lower bound: a model's weights do not show, as they are not tracked);
  engine_pool  the engines' BufferPool (freed prompt buffers kept for reuse, bounded in bytes);
  kv_slots     the answer schedulers' preallocated KV slots;
  memory_tier  the replica's tiers (Generation), bytes held;
  types        object counts by type name (the largest), to diff between probes.
`trim` runs malloc_trim(0) (memory the allocator holds free goes back to the system) and
reports USS before and after: a growth that trim returns was freed memory, not a leak.
"""

from __future__ import annotations

import ctypes
import gc
import warnings
from collections import Counter

import psutil


_MALLINFO2 = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
              "keepcost")


def _libc():
    # the structure is made here: a ctypes class does not pickle, and this module travels by value
    mallinfo2 = type("Mallinfo2", (ctypes.Structure,), {"_fields_": [(n, ctypes.c_size_t) for n in _MALLINFO2]})
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = mallinfo2
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    return libc


def _malloc() -> dict[str, int]:
    info = _libc().mallinfo2()
    return {"in_use": info.uordblks + info.hblkhd, "free_in_arenas": info.fordblks, "mmapped": info.hblkhd,
            "arenas": info.arena}


def _user(actor):
    """The deployment's instance inside Serve's ReplicaActor."""
    return actor._replica_impl._user_callable_wrapper.user_callable


def _runtimes(service) -> list:
    models = getattr(service, "models", None)
    return [entry.runtime for entry in getattr(models, "_loaded", {}).values()]


def probe(actor, types: int = 40) -> dict:
    """The figures of the module docstring, for the replica `actor` runs."""
    import torch

    gc.collect()
    service = _user(actor)
    objects = gc.get_objects()
    storages: dict[int, int] = {}
    with warnings.catch_warnings():  # isinstance on some modules' objects warns of deprecations
        warnings.simplefilter("ignore")
        tensors = [o for o in objects if isinstance(o, torch.Tensor)]
    for o in tensors:
        if o.device.type == "cpu":
            try:
                s = o.untyped_storage()
                storages[s.data_ptr()] = s.nbytes()
            except RuntimeError:  # a tensor without storage (meta, sparse)
                continue
    counts = Counter(type(o).__name__ for o in objects)
    del objects, tensors
    pool = sum(k.nbytes + v.nbytes for rt in _runtimes(service) for k, v in rt.engine.buffers._free)
    slots = 0
    for scheduler in getattr(service, "schedulers", {}).values():
        kv = getattr(getattr(scheduler, "_batch", None), "pool", None)  # None before the first answer
        if kv is not None:
            slots += kv.keys.nbytes + kv.values.nbytes
    lru = getattr(service, "lru", None)
    return {"uss": psutil.Process().memory_full_info().uss, "malloc": _malloc(),
            "tensors": sum(storages.values()), "tensor_storages": len(storages), "engine_pool": pool,
            "kv_slots": slots, "memory_tier": lru.stats().bytes if lru is not None else 0,
            "types": dict(counts.most_common(types))}


def trim(actor) -> dict:
    """USS and malloc's figures before and after malloc_trim(0)."""
    gc.collect()
    before = psutil.Process().memory_full_info().uss, _malloc()
    _libc().malloc_trim(0)
    after = psutil.Process().memory_full_info().uss, _malloc()
    return {"uss_before": before[0], "uss_after": after[0], "malloc_before": before[1], "malloc_after": after[1]}
