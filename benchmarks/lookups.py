"""Exact code lookup: the engine's FAISS table against the alternatives, and
the serving index's memory against catalog size.

    .venv/bin/python -m benchmarks.lookups [--data DIR] [--work DIR] [--replicas 2,4,8]

writes benchmarks/results/lookups.json and lookups.md.  The core benchmark
also runs `compare_lookups` (its "Exact code lookup" table).

The engine (`simsearch.index.HashIndex`) holds the catalog's codes in a
`faiss.IndexBinaryIVF` used as a hash table: inverted list = the low k bits
of the hash, stored code = the remaining high bits (one byte), lists laid out
contiguously and mapped by FAISS (`IO_FLAG_MMAP`), lookups through
`range_search_preassigned` with the list as the assignment.  Compared on the
same (code, hit id) pairs and the probes of real 10 s queries, each checked
to return exactly the hits of the structure the engine used before:

* `faiss.IndexBinaryHash` (d=64, b = the bits the hash uses): the engine's
  structure before, one bucket per code value;
* the same with d=24 (3-byte codes instead of 8);
* the engine's table sized for 8 and 32 entries per list instead of 16;
* `faiss.IndexBinaryIVF` with the same lists in FAISS's in-memory
  `ArrayInvertedLists` (160 bytes per list);
* `faiss.IndexBinaryMultiHash` with 2 tables of ceil(bits / 2) bits (in an
  `IndexBinaryIDMap`): coarser tables, many more candidates per probe;
* a numpy table: codes sorted once, two `np.searchsorted` per probe (no FAISS).

Memory is the growth of a fresh process's resident size (VmRSS of
/proc/self/status) while it builds a structure from arrays it already holds,
or while `Engine` opens an index (libraries imported first), split into
anonymous, file-backed (mostly library code run for the first time) and
shared-memory pages (the table's mapped lists).  Catalog sizes: the nested
subsets the derivatives benchmark builds (WORK/indexes/deriv-25, -50, -100),
and replicas of the core catalog: the same tracks written N times under other
track ids (real codes, N times as many; the distinct codes stay those of
3.5 h, which flatters a structure that pays per distinct code).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import multiprocessing as mp
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import faiss
import numpy as np

from simsearch import store
from simsearch.index import HashIndex, pack_ids, table_layout

Lookup = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
RESULTS = Path(__file__).resolve().parent / "results"


def catalog_codes(engine) -> tuple[np.ndarray, np.ndarray]:
    """Every stored (code, hit id) of the engine's live generation.

    Returns (codes uint64 [n], ids int64 [n]).
    """
    batches = [store.read_segment(p, engine.config) for p in store.list_segments(engine.gen_dir)]
    batch = store.TrackBatch.concat(batches)
    ids = pack_ids(batch.triplet_track_numbers(), batch.t1, batch.f1, batch.span)
    return batch.codes.astype(np.uint64), ids.astype(np.int64)


def as_binary(codes: np.ndarray, nbytes: int = 8) -> np.ndarray:
    """uint64 [n] -> uint8 [n, nbytes], the low little-endian bytes FAISS binary indexes take."""
    full = np.ascontiguousarray(codes, dtype="<u8").view(np.uint8).reshape(-1, 8)
    return np.ascontiguousarray(full[:, :nbytes])


def faiss_exact_lookup(index, nbytes: int = 8) -> Lookup:
    """Lookup through `range_search` with radius 1: stored codes equal to a probe."""

    def lookup(probes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lims, _, labels = index.range_search(as_binary(probes, nbytes), 1)
        probe = np.repeat(np.arange(len(probes), dtype=np.int64), np.diff(lims).astype(np.int64))
        return probe, labels.astype(np.int64)

    return lookup


def binary_hash(codes: np.ndarray, ids: np.ndarray, bits: int, d: int = 64) -> faiss.IndexBinaryHash:
    index = faiss.IndexBinaryHash(d, bits)
    index.add_with_ids(as_binary(codes, d // 8), ids)
    return index


def binary_multihash(codes: np.ndarray, ids: np.ndarray, nhash: int, bits: int) -> faiss.IndexBinaryIDMap:
    inner = faiss.IndexBinaryMultiHash(64, nhash, bits)
    index = faiss.IndexBinaryIDMap(inner)
    index.inner = inner  # the ID map does not own it: keep it alive with the wrapper
    index.add_with_ids(as_binary(codes), ids)
    return index


class ArrayListsIVF:
    """The engine's table, but with FAISS's in-memory ArrayInvertedLists
    (one pair of vectors per list) instead of mapped contiguous lists."""

    def __init__(self, codes: np.ndarray, ids: np.ndarray, bits: int, k: int):
        self.bits, self.k = bits, k
        self.index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(8), 8, 1 << k)
        self.index.is_trained = True
        lists, stored = self._split(codes)
        order = np.argsort(lists, kind="stable")
        ids, stored, lists = np.ascontiguousarray(ids[order]), stored[order], lists[order]
        bounds = np.flatnonzero(np.diff(lists)) + 1
        for a, b in zip(np.r_[0, bounds].tolist(), np.r_[bounds, len(lists)].tolist()):
            self.index.invlists.add_entries(int(lists[a]), b - a, faiss.swig_ptr(ids[a:b]),
                                            faiss.swig_ptr(stored[a:b]))
        self.index.ntotal = len(ids)

    def _split(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lists = (codes & np.uint64((1 << self.k) - 1)).astype(np.int64)
        return lists, np.ascontiguousarray((codes >> np.uint64(self.k)).astype(np.uint8).reshape(-1, 1))

    def lookup(self, probes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lists, stored = self._split(probes)
        lims, _, labels = self.index.range_search_preassigned(stored, 1, lists.reshape(-1, 1), None)
        return np.repeat(np.arange(len(probes), dtype=np.int64), np.diff(lims).astype(np.int64)), labels


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
                 budget_s: float = 0.2) -> tuple[float, tuple[np.ndarray, np.ndarray]]:
    """The (probe, ids) of one lookup and its fastest time in seconds.

    The first call gives the hits; a lookup faster than `budget_s` is called
    `repeats` more times and the fastest call counts (a slow one is not
    repeated: one call already measures it well and repeats would take long).
    """
    t0 = time.perf_counter()
    hits = lookup(probes)
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


RSS_FIELDS = ("VmRSS", "RssAnon", "RssFile", "RssShmem")


def rss_split() -> dict[str, int]:
    """VmRSS and its anonymous, file-backed and shared-memory parts, bytes."""
    return {f: rss_bytes(f) for f in RSS_FIELDS}


def _growth(before: dict[str, int]) -> dict[str, int]:
    after = rss_split()
    return {"rss_growth_bytes": after["VmRSS"] - before["VmRSS"],
            **{f"{f[3:].lower()}_growth_bytes": after[f] - before[f] for f in RSS_FIELDS[1:]}}


STRUCTURES = (
    ("faiss.IndexBinaryHash (engine before)", "hash", "d=64, b={bits}, range_search radius 1"),
    ("faiss.IndexBinaryHash, 3-byte codes", "hash24", "d=24, b={bits}, range_search radius 1"),
    ("engine: IndexBinaryIVF, mapped lists", "table", "nlist=2^{k}: ~16 entries per list, 1-byte codes, "
                                                      "range_search_preassigned"),
    ("the same, ~8 entries per list", "table-8", "nlist=2^{k8}"),
    ("the same, ~32 entries per list", "table-32", "nlist=2^{k32}"),
    ("the same lists in ArrayInvertedLists", "ivf-array", "nlist=2^{k}, in-memory FAISS lists"),
    ("faiss.IndexBinaryMultiHash", "multihash", "nhash=2, b={half} (in IndexBinaryIDMap), range_search radius 1"),
    ("numpy sorted + searchsorted", "sorted", "uint64 codes + int64 ids, 2 binary searches per probe"),
)


def build_structure(kind: str, codes: np.ndarray, ids: np.ndarray, bits: int):
    """One of the compared structures (see STRUCTURES)."""
    if kind == "hash":
        return binary_hash(codes, ids, bits)
    if kind == "hash24":
        return binary_hash(codes, ids, bits, d=24)
    if kind.startswith("table"):
        target = int(kind[6:] or 16)
        return HashIndex(1 << bits, codes, ids, list_target=target)
    if kind == "ivf-array":
        return ArrayListsIVF(codes, ids, bits, table_k(len(codes), bits, 16))
    if kind == "multihash":
        return binary_multihash(codes, ids, 2, math.ceil(bits / 2))
    if kind == "sorted":
        return SortedTable.build(codes, ids)
    raise ValueError(f"unknown structure {kind!r}")


def table_k(n: int, bits: int, target: int) -> int:
    """log2 of the number of lists the engine's table takes for n codes."""
    return table_layout(n, bits, target).k


