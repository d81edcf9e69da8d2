"""Scale ladder: query time, accuracy, memory and build time against catalog
size, up to 10,000 hours (issue 4).

    .venv/bin/python -m benchmarks.scale [--quick] [--data DIR] [--work DIR] [--hours 100,1000]

Each rung is a catalog of the real catalog tracks (the core index,
WORK/indexes/core) plus distractor tracks (benchmarks/distractors.py: real
fingerprints with every code relabelled among codes of similar popularity),
written through the real store as HDF5 segments and opened with `Engine` in
a fresh process.  At each rung: the serving table FAISS was given (nlist,
code size, entries per list), the resident memory it takes, its load time,
the bytes on disk and the time to write them; then the same real queries at
every rung (excerpts of catalog tracks and of out-of-catalog tracks, 5, 10
and 15 s, clean and transformed), timed in process on audio decoded
beforehand: p50 and p99 per length, recall@1 and false alarms at the default
threshold, and each query's peak memory.

Nothing runs that could exhaust the machine: before opening a rung, its load
and query memory are predicted from the rungs below (and from the resources
free now); a rung over the budget is recorded as not measured, with the
reason and the estimate.  The measuring process also runs under an address
space bound (RLIMIT_AS: the serving table is a shared mapping, which
RLIMIT_DATA does not count), so a wrong prediction ends in a MemoryError that
is reported, not in the kernel's OOM killer.  Distractor segments are kept
in a pool (WORK/scale/pool-KEY) and shared by the rungs (hard links), so a
larger rung writes only what the smaller ones lack, and a second run reuses
them (their write time is the one measured when they were written).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import gc
import hashlib
import json
import multiprocessing as mp
import os
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simsearch import store
from simsearch.config import FORMAT_VERSION, LIST_TARGET, FeatureConfig, MatchConfig
from simsearch.errors import SimsearchError
from simsearch.index import table_layout

from . import core, corpus, distractors as D
from .lookups import rss_bytes, rss_split, start_libraries

RESULTS = Path(__file__).resolve().parent / "results"
RUNGS_H = {"full": (10, 100, 300, 1_000, 3_000, 10_000), "quick": (10, 100)}
LENGTHS_S = (5.0, 10.0, 15.0)
TRANSFORMS = {"full": ("none", "mp3_64k", "pink_noise_10dB"), "quick": ("none", "pink_noise_10dB")}
CATALOG_STEP = {"full": 1, "quick": 3}  # every n-th catalog track gives excerpts
OUT_EXCERPTS = {"full": 2, "quick": 1}  # excerpts per out-of-catalog track and length
SEED = 4
SEGMENT_ROUNDS = 10  # a pool segment: 10 relabelled copies of every catalog track (~35 h, ~4 M triplets)
GiB = 1 << 30
# Memory: what one measuring process may take at most (RLIMIT_AS above its
# start-up size), and what it must leave to the rest of the machine.  16 GiB:
# 10,000 h's serving index (~12 GB, 11.2 GiB) and its queries, on a 24 GB machine.
MEMORY_BUDGET = {"full": 16 * GiB, "quick": 4 * GiB}
MEMORY_RESERVE = 4 * GiB
DISK_RESERVE = 15 * GiB
# Seconds of query time per rung (a random prefix of the plan is measured
# when all of it would take longer) and for the whole ladder.
QUERY_SECONDS = {"full": 360.0, "quick": 40.0}
RUN_SECONDS = {"full": 45 * 60.0, "quick": 6 * 60.0}
ALL_MATCHES = MatchConfig(min_score=0.0)
DISTRACTOR_PREFIX = "distractor/"
log = core.log


# -- the source catalog and the distractor pool ----------------------------------------

@dataclass
class Catalog:
    """The real catalog (its index's segments) and what distractors are made from."""

    index_dir: Path
    cfg: FeatureConfig
    segments: list[Path]
    batch: store.TrackBatch
    pop: D.Popularity
    sources: D.Sources

    @classmethod
    def load(cls, index_dir: Path) -> "Catalog":
        gen = store.current_generation(index_dir)
        if store.read_removed(gen):
            raise RuntimeError(f"{index_dir} has removed tracks: the scale ladder needs a freshly built catalog")
        cfg = store.read_generation_config(gen)
        segments = store.list_segments(gen)
        batch = store.TrackBatch.concat([store.read_segment(p, cfg) for p in segments])
        order = np.argsort(batch.number)
        if not np.array_equal(order, np.arange(len(order))):
            raise RuntimeError(f"{index_dir}: tracks are not stored in number order")
        pop = D.code_popularity(batch.codes, D.band_groups(batch.f1, batch.span, cfg), SEED)
        return cls(index_dir, cfg, segments, batch, pop, D.Sources.of(batch.codes, batch.count, pop))

    @property
    def n_tracks(self) -> int:
        return len(self.batch)

    @property
    def seconds(self) -> float:
        return float(self.batch.duration.sum())

    @property
    def first_number(self) -> int:
        """Track number of distractor 0 (after every real track)."""
        return int(self.batch.number.max()) + 1

    @property
    def first_seq(self) -> int:
        """Segment number of pool segment 0 (after the catalog's own)."""
        return max(int(p.name.split("-")[1]) for p in self.segments) + 1

    def source_of(self, indices: np.ndarray) -> np.ndarray:
        """The catalog track (position in the batch) that distractor i relabels: i mod the tracks."""
        return np.asarray(indices, np.int64) % self.n_tracks

    def distractors_for(self, hours: float) -> int:
        """How many distractors bring the catalog to at least `hours`."""
        need = hours * 3600.0 - self.seconds
        if need <= 0:
            return 0
        per_round = self.seconds
        rounds = int(need // per_round)
        rest = need - rounds * per_round
        within = int(np.searchsorted(np.cumsum(self.batch.duration), rest, side="left")) + 1
        return rounds * self.n_tracks + (within if rest > 0 else 0)

    def key(self) -> str:
        """What the pool's segments depend on."""
        body = json.dumps({"segments": [p.name for p in self.segments], "seed": SEED, "rounds": SEGMENT_ROUNDS,
                           "min_block": D.MIN_BLOCK, "fraction": D.BLOCK_FRACTION, "format": FORMAT_VERSION,
                           "recipe": D.RECIPE_VERSION})
        return hashlib.sha256(body.encode()).hexdigest()[:12]


def distractor_batch(cat: Catalog, indices: np.ndarray) -> store.TrackBatch:
    """Distractors `indices` as a batch to write: ids `distractor/NNNNNNN`,
    numbers after the catalog's, each with its source track's duration,
    frequencies and spans, its times mirrored and its own codes."""
    indices = np.asarray(indices, np.int64)
    tracks = cat.source_of(indices)
    codes, rows, lengths = D.distractor_codes(cat.sources, cat.pop, indices, SEED, tracks)
    b = cat.batch
    frames = np.repeat(b.duration[tracks] / cat.cfg.frame_seconds, lengths)
    return store.TrackBatch([f"{DISTRACTOR_PREFIX}{i:07d}" for i in indices], cat.first_number + indices,
                            b.duration[tracks], [""] * len(indices), ["{}"] * len(indices),
                            lengths, codes, D.mirrored_times(b.t1[rows], b.span[rows], frames), b.f1[rows],
                            b.span[rows])


def write_distractors(cat: Catalog, gen_dir: Path, seq: int, indices: np.ndarray) -> dict:
    """Make and write one segment of distractors; its file and timings."""
    t0 = time.perf_counter()
    batch = distractor_batch(cat, indices)
    t1 = time.perf_counter()
    path = store.write_segment(gen_dir, seq, batch, cat.cfg)
    t2 = time.perf_counter()
    return {"file": path.name, "distractors": [int(indices[0]), int(indices[-1]) + 1],
            "triplets": int(len(batch.codes)), "bytes": path.stat().st_size,
            "generate_seconds": round(t1 - t0, 3), "write_seconds": round(t2 - t1, 3),
            "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


class Pool:
    """Full segments of distractors, written once and shared by every rung
    (WORK/scale/pool-KEY/, with manifest.json)."""

    def __init__(self, cat: Catalog, root: Path):
        self.cat = cat
        self.dir = root / f"pool-{cat.key()}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.manifest_path = self.dir / "manifest.json"
        self.segments: dict[str, dict] = {}
        if self.manifest_path.exists():
            kept = json.loads(self.manifest_path.read_text())["segments"]
            self.segments = {j: s for j, s in kept.items() if (self.dir / s["file"]).exists()}
        self.written_now: set[str] = set()

    @property
    def size(self) -> int:
        """Distractors per pool segment."""
        return SEGMENT_ROUNDS * self.cat.n_tracks

    def segment(self, j: int) -> dict:
        """Pool segment j (distractors j*size to (j+1)*size), written when missing."""
        if str(j) not in self.segments:
            store.remove_stale_temp_files(self.dir)
            info = write_distractors(self.cat, self.dir, self.cat.first_seq + j,
                                     np.arange(j * self.size, (j + 1) * self.size))
            self.segments[str(j)] = info
            self.written_now.add(str(j))
            core.write_text(self.manifest_path, json.dumps({"key": self.cat.key(), "segments": self.segments},
                                                           indent=1))
        return self.segments[str(j)]

    def bytes_per_triplet(self) -> float:
        """On disk, as written so far (the catalog's own segments before any)."""
        segs = list(self.segments.values())
        if segs:
            return sum(s["bytes"] for s in segs) / sum(s["triplets"] for s in segs)
        return sum(p.stat().st_size for p in self.cat.segments) / len(self.cat.batch.codes)

    def seconds_per_triplet(self) -> float | None:
        segs = [s for s in self.segments.values()]
        if not segs:
            return None
        return sum(s["generate_seconds"] + s["write_seconds"] for s in segs) / sum(s["triplets"] for s in segs)


@dataclass(frozen=True)
class RungPlan:
    """What a rung holds: the catalog, `full` pool segments and a last
    segment of the `rest` distractors after them."""

    name: str
    hours_target: float
    distractors: int
    full: int
    rest: int


def plan_rung(cat: Catalog, pool: Pool, name: str, hours: float, distractors: int | None = None) -> RungPlan:
    n = cat.distractors_for(hours) if distractors is None else distractors
    return RungPlan(name, hours, n, n // pool.size, n % pool.size)


def rung_triplets(cat: Catalog, n: int) -> int:
    """Triplets of the catalog plus its first n distractors."""
    per_track = cat.batch.count
    rounds, rest = divmod(n, cat.n_tracks)
    return int(per_track.sum() * (rounds + 1) + per_track[:rest].sum())


def rung_seconds(cat: Catalog, n: int) -> float:
    rounds, rest = divmod(n, cat.n_tracks)
    return float(cat.seconds * (rounds + 1) + cat.batch.duration[:rest].sum())


def assemble_rung(cat: Catalog, pool: Pool, plan: RungPlan, root: Path, with_catalog: bool = True) -> dict:
    """The rung's index directory (ROOT/NAME): the catalog's segments (unless
    not `with_catalog`) and the pool's, hard-linked, and its own last
    segment; reused when it holds the same.  Returns its build record."""
    index_dir = root / plan.name
    segs = [pool.segment(j) for j in range(plan.full)]
    catalog = cat.segments if with_catalog else []
    want = {"catalog": [p.name for p in catalog], "pool": [s["file"] for s in segs],
            "rest": plan.rest, "pool_key": cat.key()}
    record_path = index_dir / "rung.json"
    if record_path.exists():
        record = json.loads(record_path.read_text())
        if record["holds"] == want and (index_dir / "CURRENT").exists():
            return record | {"reused": True}
    shutil.rmtree(index_dir, ignore_errors=True)
    tmp = index_dir.with_name(index_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # an interrupted run's
    gen = tmp / store.new_generation_name()
    gen.mkdir(parents=True)
    store.write_generation_config(gen, cat.cfg)
    for p in catalog:
        os.link(p, gen / p.name)
    for s in segs:
        os.link(pool.dir / s["file"], gen / s["file"])
    rest = None
    if plan.rest:
        first = plan.full * pool.size
        rest = write_distractors(cat, gen, cat.first_seq + plan.full, np.arange(first, first + plan.rest))
    store.fsync_dir(gen)
    store.switch_generation(tmp, gen)
    own = segs + ([rest] if rest else [])
    real = 1 if with_catalog else 0
    record = {
        "holds": want,
        "tracks": real * cat.n_tracks + plan.distractors, "distractors": plan.distractors,
        "hours": round((rung_seconds(cat, plan.distractors) - (1 - real) * cat.seconds) / 3600, 3),
        "triplets": rung_triplets(cat, plan.distractors) - (1 - real) * len(cat.batch.codes),
        "bytes_on_disk": store.dir_bytes(gen),
        "segments": len(catalog) + len(own),
        "generate_seconds": round(sum(s["generate_seconds"] for s in own), 2),
        "write_seconds": round(sum(s["write_seconds"] for s in own), 2),
        "pool_segments_written_now": sum(str(j) in pool.written_now for j in range(plan.full)),
    }
    core.write_text(tmp / "rung.json", json.dumps(record, indent=1))
    tmp.rename(index_dir)
    return record | {"reused": False}


def rung_counts(index_dir: Path) -> np.ndarray:
    """Triplets per code value over the rung's segments (int64 [cardinality]),
    read one segment at a time."""
    gen = store.current_generation(index_dir)
    cfg = store.read_generation_config(gen)
    counts = np.zeros(cfg.hash_cardinality, np.int64)
    for p in store.list_segments(gen):
        counts += np.bincount(store.read_segment(p, cfg, verify=False, triplets=("codes",)).codes.astype(np.int64),
                              minlength=cfg.hash_cardinality)
    return counts


def largest_segment(index_dir: Path) -> int:
    """Triplets of the rung's largest segment (from the track records alone):
    the engine reads one segment's triplets at a time while it opens the rung."""
    gen = store.current_generation(index_dir)
    return max((int(store.read_segment(p, None, verify=False, triplets=()).count.sum())
                for p in store.list_segments(gen)), default=0)


# -- the real queries ---------------------------------------------------------------------

QUERY_FIELDS = ("track_id", "in_catalog", "transform", "length_s", "k", "start_s")


def plan_queries(tracks: list[corpus.Track], mode: str) -> list[core.Excerpt]:
    """The excerpts every rung is queried with: one of each length of every
    CATALOG_STEP-th catalog track, OUT_EXCERPTS of each length of every
    out-of-catalog track (core's seeded offsets: k = 0 is core's first
    excerpt)."""
    cat = sorted((t for t in tracks if t.split == "catalog"), key=lambda t: t.track_id)[:: CATALOG_STEP[mode]]
    out = sorted((t for t in tracks if t.split != "catalog"), key=lambda t: t.track_id)
    return ([core.Excerpt(t.track_id, t.path, True, L, 0) for t in cat for L in LENGTHS_S]
            + [core.Excerpt(t.track_id, t.path, False, L, k) for t in out for L in LENGTHS_S
               for k in range(OUT_EXCERPTS[mode])])


def _prepare(args) -> list[tuple[dict, np.ndarray]]:
    """One excerpt under each of `names`, decoded at `sample_rate` as a query
    would be (16-bit WAV in between); seeded as core seeds them, so the audio
    is the core benchmark's."""
    from simsearch import audio

    from .transforms import transforms

    ex, names, tmp_dir, sample_rate = args
    cut = core.cut_excerpt(ex)
    out = []
    for i, (name, fn) in enumerate(transforms(Path(tmp_dir)).items()):
        if name in names:
            y, sr = fn(cut.y, cut.sr, seed=ex.seed + i)
            meta = {"track_id": ex.track_id, "in_catalog": ex.in_catalog, "transform": name,
                    "length_s": ex.length_s, "k": ex.k, "start_s": round(cut.start_s, 4)}
            out.append((meta, audio.decode_audio(core.wav_bytes(y, sr), sample_rate)))
    return out


def prepare_queries(plan: list[core.Excerpt], names: tuple[str, ...], work: Path, sample_rate: int,
                    jobs: int) -> Path:
    """Every query of the plan, decoded, in one file (WORK/scale/queries-KEY.npz:
    samples, offsets, meta), in a seeded random order so that any first part
    of it is a fair sample; made once."""
    key = hashlib.sha256(json.dumps([[str(getattr(ex, f)) for f in ("track_id", "length_s", "k", "in_catalog")]
                                     for ex in plan] + [list(names), sample_rate, SEED]).encode()).hexdigest()[:12]
    path = work / "scale" / f"queries-{key}.npz"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    items = [(ex, names, str(work / "tmp"), sample_rate) for ex in plan]
    with mp.get_context("fork").Pool(jobs) as pool:
        made = [q for qs in pool.imap(_prepare, items, chunksize=4) for q in qs]
    order = np.random.default_rng(SEED).permutation(len(made))
    made = [made[i] for i in order]
    offsets = np.concatenate([[0], np.cumsum([len(y) for _, y in made])]).astype(np.int64)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, samples=np.concatenate([y for _, y in made]).astype(np.float32), offsets=offsets,
             meta=np.array(json.dumps([m for m, _ in made])))
    os.replace(tmp, path)
    return path


def load_queries(path: Path) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    with np.load(path) as z:
        return z["samples"], z["offsets"], json.loads(str(z["meta"]))


# -- measuring one rung (in a fresh process) ---------------------------------------------

def _reset_peak() -> None:
    """Start a new high-water mark of resident memory (VmHWM) for this process."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def lookup_hits(y: np.ndarray, counts: np.ndarray, cfg: FeatureConfig, mcfg: MatchConfig) -> dict:
    """What a query's lookups return without a bound on them: the catalog
    entries equal to its probes, in the unit-speed pass and in the wide pass
    (the engine's two passes, Engine.query_samples), from the catalog's
    count of each code."""
    from simsearch import features

    peaks = features.query_peaks(y, cfg, mcfg)
    out = {}
    for name, fanout, m in (("narrow", mcfg.query_fanout, mcfg.narrowed()), ("wide", mcfg.wide_query_fanout, mcfg)):
        probes, *_ = features.query_probes(features.peak_triplets(peaks, cfg, fanout), cfg, m)
        out[name] = int(counts[probes.astype(np.int64)].sum())
    return out


def made_from(track_id: str, source: int, n_sources: int) -> bool:
    """Whether `track_id` names a distractor made from catalog track number
    `source` (distractor i relabels track i mod n_sources)."""
    return (source >= 0 and track_id.startswith(DISTRACTOR_PREFIX)
            and int(track_id[len(DISTRACTOR_PREFIX):]) % n_sources == source)


def query_record(meta: dict, res, peak: int, source: int, n_sources: int) -> dict:
    """One query's outcome.  Matches to a distractor made from the query's
    own track (catalog track number `source`; -1 for others) are left out
    and their best score kept apart (distractors.py: such a distractor is no
    stand-in for its source's queries)."""
    own = [m.score for m in res.matches if made_from(m.track_id, source, n_sources)]
    matches = [m for m in res.matches if not made_from(m.track_id, source, n_sources)]
    top = matches[0] if matches else None
    truth = [m.score for m in matches if m.track_id == meta["track_id"]]
    wrong = [m.score for m in matches if m.track_id != meta["track_id"]]
    return meta | {"top_track": top.track_id if top else None, "top_score": round(float(top.score), 3) if top else 0.0,
                   "truth_score": round(float(max(truth, default=0.0)), 3),
                   "best_wrong_score": round(float(max(wrong, default=0.0)), 3),
                   "own_distractor_score": round(float(max(own, default=0.0)), 3),
                   "elapsed_ms": round(res.elapsed_ms, 2), "peak_bytes": int(peak)}


def _measure(index_dir: str, queries_path: str, counts_path: str | None, budget: int, seconds: float,
             list_target: int, sources: list[str]) -> dict:
    """Runs in a spawned process: open the rung with Engine, then query it.
    `sources`: the catalog's track ids, in the order distractors are made from them."""
    import faiss

    from simsearch.engine import Engine, release_free_memory

    faiss.omp_set_num_threads(1)
    start_libraries()
    samples, offsets, meta = load_queries(Path(queries_path))
    counts = np.load(counts_path) if counts_path else None
    # Bound this process's memory: a wrong prediction ends in a MemoryError.
    # The address space, as the table FAISS maps is shared memory, which
    # RLIMIT_DATA leaves out; it grows as the resident memory does here.
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (rss_bytes("VmSize") + budget, hard))
    gc.collect()
    before = rss_split()
    _reset_peak()
    out: dict = {"memory_budget_bytes": budget}
    t0 = time.perf_counter()
    try:
        eng = Engine(index_dir, list_target=list_target)
    except (MemoryError, RuntimeError, SimsearchError) as exc:  # HDF5 reports a failed allocation as unreadable
        return out | {"failed": f"opening the index failed after {time.perf_counter() - t0:.0f} s within a memory "
                                f"budget of {budget / GiB:.1f} GiB: {type(exc).__name__}: {exc}"}
    load_s = time.perf_counter() - t0
    peak_load = rss_bytes("VmHWM") - before["VmRSS"]
    gc.collect()
    release_free_memory()
    after = rss_split()
    stats = eng.stats()
    out["load"] = {"seconds": round(load_s, 2), "peak_growth_bytes": peak_load,
                   "rss_growth_bytes": after["VmRSS"] - before["VmRSS"],
                   **{f"{f[3:].lower()}_growth_bytes": after[f] - before[f] for f in ("RssAnon", "RssFile", "RssShmem")},
                   "bytes_in_memory": stats["bytes_in_memory"]}
    out["faiss"] = {"describe": stats["faiss_index"], **stats["faiss_parameters"]}
    out["tracks"], out["hours"], out["entries"] = stats["tracks"], stats["hours"], stats["vectors"]
    noise = np.random.default_rng(0).standard_normal(3 * eng.config.sample_rate).astype(np.float32)
    eng.query_samples(0.1 * noise)  # numba kernels compiled before the first timed query
    records, stopped = [], None
    t_start = time.perf_counter()
    for i, m in enumerate(meta):
        if time.perf_counter() - t_start > seconds:
            stopped = f"the rung's query time budget ({seconds:.0f} s) ran out after {i} of {len(meta)} queries"
            break
        y = samples[offsets[i]: offsets[i + 1]]
        _reset_peak()
        rss0 = rss_bytes("VmRSS")
        try:
            res = eng.query_samples(y, ALL_MATCHES)
        except (MemoryError, RuntimeError) as exc:
            stopped = (f"query {i} ({m['length_s']:g} s, {m['transform']}) failed within the memory budget: "
                       f"{type(exc).__name__}: {exc}")
            break
        source = sources.index(m["track_id"]) if m["track_id"] in sources else -1
        records.append(query_record(m, res, rss_bytes("VmHWM") - rss0, source, len(sources)))
    out["query_seconds"] = round(time.perf_counter() - t_start, 1)
    if counts is not None:  # after the timing: what the lookups would return without the engine's bound
        for r, i in zip(records, range(len(records))):
            hits = lookup_hits(samples[offsets[i]: offsets[i + 1]], counts, eng.config, ALL_MATCHES)
            r["hits_narrow"], r["hits_wide"] = hits["narrow"], hits["wide"]
    return out | {"planned": len(meta), "stopped": stopped, "records": records}


def measure_rung(index_dir: Path, queries_path: Path, counts_path: Path | None, budget: int, seconds: float,
                 list_target: int, sources: list[str]) -> dict:
    """`_measure` in a fresh (spawned) process; a process that dies is reported."""
    with cf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as ex:
        try:
            return ex.submit(_measure, str(index_dir), str(queries_path), str(counts_path) if counts_path else None,
                             budget, seconds, list_target, sources).result()
        except cf.process.BrokenProcessPool as exc:
            return {"failed": f"the measuring process died ({exc})", "memory_budget_bytes": budget}


# -- figures (pure: records in, numbers out) ------------------------------------------------

def latency(ms: list[float]) -> dict:
    if not ms:
        return {"n": 0}
    return {"n": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1), "max_ms": round(float(np.max(ms)), 1)}


def summarize(records: list[dict], threshold: float, indexed: bool = True) -> dict:
    """Latency per length, recall@1 and false alarms at `threshold`, peak
    memory and unbounded lookups of the measured queries.  `indexed`: the
    catalog tracks are in the index (not so in a catalog of distractors
    alone, where every query is an out-of-catalog one)."""
    def known(r: dict) -> bool:
        return r["in_catalog"] and indexed

    cat = [r for r in records if known(r)]
    out = [r for r in records if not known(r)]
    keys = {core.length_key(L): L for L in LENGTHS_S}
    by_len = {k: [r for r in records if r["length_s"] == L] for k, L in keys.items()}
    fig = {
        "queries": {"measured": len(records), "catalog": len(cat), "out_of_catalog": len(out)},
        "latency": {k: latency([r["elapsed_ms"] for r in rs]) for k, rs in by_len.items()}
                   | {"all": latency([r["elapsed_ms"] for r in records])},
        "latency_catalog": {k: latency([r["elapsed_ms"] for r in rs if known(r)]) for k, rs in by_len.items()},
        "latency_out_of_catalog": {k: latency([r["elapsed_ms"] for r in rs if not known(r)])
                                   for k, rs in by_len.items()},
        "recall_at_1": {k: core.rate([r for r in cat if r["length_s"] == L], lambda r: core.is_correct(r, threshold))
                        for k, L in keys.items()} | {"all": core.rate(cat, lambda r: core.is_correct(r, threshold))},
        "recall_at_1_by_transform": {t: core.rate([r for r in cat if r["transform"] == t],
                                                  lambda r: core.is_correct(r, threshold))
                                     for t in sorted({r["transform"] for r in cat})},
        "wrong_at_1": core.rate(cat, lambda r: core.is_wrong(r, threshold)),
        "false_alarms": sum(r["top_score"] >= threshold for r in out),
        "false_alarm_rate": core.rate(out, lambda r: r["top_score"] >= threshold),
        "out_of_catalog_top_score": {q: round(float(np.percentile([r["top_score"] for r in out], q)), 2)
                                     for q in (50, 99, 100)} if out else {},
        "catalog_best_wrong_score_max": max((r["best_wrong_score"] for r in cat), default=None),
        "wrong_at_1_by_a_distractor": sum(core.is_wrong(r, threshold) and r["top_track"].startswith(DISTRACTOR_PREFIX)
                                          for r in cat),
        "own_distractor_matches_left_out": sum(r["own_distractor_score"] >= threshold for r in records
                                               if r["in_catalog"]),
        "peak_query_bytes": {"p50": int(np.percentile([r["peak_bytes"] for r in records], 50)),
                             "max": int(max(r["peak_bytes"] for r in records))} if records else {},
    }
    ten = [r for r in by_len.get("10s", []) if "hits_wide" in r]
    if ten:
        fig["hits_unbounded_10s"] = {f"{p}_p50": int(np.percentile([r[f"hits_{p}"] for r in ten], 50))
                                     for p in ("narrow", "wide")} | {"wide_max": max(r["hits_wide"] for r in ten)}
    return fig


def add_computed_serving(result: dict) -> dict:
    """Give every rung not opened `computed_serving_bytes`: the FAISS table
    its layout takes (`layout`) plus what else the engine keeps per entry
    (its estimate less its table's, e.g. the anchors verification reads),
    per entry as at the largest rung opened."""
    opened = [x for x in result["rungs"] if "load" in x]
    if not opened:
        return result
    last = opened[-1]
    other = (last["load"]["bytes_in_memory"] - last["faiss"]["memory_bytes"]) / last["entries"]
    for x in result["rungs"]:
        if "load" not in x and "layout" in x:
            x["computed_serving_bytes"] = int(x["layout"]["memory_bytes"] + other * x["triplets"])
            x["computed_other_bytes_per_entry"] = round(other, 3)
    return result


def layout_record(entries: int, bits: int, list_target: int) -> dict:
    """The table the engine sizes for `entries` codes (computed, index.table_layout)."""
    lay = table_layout(entries, bits, list_target)
    return {"nlist": lay.nlist, "k": lay.k, "code_size_bytes": lay.code_size, "list_target": list_target,
            "entries_per_list_mean": round(lay.entries_per_list, 2), "memory_bytes": lay.memory_bytes()}


def growth_exponent(rows: list[dict], value) -> float:
    """How a figure grows with the catalog: the exponent a of value ~ hours^a
    between the two largest measured rungs of distractors (1: linear, when
    fewer are measured), within [0, 1.5]."""
    pts = [(r["hours"], value(r)) for r in rows if r["kind"] == "ladder" and value(r)]
    if len(pts) < 2:
        return 1.0
    (h1, v1), (h2, v2) = pts[-2], pts[-1]
    return float(np.clip(np.log(v2 / v1) / np.log(h2 / h1), 0.0, 1.5)) if h2 > h1 else 1.0


def predict(rows: list[dict], hours: float, entries: int, table_bytes: int, segment_triplets: int) -> dict:
    """A rung's serving index, load peak and load time, and its queries'
    largest peak memory and total time.

    Serving: its FAISS table (`table_bytes`, from its layout) and the
    engine's other bytes per entry (anchors, track records) as measured at
    the largest rung opened below.  Load peak: that, and the load's own
    transient (its peak less its serving index) at that rung, scaled by the
    largest segment's triplets (`segment_triplets`) against that rung's: the
    engine reads one segment at a time.  Load time: seconds per entry at that
    rung.  With no rung opened: 100 bytes (10 serving) and 1 us an entry.
    Queries: the largest rung queried's, grown by `growth_exponent`."""
    opened = [r for r in rows if "load" in r]
    last = opened[-1] if opened else None
    if last:
        load = last["load"]
        serving = table_bytes + (load["rss_growth_bytes"] - last["faiss"]["memory_bytes"]) / last["entries"] * entries
        transient = max(load["peak_growth_bytes"] - load["rss_growth_bytes"], 0)
        peak = serving + transient * segment_triplets / max(last.get("largest_segment_triplets", 0), 1)
        sec_entry = load["seconds"] / last["entries"]
    else:
        serving, peak, sec_entry = 10.0 * entries, 100.0 * entries, 1e-6
    out = {"load_peak_bytes": int(peak), "load_seconds": round(sec_entry * entries, 1), "serving_bytes": int(serving)}
    queried = [r for r in opened if r.get("summary", {}).get("queries", {}).get("measured")]
    if queried:
        q = queried[-1]
        scale = hours / q["hours"]
        a_mem = growth_exponent(queried, lambda r: r["summary"]["peak_query_bytes"]["p50"])
        a_time = growth_exponent(queried, lambda r: r["summary"]["latency"]["all"]["p50_ms"])
        out |= {"query_peak_bytes": int(q["summary"]["peak_query_bytes"]["max"] * scale ** a_mem),
                "query_ms_mean": round(q["query_seconds"] * 1000 / q["summary"]["queries"]["measured"]
                                       * scale ** a_time, 1),
                "growth_exponents": {"query_memory": round(a_mem, 2), "query_time": round(a_time, 2)}}
    return out


def mem_available() -> int:
    with open("/proc/meminfo") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("MemAvailable:"))


# -- the ladder ------------------------------------------------------------------------------

RECORD_COLUMNS = (*QUERY_FIELDS, "top_track", "top_score", "truth_score", "best_wrong_score",
                  "own_distractor_score", "elapsed_ms", "peak_bytes", "hits_narrow", "hits_wide")


class Ladder:
    """Builds, opens and queries the rungs one after the other, within the
    run's memory, disk and time budgets."""

    def __init__(self, cat: Catalog, work: Path, queries: Path, mode: str, list_target: int):
        self.cat, self.mode, self.queries, self.list_target = cat, mode, queries, list_target
        self.root = work / "scale"
        self.rungs_dir = self.root / "rungs"
        self.pool = Pool(cat, self.root)
        self.bits = int(np.ceil(np.log2(cat.cfg.hash_cardinality)))
        self.deadline = time.perf_counter() + RUN_SECONDS[mode]
        self.threshold = MatchConfig().min_score
        self.rows: list[dict] = []
        self.records: dict[str, dict] = {}

    def remaining(self) -> float:
        return self.deadline - time.perf_counter()

    def budget(self) -> int:
        """Memory one measuring process may take now."""
        return int(min(MEMORY_BUDGET[self.mode], mem_available() - MEMORY_RESERVE))

    def base(self) -> dict:
        """The real catalog alone (the core index as built from audio)."""
        gen = store.current_generation(self.cat.index_dir)
        triplets = len(self.cat.batch.codes)
        row = {"name": "catalog", "kind": "real catalog alone", "hours_target": None, "distractors": 0,
               "tracks": self.cat.n_tracks, "hours": round(self.cat.seconds / 3600, 3), "triplets": triplets,
               "layout": layout_record(triplets, self.bits, self.list_target),
               "build": {"bytes_on_disk": store.dir_bytes(gen), "segments": len(self.cat.segments),
                         "note": "built from audio by the core index (decoding and fingerprinting)"}}
        return self._open_and_query(row, self.cat.index_dir)

    def rung(self, name: str, hours: float | None, distractors: int | None = None, with_catalog: bool = True,
             kind: str = "ladder") -> dict:
        cat, pool = self.cat, self.pool
        plan = plan_rung(cat, pool, name, hours or 0.0, distractors)
        real = cat.n_tracks if with_catalog else 0
        triplets = rung_triplets(cat, plan.distractors) - (0 if with_catalog else len(cat.batch.codes))
        row = {"name": name, "kind": kind, "hours_target": hours, "distractors": plan.distractors,
               "tracks": real + plan.distractors,
               "hours": round((rung_seconds(cat, plan.distractors) - (0 if with_catalog else cat.seconds)) / 3600, 3),
               "triplets": triplets, "layout": layout_record(triplets, self.bits, self.list_target)}
        missing = [j for j in range(plan.full) if str(j) not in pool.segments]
        new = sum(rung_triplets(cat, (j + 1) * pool.size) - rung_triplets(cat, j * pool.size) for j in missing)
        new += rung_triplets(cat, plan.distractors) - rung_triplets(cat, plan.full * pool.size)
        need = int(new * pool.bytes_per_triplet())
        free = shutil.disk_usage(self.root).free
        row["disk_estimate_bytes"] = need
        if free - need < DISK_RESERVE:
            row["not_built"] = (f"writing it needs ~{need / GiB:.1f} GiB more and {free / GiB:.1f} GiB are free; "
                                f"{DISK_RESERVE / GiB:.0f} GiB must stay free")
            return row
        per = pool.seconds_per_triplet()
        if per is not None and new * per > self.remaining():
            row["not_built"] = (f"writing it would take ~{new * per:.0f} s; {self.remaining():.0f} s of the run's "
                                f"{RUN_SECONDS[self.mode]:.0f} s remain")
            return row
        row["build"] = assemble_rung(cat, pool, plan, self.rungs_dir, with_catalog)
        log(f"{name}: {row['hours']:,.0f} h, {triplets:,} triplets, "
            + ("kept from an earlier run" if row["build"]["reused"] else f"{new:,} of them written now"), "scale")
        return self._open_and_query(row, self.rungs_dir / name)

    def _open_and_query(self, row: dict, index_dir: Path) -> dict:
        row["largest_segment_triplets"] = largest_segment(index_dir)
        pred = predict(self.rows, row["hours"], row["triplets"], row["layout"]["memory_bytes"],
                       row["largest_segment_triplets"])
        budget = self.budget()
        row["prediction"], row["memory_budget_bytes"] = pred, budget
        if pred["load_peak_bytes"] > budget:
            row["not_opened"] = (f"opening it with Engine would peak at ~{pred['load_peak_bytes'] / GiB:.1f} GiB "
                                 f"for a serving index of ~{pred['serving_bytes'] / GiB:.1f} GiB (its table's layout, "
                                 f"the other bytes per entry and the load's transient as measured at the largest "
                                 f"rung opened); the budget is {budget / GiB:.1f} GiB")
            return row
        seconds = min(QUERY_SECONDS[self.mode], self.remaining() - 2 * pred["load_seconds"] - 30)
        why_not = None
        if "query_peak_bytes" in pred and pred["query_peak_bytes"] + pred["serving_bytes"] > budget:
            why_not = (f"a query would peak at ~{pred['query_peak_bytes'] / GiB:.1f} GiB beside the index "
                       f"(~{pred['serving_bytes'] / GiB:.1f} GiB); the budget is {budget / GiB:.1f} GiB")
        elif seconds < 10:
            why_not = f"{self.remaining():.0f} s of the run's {RUN_SECONDS[self.mode]:.0f} s remain"
        if why_not:
            seconds = 0.0
            row["queries_not_measured"] = why_not
        counts = None
        if seconds > 0:
            counts = self.root / "counts.npy"
            np.save(counts, rung_counts(index_dir))
        log(f"{row['name']}: opening ({pred['load_peak_bytes'] / GiB:.1f} GiB predicted at load), "
            f"{seconds:.0f} s of queries", "scale")
        m = measure_rung(index_dir, self.queries, counts, budget, max(seconds, 0.0), self.list_target,
                         list(self.cat.batch.track_id))
        if counts is not None:
            counts.unlink()
        records = m.pop("records", [])
        row |= m
        if "load" in m:
            row["load"]["mb_per_hour"] = round(m["load"]["rss_growth_bytes"] / 1e6 / row["hours"], 3)
            row["summary"] = summarize(records, self.threshold, indexed=row["kind"] != "distractors only")
            self.records[row["name"]] = {"columns": list(RECORD_COLUMNS),
                                         "rows": [[r.get(c) for c in RECORD_COLUMNS] for r in records]}
        return row

    def add(self, row: dict) -> dict:
        self.rows.append(row)
        log(f"{row['name']}: " + ("; ".join(row[k] for k in ("not_built", "not_opened", "failed",
                                                             "queries_not_measured", "stopped") if row.get(k))
                                  or "measured"), "scale")
        return row


def run(data: Path, work: Path, mode: str, hours: tuple[float, ...], jobs: int, list_target: int) -> dict:
    from .derivatives import ensure_catalog_index

    t_start = time.perf_counter()
    clock = core.PhaseClock("scale")
    tracks = corpus.load_corpus(data)
    catalog = [t for t in tracks if t.split == "catalog"]
    core_dir = work / "indexes" / "core"
    catalog_build = ensure_catalog_index(core_dir, catalog, jobs)
    cat = Catalog.load(core_dir)
    t0 = time.perf_counter()
    queries = prepare_queries(plan_queries(tracks, mode), TRANSFORMS[mode], work, cat.cfg.sample_rate, jobs)
    clock.done("queries", t0)
    lad = Ladder(cat, work, queries, mode, list_target)
    t0 = time.perf_counter()
    lad.add(lad.base())
    # The fairness check: as many hours of distractors alone as the real catalog.
    lad.add(lad.rung("distractors-only", None, cat.n_tracks, with_catalog=False, kind="distractors only"))
    clock.done("base", t0)
    for h in hours:
        t0 = time.perf_counter()
        lad.add(lad.rung(f"{h:g}h", h))
        clock.done(f"{h:g}h", t0)
    clock.timings["total"] = round(time.perf_counter() - t_start, 1)
    _, _, meta = load_queries(queries)
    return add_computed_serving({
        "benchmark": "scale", "mode": mode, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": core.environment(),
        "parameters": {"data": str(data), "work": str(work), "rungs_hours": list(hours), "seed": SEED,
                       "lengths_s": list(LENGTHS_S), "transforms": list(TRANSFORMS[mode]),
                       "catalog_step": CATALOG_STEP[mode], "out_excerpts": OUT_EXCERPTS[mode],
                       "queries": len(meta), "threshold": lad.threshold, "list_target": list_target,
                       "max_lookup_entries": getattr(MatchConfig(), "max_lookup_entries", None),
                       "segment_distractors": lad.pool.size, "min_block": D.MIN_BLOCK,
                       "block_fraction": D.BLOCK_FRACTION, "memory_budget_bytes": MEMORY_BUDGET[mode],
                       "memory_reserve_bytes": MEMORY_RESERVE, "disk_reserve_bytes": DISK_RESERVE,
                       "query_seconds_per_rung": QUERY_SECONDS[mode], "run_seconds": RUN_SECONDS[mode],
                       "ram_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
                       "catalog_track_ids": list(cat.batch.track_id)},
        "timings_s": clock.timings, "load_average_1min": clock.loads,
        "catalog_build": catalog_build,
        "popularity": {"codes": len(cat.pop.by_rank), "blocks": cat.pop.n_blocks,
                       "top_counts": cat.pop.counts[:5].tolist()},
        "rungs": lad.rows,
        "records": lad.records,
    })


# -- report ----------------------------------------------------------------------------------

def _mb(n: float | None) -> str:
    return "-" if n is None else f"{n / 1e6:,.1f}"


def _lat(row: dict, length: str) -> str:
    x = row.get("summary", {}).get("latency", {}).get(length, {})
    return f"{x['p50_ms']:,.0f} / {x['p99_ms']:,.0f}" if x.get("n") else "-"


def _why(row: dict) -> str:
    return next((row[k] for k in ("not_built", "not_opened", "failed", "queries_not_measured") if row.get(k)), "")


def rung_label(row: dict) -> str:
    return {"real catalog alone": "catalog (real)", "distractors only": "distractors only"}.get(row["kind"],
                                                                                              row["name"])


def ladder_table(r: dict) -> str:
    from . import report

    rows = []
    for x in r["rungs"]:
        faiss_p = x.get("faiss") or x.get("layout") or {}
        computed = "faiss" not in x
        b = x.get("build", {})
        s = x.get("summary", {})
        rows.append([
            rung_label(x), f"{x['hours']:,.1f}", f"{x['tracks']:,}", f"{x['triplets'] / 1e6:,.1f}",
            (f"2^{faiss_p['k']}, {faiss_p['code_size_bytes']} B, {faiss_p['entries_per_list_mean']:g}"
             + (" (computed)" if computed else "")) if faiss_p else "-",
            (f"{x['load']['rss_growth_bytes'] / 1e6:,.0f} ({x['load']['mb_per_hour']:.2f})" if "load" in x
             else (f"~{x['computed_serving_bytes'] / 1e6:,.0f} ({x['computed_serving_bytes'] / 1e6 / x['hours']:.2f}) "
                   "computed" if "computed_serving_bytes" in x else "-")),
            f"{_mb(b['bytes_on_disk'])} ({b['bytes_on_disk'] / 1e6 / x['hours']:.2f})" if "bytes_on_disk" in b else "-",
            (f"{b['generate_seconds'] + b['write_seconds']:,.1f}" if "write_seconds" in b else "audio")
            + (f" + {x['load']['seconds']:,.1f}" if "load" in x else ""),
            _lat(x, "5s"), _lat(x, "10s"), _lat(x, "15s"),
            report.pct(s.get("recall_at_1", {}).get("all")),
            f"{s['false_alarms']} / {s['queries']['out_of_catalog']}" if s else "-",
            _mb(s["peak_query_bytes"]["max"]) if s.get("peak_query_bytes") else "-",
            f"{s['wrong_at_1_by_a_distractor']}" if s else "-",
            f"{s['hits_unbounded_10s']['wide_p50'] / 1e6:,.2f}" if "hits_unbounded_10s" in s else "-",
        ])
    return report.table(["catalog", "hours", "tracks", "M triplets", "FAISS lists (nlist, code, entries/list)",
                         "serving index MB (MB/h)", "disk MB (MB/h)", "build s (write + load)",
                         "5 s p50 / p99 ms", "10 s p50 / p99 ms", "15 s p50 / p99 ms", "recall@1",
                         "false alarms", "query peak MB", "wrong@1 by a distractor",
                         "10 s hits w/o bound (M, p50)"], rows)


def recall_against(r: dict, name: str, ref: str = "100h") -> tuple[float, float, int] | None:
    """Recall@1 of rung `name` and of rung `ref` on the same queries: the
    first ones measured at both (each rung measures a first part of one
    order); (recall, its reference, catalog queries)."""
    a, b = _records(r, name), _records(r, ref)
    n = min(len(a), len(b))
    if not n:
        return None
    t = r["parameters"]["threshold"]
    cat_a = [x for x in a[:n] if x["in_catalog"]]
    cat_b = [x for x in b[:n] if x["in_catalog"]]
    return (core.rate(cat_a, lambda x: core.is_correct(x, t)), core.rate(cat_b, lambda x: core.is_correct(x, t)),
            len(cat_a))


def bars_section(r: dict) -> str:
    from . import report

    rows = {x["name"]: x for x in r["rungs"]}
    top = rows.get("10000h")
    measured = [x for x in r["rungs"] if x["kind"] == "ladder" and x.get("summary", {}).get("queries", {})
                .get("measured")]
    largest = measured[-1] if measured else None

    def fig(x: dict | None) -> list[str]:
        if x is None or "summary" not in x:
            return ["not measured"] * 4
        s, lat = x["summary"], x["summary"]["latency"]["10s"]
        rec = recall_against(r, x["name"])
        return [f"{lat['p50_ms']:,.0f} / {lat['p99_ms']:,.0f} ms ({lat['n']} queries)" if lat.get("n") else "-",
                f"{report.pct(rec[0])} against {report.pct(rec[1])} at 100 h ({100 * (rec[0] - rec[1]):+.1f} "
                f"points; the same {rec[2]} catalog queries)" if rec else "-",
                f"{report.pct(s['false_alarm_rate'], 2)} ({s['false_alarms']} of {s['queries']['out_of_catalog']}; "
                f"a lower bound)",
                f"{x['load']['mb_per_hour']:.2f} MB/h"]

    head = ["bar (issue 4, at 10,000 h)", "at 10,000 h"] + (
        [f"largest measured: {largest['hours']:,.0f} h"] if largest and largest is not top else [])
    bars = ["10 s query p50 <= 100 ms, p99 <= 300 ms (in process)", "recall@1 within 1 point of 100 h's",
            "false alarms <= 0.2%", "serving index <= 1.5 MB per hour"]
    a, b = fig(top), fig(largest) if largest and largest is not top else None
    table = report.table(head, [[bar, a[i]] + ([b[i]] if b else []) for i, bar in enumerate(bars)])
    note = ""
    if top is None or "summary" not in top:
        note = "\n\n10,000 h: " + (_why(top) if top else "not in this run's ladder") + "."
        if top and "computed_serving_bytes" in top:
            c = top["computed_serving_bytes"]
            note += (f" Its serving index, computed: {c / 1e6:,.0f} MB ({c / 1e6 / top['hours']:.2f} MB/h: the FAISS "
                     f"table of its layout, {top['layout']['memory_bytes'] / 1e6 / top['hours']:.2f} MB/h, and the "
                     f"engine's other {top['computed_other_bytes_per_entry']:.2f} bytes per entry as at the "
                     f"largest rung opened).")
    return "## Bars\n\n" + table + note


def fairness_section(r: dict) -> str:
    from . import report

    rows = {x["kind"]: x for x in r["rungs"]}
    real, dis = rows.get("real catalog alone"), rows.get("distractors only")
    if not real or not dis or "summary" not in real or "summary" not in dis:
        return "## Are distractors fair?\n\nNot measured in this run."
    t = r["parameters"]["threshold"]
    out_real = [x for x in _records(r, real["name"]) if not x["in_catalog"]]
    out_dis = [x for x in _records(r, dis["name"]) if not x["in_catalog"]]
    cat_dis = [x for x in _records(r, dis["name"]) if x["in_catalog"]]

    def col(rs: list[dict], key: str = "top_score", hits: bool = True) -> list:
        top = [x[key] for x in rs]
        h = [x["hits_wide"] for x in rs if x.get("hits_wide") is not None] if hits else []
        return [len(rs), f"{np.median(h) / 1e3:,.0f}" if h else "-", f"{np.percentile(top, 50):.2f}",
                f"{np.percentile(top, 99):.2f}", f"{max(top):.2f}", sum(x >= t for x in top)]

    table = report.table(["queries", "n", "wide-pass hits w/o bound (k, median)", "best score p50", "p99", "max",
                          f">= T = {t:g}"],
                         [["out-of-catalog, against the real catalog"] + col(out_real),
                          ["out-of-catalog, against the distractors"] + col(out_dis),
                          ["catalog excerpts, against other tracks' distractors"] + col(cat_dis),
                          ["catalog excerpts, against their own track's distractor (left out of every figure)"]
                          + col(cat_dis, "own_distractor_score", hits=False)])
    leaks = sorted({x["track_id"] for x in cat_dis if x["own_distractor_score"] >= t})
    per_rung = ", ".join(f"{rung_label(x)} {x['summary']['own_distractor_matches_left_out']}"
                         for x in r["rungs"] if x["kind"] == "ladder" and "summary" in x)
    return ("## Are distractors fair?\n\nThe real catalog (the core index, "
            f"{real['hours']:.2f} h) against one distractor of each of its tracks alone (the same hours and "
            "triplets, time mirrored, every code relabelled): the work a query's lookups would do without the "
            "engine's bound (the entries equal to its wide pass's probes) and the best chance score, which "
            "decides false alarms. The lookup work is the same; chance scores are lower against distractors, so "
            "the false alarms of the ladder are a lower bound (distractors do not keep how codes follow one "
            "another in music; benchmarks/README.md).\n\n" + table
            + f"\n\nCatalog excerpts scoring >= T against a distractor of their own track: "
              f"{', '.join(leaks) or 'none'}. Such matches are left out of every figure, and counted; per rung "
              f"(catalog excerpts with one >= T): {per_rung or '-'}.")


def matches_section(r: dict) -> str:
    """Every false alarm and wrong top match >= T, with the source of a distractor."""
    from . import report

    t = r["parameters"]["threshold"]
    ids = r["parameters"].get("catalog_track_ids")

    def source(track: str) -> str:
        if ids and track.startswith(DISTRACTOR_PREFIX):
            return f"{track} (made from {ids[int(track[len(DISTRACTOR_PREFIX):]) % len(ids)]})"
        return track

    rows = []
    for x in r["rungs"]:
        indexed = x["kind"] != "distractors only"
        for q in _records(r, x["name"]):
            if q["top_score"] >= t and q["top_track"] != q["track_id"]:
                kind = "wrong@1" if q["in_catalog"] and indexed else "false alarm"
                rows.append([rung_label(x), kind, q["track_id"], q["transform"], f"{q['length_s']:g} s",
                             source(q["top_track"]), f"{q['top_score']:.2f}"])
    if not rows:
        return "## False alarms and wrong matches\n\nNone at any rung."
    return ("## False alarms and wrong matches\n\nEvery query whose top match >= T is not its own track "
            "(matches to a distractor of the query's own track left out).\n\n"
            + report.table(["catalog", "", "query track", "transform", "length", "top match", "score"], rows))


def _records(r: dict, name: str) -> list[dict]:
    t = r["records"].get(name)
    return [dict(zip(t["columns"], row)) for row in t["rows"]] if t else []


def markdown(r: dict) -> str:
    from . import report

    p = r["parameters"]
    not_measured = [f"- {rung_label(x)} ({x['hours']:,.0f} h): {_why(x)}." for x in r["rungs"] if _why(x)]
    stopped = [f"- {rung_label(x)}: {x['stopped']}." for x in r["rungs"] if x.get("stopped")]
    parts = [
        f"# Scale ladder ({r['mode']})\n\n{report.run_line(r)}\n\n"
        f"Command: `.venv/bin/python -m benchmarks.scale{' --quick' if r['mode'] == 'quick' else ''}` "
        f"(or the suite's part `scale`). Each catalog: the {r['rungs'][0]['tracks']} real catalog tracks plus "
        f"distractors (real fingerprints, codes relabelled among codes of similar popularity; see "
        f"benchmarks/README.md). Queries: {p['queries']} real excerpts ({', '.join(f'{L:g}' for L in p['lengths_s'])} s; "
        f"{', '.join(p['transforms'])}), the same at every rung, in a seeded order, decoded beforehand, one at a "
        f"time with `Engine.query_samples` in a fresh process (one FAISS thread); the engine's bound on the "
        f"entries a query's pass reads: {p['max_lookup_entries']:,}. Threshold T = {p['threshold']:g}.",
        bars_section(r),
        "## The ladder\n\n" + ladder_table(r) + "\n\nServing index: growth of the measuring process's resident "
        "memory while `Engine` opens the rung (after freeing what loading used); computed, for rungs not opened: "
        "`index.table_layout(entries).memory_bytes()` plus the engine's other bytes per entry (its estimate "
        "less its table's: the anchors verification reads) as at the largest rung opened. Build: seconds to "
        "make and write the "
        "distractors' HDF5 segments (made once and shared by the rungs: each rung counts all of its own), then "
        "`Engine`'s load (reading and checking every segment, building the FAISS table). Recall@1: catalog "
        "excerpts whose top match is their track at >= T; false alarms: out-of-catalog excerpts with a match "
        ">= T (matches to a distractor made from the excerpt's own track left out: see the last section). "
        "Wrong@1 by a distractor: catalog excerpts whose top match >= T is a distractor. "
        "Query peak: the largest growth of resident memory during one query. Hits w/o bound: the catalog "
        "entries equal to a 10 s query's wide-pass probes (what its lookups would return if the engine did not "
        "bound them).",
        "## Not measured\n\n" + ("\n".join(not_measured + stopped) if not_measured or stopped else "Every rung "
                                                                                                 "was measured."),
        matches_section(r),
        fairness_section(r),
    ]
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=f"rungs {RUNGS_H['quick']} h and fewer queries "
                                                          "(a few minutes)")
    ap.add_argument("--data", help="data directory (default $SIMSEARCH_DATA or /work/data)")
    core.add_work_arg(ap)
    ap.add_argument("--jobs", type=int, default=os.cpu_count(), help="processes to build the catalog and the queries")
    ap.add_argument("--hours", help="comma-separated rungs in hours (default: "
                                    f"{','.join(map(str, RUNGS_H['full']))}; with --quick "
                                    f"{','.join(map(str, RUNGS_H['quick']))})")
    ap.add_argument("--list-target", type=int, default=LIST_TARGET,
                    help=f"the engine's entries per inverted list (default {LIST_TARGET})")
    ap.add_argument("--out", help="JSON results (default benchmarks/results/scale.json, scale-quick.json with "
                                  "--quick); the markdown goes beside it")
    args = ap.parse_args(argv)
    mode = "quick" if args.quick else "full"
    data = corpus.data_dir(args.data)
    work = core.work_dir(args, data)
    hours = tuple(float(h) for h in args.hours.split(",")) if args.hours else RUNGS_H[mode]
    out = Path(args.out) if args.out else RESULTS / ("scale-quick.json" if args.quick else "scale.json")
    result = run(data, work, mode, hours, args.jobs, args.list_target)
    write_json(out, result)
    text = markdown(result)
    core.write_text(out.with_suffix(".md"), text)
    print(text)
    log(f"wrote {out} and {out.with_suffix('.md')} in {result['timings_s']['total']} s", "scale")
    return result


def write_json(path: Path, result: dict) -> None:
    """Indented JSON, each query record on one line."""
    records = result["records"]
    body = dict(result, records="@RECORDS@")
    text = json.dumps(body, indent=1)
    rec = "{\n" + ",\n".join(
        f'  {json.dumps(name)}: {{"columns": {json.dumps(t["columns"])}, "rows": [\n'
        + ",\n".join("   " + json.dumps(row) for row in t["rows"]) + "\n  ]}" for name, t in records.items()) + "\n }"
    path.parent.mkdir(parents=True, exist_ok=True)
    core.write_text(path, text.replace('"@RECORDS@"', rec) + "\n")


if __name__ == "__main__":
    main()
