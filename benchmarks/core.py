"""Core benchmark: accuracy, false alarms, indexing speed, latency and lookup
structures on the development corpus.

    cd /work/main && .venv/bin/python -m benchmarks.core [--quick] [--data DIR] [--out PATH]

Steps (see benchmarks/README.md for what each figure means):
  1. corpus: install the music packages when missing, write DATA/corpus.json;
  2. index the catalog split into DATA/indexes/core (all cores), timed;
  3. accuracy: excerpts of 5 s and 15 s at seeded offsets of every track, each
     under every transform, written as 16-bit WAV and queried with
     `Engine.query(bytes)` (decoding included) with min_score=0, so that every
     candidate's score is seen and any threshold can be applied afterwards;
  4. latency of 10 s clean excerpts in process and over HTTP (`simsearch serve`);
  5. exact code lookup with FAISS IndexBinaryHash, IndexBinaryMultiHash and a
     numpy sorted table, side by side.
Results: --out (JSON, written to a temporary name then renamed) and the same
path with .md (markdown tables, also printed).
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import requests
import soundfile as sf

from simsearch import audio, build, engine, features
from simsearch.config import MatchConfig

from . import corpus, lookups, report
from .transforms import TOOLS, transforms

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
LENGTHS_S = (5.0, 15.0)
LATENCY_LENGTH_S = 10.0
# Scores are sums of hit weights in (0, 1]: half steps where the threshold is chosen.
SWEEP_THRESHOLDS = tuple(x / 2 for x in range(6, 30)) + tuple(range(15, 31))
MAX_FALSE_ALARM_RATE = 0.002
SILENCE_DB = -50.0  # an excerpt quieter than this (RMS, dBFS) is drawn again
MAX_DRAWS = 20
SERVER_START_TIMEOUT_S = 60.0
ALL_MATCHES = MatchConfig(min_score=0.0)


@dataclass(frozen=True)
class Excerpt:
    """Where to cut one query: a track, a length and the k-th seeded draw."""

    track_id: str
    path: str
    in_catalog: bool
    length_s: float
    k: int

    @property
    def seed(self) -> int:
        # Stable across runs and independent of the plan's order, so the quick
        # run's excerpts (k = 0) are also the full run's first ones.
        return zlib.crc32(f"{self.track_id}|{self.length_s:g}|{self.k}".encode())


@dataclass(frozen=True)
class Cut:
    """Mono samples of an excerpt at the source's native rate."""

    y: np.ndarray
    sr: int
    start_s: float
    rms_db: float
    draws: int


# -- excerpts -----------------------------------------------------------------
def plan_excerpts(tracks: list[corpus.Track], per_track: int, lengths: tuple[float, ...]) -> list[Excerpt]:
    """`per_track` excerpts of each length of every track, catalog or not."""
    return [Excerpt(t.track_id, t.path, t.split == "catalog", length, k)
            for t in sorted(tracks, key=lambda t: t.track_id) for length in lengths for k in range(per_track)]


def rms_db(y: np.ndarray) -> float:
    return float(10.0 * np.log10(np.mean(np.square(y, dtype=np.float64)) + 1e-20))


def read_mono(path: str, start: int, frames: int) -> np.ndarray:
    z, _ = sf.read(path, start=start, frames=frames, dtype="float32", always_2d=True)
    return np.ascontiguousarray(z.mean(axis=1, dtype=np.float32))


def cut_audio(path: str, length_s: float, seed: int) -> Cut:
    """`length_s` seconds of `path`, decoded with soundfile at the file's own
    rate and mixed to mono.

    The start is drawn uniformly from `seed`; a near-silent draw (quieter than
    SILENCE_DB) is replaced by the next one, up to MAX_DRAWS.
    """
    info = sf.info(path)
    n = int(round(length_s * info.samplerate))
    if info.frames <= n:
        raise ValueError(f"{path} lasts {info.duration:.1f} s, too short for a {length_s:g} s excerpt")
    rng = np.random.default_rng(seed)
    for draw in range(1, MAX_DRAWS + 1):
        start = int(rng.integers(0, info.frames - n))
        y = read_mono(path, start, n)
        level = rms_db(y)
        if level >= SILENCE_DB:
            break
    return Cut(y, info.samplerate, start / info.samplerate, level, draw)