def lookup_of(structure) -> Lookup:
    if isinstance(structure, (SortedTable, HashIndex, ArrayListsIVF)):
        return structure.lookup
    return faiss_exact_lookup(structure, structure.code_size)


def memory_bytes(structure) -> tuple[int, str]:
    """Size of a structure's data: its own estimate, array bytes, or FAISS's serialized bytes."""
    if isinstance(structure, HashIndex):
        return structure.memory_bytes(), "engine estimate"
    if isinstance(structure, SortedTable):
        return structure.nbytes, "array bytes"
    if isinstance(structure, ArrayListsIVF):
        structure = structure.index
    return int(faiss.serialize_index_binary(structure).nbytes), "serialized bytes"


def _rss_growth_child(kind: str, codes: np.ndarray, ids: np.ndarray, bits: int) -> dict:
    from simsearch.engine import release_free_memory

    build_structure(kind, codes[:1000], ids[:1000], bits)  # run its code once: library pages are not its data
    gc.collect()
    release_free_memory()
    before = rss_split()
    t0 = time.perf_counter()
    structure = build_structure(kind, codes, ids, bits)
    seconds = time.perf_counter() - t0
    gc.collect()
    release_free_memory()  # what stays, not the temporaries of the build
    out = _growth(before) | {"build_seconds": round(seconds, 3)}
    del structure
    return out


