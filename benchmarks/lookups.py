"""Exact code lookup, three ways, on the same catalog codes.

The engine looks up every probe code of a query in a `faiss.IndexBinaryHash`
keyed on all the bits a code uses (one bucket per code value), with a
`range_search` of radius 1 (Hamming distance 0, i.e. equality).  This module
builds two alternatives over the same (code, hit id) pairs and checks that
they return exactly the same hits:

* `faiss.IndexBinaryMultiHash` with 2 hash tables of ceil(bits / 2) bits each,
  inside an `IndexBinaryIDMap` for the hit ids.  The two tables key on the low
  and the high half of the used bits, so together they see every bit; an
  exact match agrees on both halves, and FAISS checks the full 64-bit
  distance of each candidate, so the answer is exact.  Each table is coarser
  (2^10 buckets instead of 2^19), so a probe scans more candidates: this
  measures what dropping to smaller tables costs.
* a numpy table: codes sorted once, each probe found with `np.searchsorted`
  (two binary searches), ids stored in the same order.
"""

from __future__ import annotations

import gc
import math
import multiprocessing as mp
import time
from dataclasses import dataclass
from typing import Callable

import faiss
import numpy as np

from simsearch import store
from simsearch.index import pack_ids

Lookup = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def catalog_codes(engine) -> tuple[np.ndarray, np.ndarray]:
    """Every stored (code, hit id) of the engine's live generation.

    Returns (codes uint64 [n], ids int64 [n]).
    """
    batches = [store.read_segment(p, engine.config) for p in store.list_segments(engine.gen_dir)]
    batch = store.TrackBatch.concat(batches)
    ids = pack_ids(batch.triplet_track_numbers(), batch.t1, batch.f1, batch.span)
    return batch.codes.astype(np.uint64), ids.astype(np.int64)


def as_binary(codes: np.ndarray) -> np.ndarray:
    """uint64 [n] -> uint8 [n, 8], the little-endian bytes FAISS binary indexes take."""
    return np.ascontiguousarray(codes, dtype="<u8").view(np.uint8).reshape(-1, 8)