def cut_excerpt(ex: Excerpt, cut_s: float | None = None) -> Cut:
    """The excerpt's audio (see cut_audio): `ex.length_s` seconds, or `cut_s`
    when a transform needs more source audio than the query's length (a
    speed-up consumes `speed` seconds of source per second of query)."""
    return cut_audio(ex.path, ex.length_s if cut_s is None else cut_s, ex.seed)


def wav_bytes(y: np.ndarray, sr: int) -> bytes:
    """16-bit PCM WAV file contents (samples clipped to [-1, 1])."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(y, -1.0, 1.0), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


# -- accuracy queries ---------------------------------------------------------
RECORD_COLUMNS = ("track_id", "in_catalog", "transform", "length_s", "k", "start_s", "rms_db", "draws",
                  "top_track", "top_score", "top_query_start", "top_ref_start", "top_speed", "top_offset",
                  "truth_score", "best_wrong_score", "n_matches", "elapsed_ms")


def r4(x) -> float | None:
    """A time or score as recorded: to 1e-4 (thresholds are 0.5 apart; the
    JSON stays small); None stays None."""
    return None if x is None else round(float(x), 4)


def make_record(ex: Excerpt, transform: str, cut: Cut, res: engine.QueryResult) -> dict:
    """One query's outcome.  `top_offset` is where the top match puts the
    query's first sample in the reference (ref_start - speed * query_start),
    to compare with the true `start_s`."""
    top = res.matches[0] if res.matches else None
    truth = [m.score for m in res.matches if m.track_id == ex.track_id]
    wrong = [m.score for m in res.matches if m.track_id != ex.track_id]
    return {
        "track_id": ex.track_id, "in_catalog": ex.in_catalog, "transform": transform,
        "length_s": ex.length_s, "k": ex.k, "start_s": round(cut.start_s, 4), "rms_db": round(cut.rms_db, 1),
        "draws": cut.draws,
        "top_track": top.track_id if top else None,
        "top_score": r4(top.score) if top else 0.0,
        "top_query_start": r4(top.query_start) if top else None,
        "top_ref_start": r4(top.ref_start) if top else None,
        "top_speed": round(float(top.speed), 5) if top else None,
        "top_offset": r4(top.ref_start - top.speed * top.query_start) if top else None,
        "truth_score": r4(max(truth, default=0.0)),
        "best_wrong_score": r4(max(wrong, default=0.0)),
        "n_matches": len(res.matches),
        "elapsed_ms": round(res.elapsed_ms, 2),
    }


class _Worker:
    """Per-process state of the accuracy pool (an Engine and the transforms)."""

    engine: engine.Engine | None = None
    transforms: dict | None = None


def init_engine_worker(index_dir: str) -> None:
    """Open the index in a pool process (one FAISS thread) and compile the
    numba kernels before the first timed query."""
    faiss.omp_set_num_threads(1)
    _Worker.engine = engine.Engine(index_dir)
    noise = np.random.default_rng(0).standard_normal(3 * _Worker.engine.config.sample_rate).astype(np.float32)
    _Worker.engine.query_samples(0.1 * noise)


def _init_worker(index_dir: str, tmp_dir: str) -> None:
    init_engine_worker(index_dir)
    _Worker.transforms = transforms(Path(tmp_dir))


def transformed_wavs(ex: Excerpt, tfs: dict):
    """Cut one excerpt and yield (transform name, cut, 16-bit WAV bytes) for
    every transform of `tfs`, each seeded from the excerpt (so any benchmark
    that queries the same excerpt gets the same audio)."""
    cut = cut_excerpt(ex)
    for i, (name, fn) in enumerate(tfs.items()):
        y, sr = fn(cut.y, cut.sr, seed=ex.seed + i)
        yield name, cut, wav_bytes(y, sr)


def query_excerpt(ex: Excerpt) -> list[dict]:
    """Cut one excerpt and query it under every transform."""
    return [make_record(ex, name, cut, _Worker.engine.query(wav, ALL_MATCHES))
            for name, cut, wav in transformed_wavs(ex, _Worker.transforms)]


def run_queries(plan: list, query_fn, initializer, initargs: tuple, jobs: int, log_fn=None) -> list[dict]:
    """`query_fn(item)` (a list of records) for every item of the plan, in
    `jobs` forked processes set up by `initializer(*initargs)`; the records
    in the plan's order, with progress logged every tenth of the plan."""
    log_fn = log_fn or log
    records, t0, step = [], time.perf_counter(), max(1, len(plan) // 10)
    with mp.get_context("fork").Pool(jobs, initializer=initializer, initargs=initargs) as pool:
        for i, recs in enumerate(pool.imap(query_fn, plan, chunksize=1), 1):
            records.extend(recs)
            if i % step == 0 or i == len(plan):
                log_fn(f"accuracy: {i}/{len(plan)} excerpts, {len(records)} queries, {time.perf_counter() - t0:.0f} s")
    return records


def run_accuracy_queries(index_dir: Path, plan: list[Excerpt], tmp_dir: Path, jobs: int) -> list[dict]:
    """All accuracy queries, `jobs` processes in parallel, in the plan's order."""
    return run_queries(plan, query_excerpt, _init_worker, (str(index_dir), str(tmp_dir)), jobs)


# -- accuracy figures (pure: records in, numbers out) -------------------------
def length_key(length_s: float) -> str:
    return f"{length_s:g}s"


def is_correct(r: dict, threshold: float) -> bool:
    return r["top_track"] == r["track_id"] and r["top_score"] >= threshold


def is_wrong(r: dict, threshold: float) -> bool:
    return r["top_track"] is not None and r["top_track"] != r["track_id"] and r["top_score"] >= threshold


def by_transform_and_length(records: list[dict], names: list[str], lengths: tuple[float, ...], fn) -> dict:
    """{transform: {"5s": fn(records of that cell)}}; cells without records
    (a transform made at some lengths only) are left out."""
    out = {}
    for name in names:
        cells = {L: [r for r in records if r["transform"] == name and r["length_s"] == L] for L in lengths}
        out[name] = {length_key(L): fn(rs) for L, rs in cells.items() if rs}
    return out


def rate(records: list[dict], pred) -> float | None:
    return round(sum(map(pred, records)) / len(records), 4) if records else None


def offset_errors(records: list[dict], threshold: float) -> list[float]:
    return [abs(r["top_offset"] - r["start_s"]) for r in records if is_correct(r, threshold)]


def percentile_or_none(values: list[float], q: float, digits: int = 4) -> float | None:
    return round(float(np.percentile(values, q)), digits) if values else None


def accuracy_at(records: list[dict], threshold: float, names: list[str], lengths: tuple[float, ...]) -> dict:
    """Recall@1, wrong@1 and offset error on catalog excerpts; false alarms
    on out-of-catalog excerpts; all at one threshold."""
    cat = [r for r in records if r["in_catalog"]]
    out = [r for r in records if not r["in_catalog"]]

    def cells(rs: list[dict], fn) -> dict:
        return by_transform_and_length(rs, names, lengths, fn)

    return {
        "threshold": threshold,
        "recall_at_1": cells(cat, lambda rs: rate(rs, lambda r: is_correct(r, threshold))),
        "wrong_at_1": cells(cat, lambda rs: rate(rs, lambda r: is_wrong(r, threshold))),
        "offset_error_median_s": cells(cat, lambda rs: percentile_or_none(offset_errors(rs, threshold), 50)),
        "offset_error_p95_s": cells(cat, lambda rs: percentile_or_none(offset_errors(rs, threshold), 95)),
        "recall_at_1_by_length": {length_key(L): rate([r for r in cat if r["length_s"] == L],
                                                      lambda r: is_correct(r, threshold)) for L in lengths},
        "false_alarm_rate": rate(out, lambda r: r["top_score"] >= threshold),
        "false_alarms": sum(r["top_score"] >= threshold for r in out),
        "false_alarm_rate_by_transform": {n: rate([r for r in out if r["transform"] == n],
                                                  lambda r: r["top_score"] >= threshold) for n in names},
        "queries": {"catalog": len(cat), "out_of_catalog": len(out)},
    }


def threshold_sweep(records: list[dict], thresholds: tuple[float, ...], names: list[str],
                    lengths: tuple[float, ...]) -> list[dict]:
    cat = [r for r in records if r["in_catalog"]]
    out = [r for r in records if not r["in_catalog"]]
    rows = []
    for t in thresholds:
        rows.append({
            "threshold": t,
            "false_alarm_rate": rate(out, lambda r: r["top_score"] >= t),
            "false_alarms": sum(r["top_score"] >= t for r in out),
            "recall_at_1": by_transform_and_length(cat, names, lengths, lambda rs: rate(rs, lambda r: is_correct(r, t))),
            "recall_at_1_by_length": {length_key(L): rate([r for r in cat if r["length_s"] == L],
                                                          lambda r: is_correct(r, t)) for L in lengths},
            "wrong_at_1_rate": rate(cat, lambda r: is_wrong(r, t)),
        })
    return rows


def choose_threshold(sweep: list[dict], max_rate: float) -> dict | None:
    """The sweep row of the smallest threshold whose false-alarm rate is at most `max_rate`."""
    return next((row for row in sweep if row["false_alarm_rate"] is not None and row["false_alarm_rate"] <= max_rate),
                None)


def score_distribution(scores: list[float]) -> dict:
    s = np.asarray(scores, np.float64)
    if len(s) == 0:
        return {"n": 0}
    values, counts = np.unique(s, return_counts=True)
    return {"n": int(len(s)), "max": float(s.max()), "mean": round(float(s.mean()), 3),
            **{f"p{q}": float(np.percentile(s, q)) for q in (50, 90, 99, 99.9)},
            "histogram": {f"{v:g}": int(c) for v, c in zip(values, counts)}}


def score_summary(records: list[dict], names: list[str], lengths: tuple[float, ...], top_n: int = 10) -> dict:
    """Top scores of out-of-catalog queries (the false-alarm side), of the
    best wrong track on catalog queries and of the true track, with the worst
    out-of-catalog cases named."""
    out = [r for r in records if not r["in_catalog"]]
    worst = sorted(out, key=lambda r: -r["top_score"])[:top_n]
    cat = [r for r in records if r["in_catalog"]]
    return {
        "out_of_catalog_top_score": score_distribution([r["top_score"] for r in out]),
        "out_of_catalog_top_score_max_by_transform": {
            n: max((r["top_score"] for r in out if r["transform"] == n), default=None) for n in names},
        "catalog_best_wrong_score": score_distribution([r["best_wrong_score"] for r in cat]),
        "catalog_truth_score_median": by_transform_and_length(
            cat, names, lengths, lambda rs: percentile_or_none([r["truth_score"] for r in rs], 50, 1)),
        "worst_out_of_catalog": [{k: r[k] for k in ("track_id", "transform", "length_s", "start_s", "top_track",
                                                    "top_score")} for r in worst],
    }


# -- indexing -----------------------------------------------------------------
def build_catalog(index_dir: Path, tracks: list[corpus.Track], jobs: int) -> dict:
    """Index the catalog from scratch; decoding included in the timing."""
    if index_dir.exists():
        shutil.rmtree(index_dir)
    rep = build.build(index_dir, [(t.track_id, t.path) for t in tracks], jobs=jobs, progress=False)
    if rep.failures:
        raise RuntimeError(f"{len(rep.failures)} catalog tracks failed to index: {rep.failures[:3]}")
    stats = engine.Engine(index_dir).stats()
    return {
        "tracks": rep.tracks, "audio_seconds": round(rep.audio_seconds, 1), "wall_seconds": round(rep.wall_seconds, 2),
        "jobs": jobs,
        "x_real_time": round(rep.audio_seconds / rep.wall_seconds, 1),
        "x_real_time_per_core": round(rep.audio_seconds / rep.wall_seconds / jobs, 1),
        "vectors": stats["vectors"], "bytes_on_disk": stats["bytes_on_disk"],
        "bytes_in_memory": stats["bytes_in_memory"], "faiss_index": stats["faiss_index"],
    }


# -- latency ------------------------------------------------------------------
def latency_excerpts(tracks: list[corpus.Track], n: int) -> list[Excerpt]:
    """`n` clean 10 s catalog excerpts, on distinct tracks chosen with seed 1."""
    cat = sorted((t for t in tracks if t.split == "catalog"), key=lambda t: t.track_id)
    chosen = np.random.default_rng(1).choice(len(cat), size=min(n, len(cat)), replace=False)
    return [Excerpt(cat[i].track_id, cat[i].path, True, LATENCY_LENGTH_S, 0) for i in chosen]


def percentiles(ms: list[float]) -> dict:
    return {"n": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p95_ms": round(float(np.percentile(ms, 95)), 2), "max_ms": round(float(np.max(ms)), 2)}


def measure_in_process(eng: engine.Engine, wavs: list[bytes], truths: list[str]) -> dict:
    """p50/p95 of Engine.query(bytes) (decoding included) and of
    Engine.query_samples on audio decoded beforehand, after one warm-up query."""
    eng.query(wavs[0])
    decoded = [audio.decode_audio(w, eng.config.sample_rate) for w in wavs]
    with_decode, samples_only, correct = [], [], 0
    for w, y, truth in zip(wavs, decoded, truths):
        res = eng.query(w)
        with_decode.append(res.elapsed_ms)
        correct += bool(res.matches) and res.matches[0].track_id == truth
        samples_only.append(eng.query_samples(y).elapsed_ms)
    return {"query_bytes": percentiles(with_decode), "query_samples": percentiles(samples_only),
            "correct_at_default_threshold": correct}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(index_dir: Path, port: int, log_path: Path, threads: int = 4,
                 env: dict[str, str] | None = None, workers: int | None = None) -> subprocess.Popen:
    """`python -m simsearch serve` on 127.0.0.1 (with its default --workers
    unless given), with `env` added to this process's environment."""
    cmd = [sys.executable, "-m", "simsearch", "serve", str(index_dir), "--host", "127.0.0.1",
           "--port", str(port), "--threads", str(threads)] + (["--workers", str(workers)] if workers else [])
    with open(log_path, "wb") as log_file:
        return subprocess.Popen(cmd, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **(env or {})})


def wait_ready(proc: subprocess.Popen, url: str, log_path: Path, timeout_s: float) -> str | None:
    """None when GET url answers 200 within `timeout_s`, else why not."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            lines = log_path.read_text(errors="replace").strip().splitlines()
            last = lines[-1].strip() if lines else "no output"
            return f"server exited with code {proc.returncode}: {last} (full log: {log_path})"
        try:
            if requests.get(url, timeout=1.0).status_code == 200:
                return None
        except (requests.ConnectionError, requests.Timeout):
            pass  # not listening yet, or still loading the index: poll again
        time.sleep(0.25)
    return f"server did not answer {url} with 200 within {timeout_s:.0f} s"


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def measure_http(index_dir: Path, wavs: list[bytes], truths: list[str], tmp_dir: Path) -> dict:
    """Client-measured round trips of POST /v1/query to a real `simsearch
    serve` on 127.0.0.1, after one warm-up request; skipped (with the reason)
    when the server does not come up in time."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_dir / "serve.log"
    t0 = time.perf_counter()
    proc = start_server(index_dir, port, log_path)
    try:
        why_not = wait_ready(proc, base + "/v1/health", log_path, SERVER_START_TIMEOUT_S)
        if why_not is not None:
            log(f"HTTP latency skipped: {why_not}")
            return {"skipped": why_not}
        startup_s = time.perf_counter() - t0
        with requests.Session() as http:
            def post(w: bytes) -> tuple[float, dict]:
                t = time.perf_counter()
                resp = http.post(base + "/v1/query", files={"file": ("query.wav", w, "audio/wav")}, timeout=60)
                ms = (time.perf_counter() - t) * 1000.0
                resp.raise_for_status()
                return ms, resp.json()

            round_trips, server_ms, correct = [], [], 0
            try:
                post(wavs[0])
                for w, truth in zip(wavs, truths):
                    ms, body = post(w)
                    round_trips.append(ms)
                    server_ms.append(float(body["elapsed_ms"]))
                    correct += bool(body["matches"]) and body["matches"][0]["track_id"] == truth
            except requests.RequestException as exc:
                # Reported in the results rather than raised: the other figures stand.
                log(f"HTTP latency failed after {len(round_trips)} queries: {exc}")
                return {"failed": f"{type(exc).__name__}: {exc} (server log: {log_path})"}
        return {"round_trip": percentiles(round_trips), "server_elapsed": percentiles(server_ms),
                "startup_s": round(startup_s, 2), "threads": 4, "correct_at_default_threshold": correct}
    finally:
        stop_server(proc)


def query_probe_codes(eng: engine.Engine, wavs: list[bytes]) -> list[np.ndarray]:
    """The probe codes the engine looks up for each query (default MatchConfig)."""
    out = []
    for w in wavs:
        y = audio.decode_audio(w, eng.config.sample_rate)
        codes, *_ = features.query_probes(features.query_triplets(y, eng.config), eng.config, MatchConfig())
        out.append(codes)
    return out


# -- orchestration --------------------------------------------------------------
class PhaseClock:
    """Wall time and 1-minute load average at the end of each phase of a run.
    The load average shows whether other work shared the machine (a benchmark
    alone: ~jobs while indexing and querying, ~1 during latency and lookups)."""

    def __init__(self, bench: str):
        self.bench = bench
        self.timings: dict[str, float] = {}
        self.loads: dict[str, float] = {}

    def done(self, name: str, t0: float) -> None:
        self.timings[name] = round(time.perf_counter() - t0, 1)
        self.loads[name] = round(os.getloadavg()[0], 2)
        log(f"{name} done in {self.timings[name]} s (load {self.loads[name]})", self.bench)


def log(msg: str, bench: str = "core") -> None:
    print(f"[{bench}] {msg}", file=sys.stderr, flush=True)


def git(*args: str) -> str | None:
    """Output of a git command in the repository, None outside a git work tree."""
    proc = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def environment() -> dict:
    """Versions, machine, and the commit measured (with the engine's files that
    differ from it: results of an uncommitted engine are not the commit's)."""
    changed = git("status", "--porcelain", "--", "simsearch")
    return {"python": platform.python_version(), "numpy": np.__version__, "faiss": faiss.__version__,
            "cpu_count": os.cpu_count(), "machine": platform.machine(),
            "git_commit": git("rev-parse", "HEAD"),
            "simsearch_uncommitted": [line.split(maxsplit=1)[1] for line in changed.splitlines()] if changed else []}


def write_json(path: Path, result: dict) -> None:
    """Indented JSON, each query record on one line; written to name.tmp, then renamed."""
    rows = result["queries"]["rows"]
    body = dict(result, queries={**result["queries"], "rows": "@ROWS@"})
    text = json.dumps(body, indent=1)
    text = text.replace('"@ROWS@"', "[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n  ]")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)