def rss_growth(kind: str, codes: np.ndarray, ids: np.ndarray, bits: int) -> dict:
    """How much the resident size of a fresh process grows while it builds the
    structure (its inputs already loaded, its code already run once, freed
    heap handed back): the memory it really keeps, allocator overhead
    included; and how long the build took."""
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_rss_growth_child, (kind, codes, ids, bits))


def start_libraries() -> None:
    """What a process does before the memory of opening an index is measured:
    simsearch imported and numba's runtime started.  Opening an index runs a
    numba kernel (the table's scatter), and a process's first kernel call
    starts numba's runtime, ~33 MB once, which a server pays at its first
    query anyway: library state, not the index."""
    from simsearch.index import HashIndex

    HashIndex(2, np.zeros(1, np.uint64), np.zeros(1, np.int64))


def _engine_memory_child(index_dir: str) -> dict:
    from simsearch.engine import Engine, release_free_memory  # imported first: libraries are not the index

    start_libraries()
    gc.collect()
    before = rss_split()
    t0 = time.perf_counter()
    eng = Engine(index_dir)
    seconds = time.perf_counter() - t0
    gc.collect()
    first = _growth(before)
    stats = eng.stats()
    del eng
    gc.collect()
    release_free_memory()
    before = rss_split()
    eng = Engine(index_dir)
    gc.collect()
    again = _growth(before)
    return first | {"reopen_rss_growth_bytes": again["rss_growth_bytes"], "load_seconds": round(seconds, 3),
                    "tracks": stats["tracks"], "hours": stats["hours"], "vectors": stats["vectors"],
                    "bytes_in_memory": stats["bytes_in_memory"], "faiss_index": stats["faiss_index"]}