def faiss_exact_lookup(index) -> Lookup:
    """Lookup through `range_search` with radius 1: stored codes equal to a probe."""

    def lookup(probes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lims, _, labels = index.range_search(as_binary(probes), 1)
        probe = np.repeat(np.arange(len(probes), dtype=np.int64), np.diff(lims).astype(np.int64))
        return probe, labels.astype(np.int64)

    return lookup


def binary_hash(codes: np.ndarray, ids: np.ndarray, bits: int) -> faiss.IndexBinaryHash:
    index = faiss.IndexBinaryHash(64, bits)
    index.add_with_ids(as_binary(codes), ids)
    return index


def binary_multihash(codes: np.ndarray, ids: np.ndarray, nhash: int, bits: int) -> faiss.IndexBinaryIDMap:
    inner = faiss.IndexBinaryMultiHash(64, nhash, bits)
    index = faiss.IndexBinaryIDMap(inner)
    index.inner = inner  # the ID map does not own it: keep it alive with the wrapper
    index.add_with_ids(as_binary(codes), ids)
    return index


@dataclass(frozen=True)
class SortedTable:
    """Codes sorted once; a lookup is two binary searches per probe."""

    codes: np.ndarray  # uint64 [n], ascending
    ids: np.ndarray  # int64 [n], in the same order

    @classmethod
    def build(cls, codes: np.ndarray, ids: np.ndarray) -> "SortedTable":
        order = np.argsort(codes, kind="stable")
        return cls(np.ascontiguousarray(codes[order]), np.ascontiguousarray(ids[order]))

    @property
    def nbytes(self) -> int:
        return self.codes.nbytes + self.ids.nbytes

    def lookup(self, probes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probes = np.asarray(probes, np.uint64)
        lo = np.searchsorted(self.codes, probes, side="left")
        hi = np.searchsorted(self.codes, probes, side="right")
        count = hi - lo
        probe = np.repeat(np.arange(len(probes), dtype=np.int64), count)
        # Position k of the output reads the table at lo[probe] + (k - first output of that probe).
        first = np.repeat(np.cumsum(count) - count, count)
        pos = np.repeat(lo, count) + (np.arange(len(probe)) - first)
        return probe, self.ids[pos]


def hit_pairs(probe: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """(probe, id) pairs in a canonical order, for comparing lookups.

    Returns int64 [n, 2].
    """
    order = np.lexsort((ids, probe))
    return np.stack([probe[order], ids[order]], axis=1)


def timed_lookup(lookup: Lookup, probes: np.ndarray, repeats: int,
                 budget_s: float = 0.2) -> tuple[float, np.ndarray]:
    """Hits of one lookup and its fastest time in seconds.

    The first call gives the hits; a lookup faster than `budget_s` is called
    `repeats` more times and the fastest call counts (a slow one is not
    repeated: one call already measures it well and repeats would take long).
    """
    t0 = time.perf_counter()
    hits = hit_pairs(*lookup(probes))
    best = time.perf_counter() - t0
    for _ in range(repeats if best < budget_s else 0):
        t0 = time.perf_counter()
        lookup(probes)
        best = min(best, time.perf_counter() - t0)
    return best, hits


def rss_bytes(field: str = "VmRSS") -> int:
    """Resident set size of this process (`VmRSS`), or another size field of
    /proc/self/status such as its high-water mark `VmHWM`."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def build_structure(kind: str, codes: np.ndarray, ids: np.ndarray, bits: int):
    """One of the compared structures: "hash", "multihash" or "sorted"."""
    if kind == "hash":
        return binary_hash(codes, ids, bits)
    if kind == "multihash":
        return binary_multihash(codes, ids, 2, math.ceil(bits / 2))
    if kind == "sorted":
        return SortedTable.build(codes, ids)
    raise ValueError(f"unknown structure {kind!r}")


def _rss_growth_child(kind: str, codes: np.ndarray, ids: np.ndarray, bits: int) -> int:
    gc.collect()
    before = rss_bytes()
    structure = build_structure(kind, codes, ids, bits)
    gc.collect()
    growth = rss_bytes() - before
    del structure
    return growth


def rss_growth(kind: str, codes: np.ndarray, ids: np.ndarray, bits: int) -> int:
    """How much the resident size of a fresh process grows while it builds the
    structure (its inputs already loaded): the memory it really takes,
    allocator overhead included."""
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_rss_growth_child, (kind, codes, ids, bits))


def _engine_rss_child(index_dir: str) -> int:
    from simsearch.engine import Engine  # imported before measuring: libraries are not the index

    gc.collect()
    before = rss_bytes()
    eng = Engine(index_dir)
    gc.collect()
    growth = rss_bytes() - before
    del eng
    return growth


def engine_rss_growth(index_dir) -> int:
    """How much the resident size of a fresh process grows while it opens
    the index with `simsearch.engine.Engine` (libraries imported first): what
    a server holds for the index, allocator overhead included."""
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_engine_rss_child, (str(index_dir),))


STRUCTURES = (
    ("faiss.IndexBinaryHash", "hash", "b={bits}, range_search radius 1"),
    ("faiss.IndexBinaryMultiHash", "multihash", "nhash=2, b={half} (in IndexBinaryIDMap), range_search radius 1"),
    ("numpy sorted + searchsorted", "sorted", "uint64 codes + int64 ids, 2 binary searches per probe"),
)


def memory_bytes(structure) -> tuple[int, str]:
    """Size of a structure's data: array bytes, or FAISS's serialized bytes."""
    if isinstance(structure, SortedTable):
        return structure.nbytes, "array bytes"
    return int(faiss.serialize_index_binary(structure).nbytes), "serialized bytes"


def compare_lookups(engine, probe_sets: list[np.ndarray], repeats: int = 5, threads: int = 1) -> dict:
    """Build each structure over the engine's catalog codes, check that it
    returns the same hits as IndexBinaryHash for every probe set, and time it.

    Parameters
    ----------
    engine : simsearch.engine.Engine
    probe_sets : list of np.ndarray [uint64]
        The probe codes of each query (`simsearch.features.query_probes`).
    repeats : int
        Extra timed calls per query (see `timed_lookup`); the fastest counts,
        the median over queries is reported.
    threads : int
        OpenMP threads for FAISS during the comparison (restored afterwards).

    Returns
    -------
    dict
        "setup": sizes and settings; "structures": one dict per structure with
        name, parameters, lookup_ms_median, memory_bytes (serialized or array
        bytes), rss_growth_bytes (measured in a fresh process) and same_hits.
    """
    codes, ids = catalog_codes(engine)
    bits = engine.index.bits
    reference = faiss_exact_lookup(binary_hash(codes, ids, bits))
    expected = [hit_pairs(*reference(p)) for p in probe_sets]
    for probes, want in zip(probe_sets, expected):
        if not np.array_equal(hit_pairs(*engine.index.lookup(probes)), want):
            raise AssertionError("the engine's index and a fresh IndexBinaryHash return other hits")
    saved_threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    rows = []
    try:
        for name, kind, params in STRUCTURES:
            structure = build_structure(kind, codes, ids, bits)
            lookup = structure.lookup if isinstance(structure, SortedTable) else faiss_exact_lookup(structure)
            times = []
            for probes, want in zip(probe_sets, expected):
                seconds, got = timed_lookup(lookup, probes, repeats)
                if not np.array_equal(got, want):
                    raise AssertionError(f"{name} returns other hits than IndexBinaryHash")
                times.append(seconds)
                if len(times) >= 3 and min(times) > 1.0:
                    break  # seconds per query: three queries measure it well enough
            memory, memory_kind = memory_bytes(structure)
            rows.append({
                "name": name,
                "parameters": params.format(bits=bits, half=math.ceil(bits / 2)),
                "lookup_ms_median": round(float(np.median(times)) * 1000, 3),
                "lookup_ms_max": round(float(np.max(times)) * 1000, 3),
                "memory_bytes": memory,
                "memory_kind": memory_kind,
                "rss_growth_bytes": rss_growth(kind, codes, ids, bits),
                "same_hits": True,
            })
            del structure, lookup
    finally:
        faiss.omp_set_num_threads(saved_threads)
    setup = {"vectors": int(len(codes)), "bits": bits, "threads": threads, "repeats": repeats,
             "queries": len(probe_sets),
             "probes_per_query_median": int(np.median([len(p) for p in probe_sets])),
             "hits_per_query_median": int(np.median([len(h) for h in expected])),
             "engine_memory_estimate_bytes": int(engine.index.memory_bytes())}
    return {"setup": setup, "structures": rows}