def write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.core", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 excerpt per track and length, 8 latency queries")
    ap.add_argument("--data", help="data directory for corpus, indexes and temporary audio "
                                   "(default $SIMSEARCH_DATA or /work/data)")
    ap.add_argument("--out", help="JSON results (default benchmarks/results/core.json, core-quick.json with --quick); "
                                  "the markdown goes beside it with .md")
    ap.add_argument("--jobs", type=int, default=os.cpu_count(), help="processes for indexing and accuracy queries")
    add_work_arg(ap)
    return ap.parse_args(argv)


def add_work_arg(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--work", help="scratch directory for indexes, temporary audio and checkpoints "
                                   "(default: the data directory)")


def work_dir(args: argparse.Namespace, data: Path) -> Path:
    """Where a run writes its indexes (WORK/indexes), scratch audio (WORK/tmp) and checkpoints."""
    work = Path(args.work) if args.work else data
    (work / "tmp").mkdir(parents=True, exist_ok=True)
    return work


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    t_start = time.perf_counter()
    data = corpus.data_dir(args.data)
    out = Path(args.out) if args.out else RESULTS / ("core-quick.json" if args.quick else "core.json")
    work = work_dir(args, data)
    tmp_dir = work / "tmp"
    per_track = 1 if args.quick else 3
    n_latency = 8 if args.quick else 20
    clock = PhaseClock("core")
    timings, loads, phase = clock.timings, clock.loads, clock.done

    t0 = time.perf_counter()
    corpus.ensure_packages(list(TOOLS))
    tracks = corpus.build_corpus(data)
    catalog = [t for t in tracks if t.split == "catalog"]
    phase("corpus", t0)

    t0 = time.perf_counter()
    index_dir = work / "indexes" / "core"
    indexing = build_catalog(index_dir, catalog, args.jobs)
    phase("indexing", t0)

    t0 = time.perf_counter()
    names = list(transforms(tmp_dir))
    plan = plan_excerpts(tracks, per_track, LENGTHS_S)
    records = run_accuracy_queries(index_dir, plan, tmp_dir, args.jobs)
    write_text(work / f"{out.stem}-records.json", json.dumps(records))  # checkpoint: the costly part
    phase("accuracy_queries", t0)

    threshold = MatchConfig().min_score
    accuracy = accuracy_at(records, threshold, names, LENGTHS_S)
    sweep = threshold_sweep(records, SWEEP_THRESHOLDS, names, LENGTHS_S)
    chosen = choose_threshold(sweep, MAX_FALSE_ALARM_RATE)

    t0 = time.perf_counter()
    lat_plan = latency_excerpts(tracks, n_latency)
    wavs = [wav_bytes(c.y, c.sr) for c in map(cut_excerpt, lat_plan)]
    truths = [ex.track_id for ex in lat_plan]
    eng = engine.Engine(index_dir)
    latency = {"excerpt_s": LATENCY_LENGTH_S, "in_process": measure_in_process(eng, wavs, truths),
               "http": measure_http(index_dir, wavs, truths, tmp_dir)}
    phase("latency", t0)

    t0 = time.perf_counter()
    lookup_cmp = lookups.compare_lookups(eng, query_probe_codes(eng, wavs))
    phase("lookups", t0)

    timings["total"] = round(time.perf_counter() - t_start, 1)
    result = {
        "benchmark": "core",
        "mode": "quick" if args.quick else "full",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": environment(),
        "parameters": {"data": str(data), "index_dir": str(index_dir), "excerpts_per_track_and_length": per_track,
                       "lengths_s": list(LENGTHS_S), "transforms": names, "jobs": args.jobs,
                       "silence_db": SILENCE_DB, "default_threshold": threshold,
                       "sweep_thresholds": list(SWEEP_THRESHOLDS), "max_false_alarm_rate": MAX_FALSE_ALARM_RATE,
                       "latency_queries": len(wavs)},
        "timings_s": timings,
        "load_average_1min": loads,
        "corpus": corpus.summary(tracks),
        "indexing": indexing,
        "accuracy": accuracy,
        "threshold_sweep": sweep,
        "chosen_threshold": chosen,
        "scores": score_summary(records, names, LENGTHS_S),
        "latency": latency,
        "lookups": lookup_cmp,
        "queries": {"columns": list(RECORD_COLUMNS), "rows": [[r[c] for c in RECORD_COLUMNS] for r in records]},
    }
    markdown = report.markdown(result)
    write_json(out, result)
    write_text(out.with_suffix(".md"), markdown)
    print(markdown)
    log(f"wrote {out} and {out.with_suffix('.md')} in {timings['total']} s")
    return result


if __name__ == "__main__":
    main()