def engine_memory(index_dir) -> dict:
    """Opening the index with `simsearch.engine.Engine` in a fresh process
    (libraries imported first): the growth of its resident size (what a
    server holds for the index, allocator overhead included) and its parts,
    the load time, and the engine's own figures; then the growth when the
    same process drops the engine and opens the index again, once the
    libraries' one-time state (code paged in, HDF5's) is there: the index's
    own cost."""
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_engine_memory_child, (str(index_dir),))


def engine_rss_growth(index_dir) -> int:
    """VmRSS growth of `engine_memory`."""
    return engine_memory(index_dir)["rss_growth_bytes"]


@contextmanager
def faiss_threads(n: int):
    """FAISS's OpenMP threads set to `n` for a while."""
    saved = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(saved)


def time_lookups(structures: dict, probe_sets: list[np.ndarray], expected: list[tuple[np.ndarray, np.ndarray]],
                 repeats: int) -> tuple[dict[str, list[float]], dict[str, bool]]:
    """Seconds per query of each structure (taking turns query by query, so
    that the machine's load falls on all alike), after checking that it finds
    the expected hits; and whether it gives them in the expected order."""
    times = {kind: [] for kind in structures}
    same_order = dict.fromkeys(structures, True)
    for probes, (want_probe, want_ids) in zip(probe_sets, expected):
        want = hit_pairs(want_probe, want_ids)
        for kind, structure in structures.items():
            if len(times[kind]) >= 3 and min(times[kind]) > 1.0:
                continue  # seconds per query: three queries measure it well enough
            seconds, (probe, found) = timed_lookup(lookup_of(structure), probes, repeats)
            if not np.array_equal(hit_pairs(probe, found), want):
                raise AssertionError(f"{kind} returns other hits than IndexBinaryHash")
            same_order[kind] &= np.array_equal(probe, want_probe) and np.array_equal(found, want_ids)
            times[kind].append(seconds)
    return times, same_order


def compare_lookups(engine, probe_sets: list[np.ndarray], repeats: int = 5, threads: int = 1) -> dict:
    """Build each structure over the engine's catalog codes, check that it
    returns the same hits as IndexBinaryHash (the engine's structure before)
    for every probe set, and time them, taking turns query by query.

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
        name, parameters, lookup_ms_median, memory_bytes (an estimate,
        serialized or array bytes), rss_growth_bytes and build_seconds
        (measured in a fresh process), same_hits and same_order (as
        IndexBinaryHash gives them: probe by probe, in insertion order).
    """
    codes, ids = catalog_codes(engine)
    bits = engine.index.bits
    reference = faiss_exact_lookup(binary_hash(codes, ids, bits))
    expected = [reference(p) for p in probe_sets]
    for probes, (want_probe, want_ids) in zip(probe_sets, expected):
        got_probe, got_ids = engine.index.lookup(probes)
        if not (np.array_equal(got_probe, want_probe) and np.array_equal(got_ids, want_ids)):
            raise AssertionError("the engine's index and a fresh IndexBinaryHash return other hits")
    with faiss_threads(threads):
        built = [(name, kind, params, build_structure(kind, codes, ids, bits)) for name, kind, params in STRUCTURES]
        times, same_order = time_lookups({kind: s for _, kind, _, s in built}, probe_sets, expected, repeats)
        ks = {"k": table_k(len(codes), bits, 16), "k8": table_k(len(codes), bits, 8),
              "k32": table_k(len(codes), bits, 32), "bits": bits, "half": math.ceil(bits / 2)}
        rows = []
        for name, kind, params, structure in built:
            memory, memory_kind = memory_bytes(structure)
            rss = rss_growth(kind, codes, ids, bits)
            rows.append({
                "name": name,
                "kind": kind,
                "parameters": params.format(**ks),
                "lookup_ms_median": round(float(np.median(times[kind])) * 1000, 3),
                "lookup_ms_max": round(float(np.max(times[kind])) * 1000, 3),
                "memory_bytes": memory,
                "memory_kind": memory_kind,
                "rss_growth_bytes": rss["rss_growth_bytes"],
                "rss_parts_bytes": {k: v for k, v in rss.items() if k.endswith("_growth_bytes")
                                    and k != "rss_growth_bytes"},
                "build_seconds": rss["build_seconds"],
                "same_hits": True,
                "same_order": bool(same_order[kind]),
            })
        del built
    setup = {"vectors": int(len(codes)), "bits": bits, "threads": threads, "repeats": repeats,
             "queries": len(probe_sets),
             "probes_per_query_median": int(np.median([len(p) for p in probe_sets])),
             "hits_per_query_median": int(np.median([len(p) for p, _ in expected])),
             "engine_memory_estimate_bytes": int(engine.index.memory_bytes()),
             "engine_index": engine.index.describe()}
    return {"setup": setup, "structures": rows}


# -- memory against catalog size --------------------------------------------------

def replica_index(src, dst: Path, times: int) -> Path:
    """An index of the tracks of `src` written `times` times, each copy under
    other track ids and numbers (same codes): a bigger catalog with the real
    code distribution.  Made once; reused when `dst` already holds it."""
    from simsearch.engine import Engine

    if (dst / "CURRENT").exists():
        return dst
    eng = Engine(src)
    batch = store.TrackBatch.concat([store.read_segment(p, eng.config) for p in store.list_segments(eng.gen_dir)])
    step = int(batch.number.max()) + 1
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # an interrupted run's
    gen = tmp / store.new_generation_name()
    gen.mkdir(parents=True)
    store.write_generation_config(gen, eng.config)
    for r in range(times):
        copy = store.TrackBatch([f"{t}#{r}" for t in batch.track_id], batch.number + r * step, batch.duration,
                                batch.path, batch.meta, batch.count, batch.codes, batch.t1, batch.f1, batch.span)
        store.write_segment(gen, r + 1, copy, eng.config)
    store.switch_generation(tmp, gen)
    tmp.rename(dst)
    return dst


def memory_rows(index_dirs: list[tuple[str, Path]], probe_sets: list[np.ndarray], repeats: int = 3) -> list[dict]:
    """For each (label, index): the engine opening it (`engine_memory`); the
    structure before (IndexBinaryHash) and the engine's table, each alone from
    the index's codes: resident growth, and lookup ms per query for
    `probe_sets` (median; one FAISS thread)."""
    from simsearch.engine import Engine

    rows = []
    for label, index_dir in index_dirs:
        row = {"catalog": label, "index_dir": str(index_dir), **engine_memory(index_dir)}
        eng = Engine(index_dir)
        codes, ids = catalog_codes(eng)
        bits = eng.index.bits
        del eng
        kinds = ("hash", "table")
        row["structure_rss_growth_bytes"] = {k: rss_growth(k, codes, ids, bits)["rss_growth_bytes"] for k in kinds}
        built = {k: build_structure(k, codes, ids, bits) for k in kinds}
        expected = [lookup_of(built["hash"])(p) for p in probe_sets]
        times, _ = time_lookups(built, probe_sets, expected, repeats)
        row["lookup_ms_median"] = {k: round(float(np.median(v)) * 1000, 3) for k, v in times.items()}
        del built, expected
        rows.append(row)
    return rows


def per_hour(rows: list[dict], value: Callable[[dict], float]) -> dict:
    """MB per hour of audio: the slope from the smallest to the largest
    catalog, and the value at the largest divided by its hours."""
    a, b = rows[0], rows[-1]
    return {"slope": round((value(b) - value(a)) / (b["hours"] - a["hours"]) / 1e6, 2),
            "at_largest": round(value(b) / b["hours"] / 1e6, 2)}


def memory_summary(rows: list[dict]) -> dict:
    figures = {
        "engine_rss": lambda r: r["rss_growth_bytes"],
        "engine_rss_reopened": lambda r: r["reopen_rss_growth_bytes"],
        "engine_anon_plus_shmem": lambda r: r["anon_growth_bytes"] + r["shmem_growth_bytes"],
        "engine_estimate": lambda r: r["bytes_in_memory"],
        "table_alone_rss": lambda r: r["structure_rss_growth_bytes"]["table"],
        "indexbinaryhash_alone_rss": lambda r: r["structure_rss_growth_bytes"]["hash"],
    }
    return {k: per_hour(rows, f) for k, f in figures.items()}


# -- the standalone run -------------------------------------------------------------

def query_probes(engine, data: Path, n_queries: int) -> list[np.ndarray]:
    """The probe codes of the core benchmark's latency queries (clean 10 s excerpts)."""
    from . import core, corpus

    plan = core.latency_excerpts(corpus.load_corpus(data), n_queries)
    wavs = [core.wav_bytes(c.y, c.sr) for c in map(core.cut_excerpt, plan)]
    return core.query_probe_codes(engine, wavs)


def run(data: Path, work: Path, replicas: list[int], n_queries: int = 20) -> dict:
    from simsearch.engine import Engine

    from . import core

    clock = core.PhaseClock("lookups")
    t_start = t0 = time.perf_counter()
    core_dir = work / "indexes" / "core"
    eng = Engine(core_dir)
    probe_sets = query_probes(eng, data, n_queries)
    comparison = compare_lookups(eng, probe_sets)
    del eng
    clock.done("compare", t0)
    t0 = time.perf_counter()
    nested = [(f"{p}%", work / "indexes" / f"deriv-{p}") for p in (25, 50, 100)]
    nested = [(label, d) for label, d in nested if (d / "CURRENT").exists()]
    copies = [("core", core_dir)] + [(f"core x{n}", replica_index(core_dir, work / "tmp" / "lookups" / f"core-x{n}", n))
                                     for n in replicas]
    with faiss_threads(1):
        nested_rows, replica_rows = memory_rows(nested, probe_sets), memory_rows(copies, probe_sets)
    clock.done("memory", t0)
    clock.timings["total"] = round(time.perf_counter() - t_start, 1)
    return {
        "benchmark": "lookups", "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "environment": core.environment(),
        "parameters": {"data": str(data), "work": str(work), "replicas": replicas, "queries": n_queries},
        "timings_s": clock.timings, "load_average_1min": clock.loads,
        "lookups": comparison,
        "memory": {"nested": {"rows": nested_rows, "per_hour": memory_summary(nested_rows) if len(nested_rows) > 1
                              else None},
                   "replicas": {"rows": replica_rows, "per_hour": memory_summary(replica_rows)}},
    }


def _mb(n: float) -> str:
    return f"{n / 1e6:,.2f}"


def markdown(r: dict) -> str:
    from . import report

    lk, st = r["lookups"], r["lookups"]["setup"]
    rows = [[s["name"], s["parameters"], s["lookup_ms_median"], f"{_mb(s['memory_bytes'])} ({s['memory_kind']})",
             _mb(s["rss_growth_bytes"]), s["build_seconds"], "yes" if s["same_hits"] else "NO",
             "yes" if s["same_order"] else "no"] for s in lk["structures"]]
    parts = [f"# Exact code lookup and the serving index's memory\n\n{report.run_line(r)}\n\n"
             f"Command: `.venv/bin/python -m benchmarks.lookups`. Engine index on the core catalog: "
             f"{st['engine_index']}.",
             f"## Lookup structures\n\n{st['vectors']:,} catalog codes ({st['bits']} bits used); the probes of "
             f"{st['queries']} 10 s queries (median {st['probes_per_query_median']:,} probes and "
             f"{st['hits_per_query_median']:,} hits per query); {st['threads']} thread, the structures taking turns "
             f"query by query, fastest of up to {st['repeats'] + 1} calls per query, median over queries. RSS "
             f"growth: a fresh process building the structure from arrays it holds, its code run once before, "
             f"freed heap handed back; build: that build's seconds.\n\n"
             + report.table(["structure", "parameters", "lookup ms / query", "memory MB", "RSS growth MB",
                             "build s", "same hits as IndexBinaryHash", "same order"], rows)]
    for key, title in (("nested", "nested catalog subsets (the derivatives benchmark's)"),
                       ("replicas", "the core catalog written N times under other track ids")):
        m = r["memory"][key]
        if not m["rows"]:
            continue
        rows = [[x["catalog"], x["tracks"], f"{x['hours']:.2f}", f"{x['vectors']:,}", _mb(x["rss_growth_bytes"]),
                 _mb(x["reopen_rss_growth_bytes"]),
                 f"{_mb(x['anon_growth_bytes'])} / {_mb(x['file_growth_bytes'])} / {_mb(x['shmem_growth_bytes'])}",
                 _mb(x["bytes_in_memory"]), _mb(x["structure_rss_growth_bytes"]["table"]),
                 _mb(x["structure_rss_growth_bytes"]["hash"]), x["load_seconds"],
                 f"{x['lookup_ms_median']['table']} / {x['lookup_ms_median']['hash']}"] for x in m["rows"]]
        text = (f"## Memory against catalog size: {title}\n\nEngine: a fresh process opening the index with "
                f"`Engine` (libraries imported first); its VmRSS growth split into anonymous / file-backed "
                f"(library code run for the first time) / shared-memory (the table's mapped lists) pages. "
                f"Reopened: the growth when that process drops the engine and opens the index again (the "
                f"libraries' one-time state already there). Alone: "
                f"a fresh process building the structure from the index's codes. Lookup: the probes of the "
                f"same {r['lookups']['setup']['queries']} queries against each, median ms per query.\n\n"
                + report.table(["catalog", "tracks", "hours", "codes", "engine RSS MB", "reopened MB",
                                "anon / file / shmem MB",
                                "engine estimate MB", "table alone MB", "IndexBinaryHash alone MB", "engine load s",
                                "lookup ms: table / IndexBinaryHash"], rows))
        if m["per_hour"]:
            ph = m["per_hour"]
            text += "\n\nMB per hour of audio (slope smallest to largest; at the largest):\n\n" + report.table(
                ["figure", "slope", "at the largest"],
                [[k.replace("_", " "), v["slope"], v["at_largest"]] for k, v in ph.items()])
        parts.append(text)
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> dict:
    from . import core, corpus

    ap = argparse.ArgumentParser(prog="python -m benchmarks.lookups", description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="data directory (default $SIMSEARCH_DATA or /work/data)")
    ap.add_argument("--work", help="where the suite's indexes are (WORK/indexes/core, deriv-*; default DATA/suite)")
    ap.add_argument("--replicas", default="2,4,8", help="sizes of the replicated core catalogs (comma-separated)")
    ap.add_argument("--queries", type=int, default=20, help="10 s queries whose probes are looked up")
    ap.add_argument("--out", default=str(RESULTS / "lookups.json"), help="JSON results; the markdown goes beside it")
    args = ap.parse_args(argv)
    data = corpus.data_dir(args.data)
    work = Path(args.work) if args.work else data / "suite"
    result = run(data, work, [int(n) for n in args.replicas.split(",") if n], args.queries)
    out = Path(args.out)
    core.write_text(out, json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    core.write_text(out.with_suffix(".md"), text)
    print(text)
    return result


if __name__ == "__main__":
    main()
