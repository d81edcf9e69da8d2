"""Indexing speed by stage: decode and resample, features, index insert.

The catalog tracks go one at a time through simsearch's public functions, in
one fresh process (spawned, so its peak memory is its own), each stage timed
on its own:

  decode      `audio.decode_audio(path, sample_rate, prefer_ffmpeg=True)`, as
              `simsearch build` decodes (ffmpeg for Ogg/MP3 when installed:
              its CPU time is a child process's, the wall time is counted);
  features    `features.log_spectrogram`, `spectral_peaks`, `peak_triplets`
              and `reference_codes` (what `reference_fingerprint` does), with
              the spectrogram, the peaks and the triplets + codes also timed
              apart;
  insert      `index.HashIndex.add` of each track's codes and hit ids (FAISS),
              folded into a new table when due (`compacted`), as a server's
              engine adds tracks; then one `store.write_segment` of all tracks
              (HDF5, fsync and checksum), as a build flushes its batch.

Speeds are x real time per core: audio seconds / wall seconds of the stage in
one single-threaded process.  Peak memory is the process's VmHWM (the
kernel's high-water mark of its resident memory, /proc/self/status; native
allocations of numpy, FAISS and HDF5 included, which tracemalloc would miss),
read after start-up (imports and numba warm-up) and at the end.  Not
`resource.getrusage().ru_maxrss`: Linux carries that figure across fork and
exec, so a spawned process reports its parent's peak when that was higher
(and RUSAGE_CHILDREN cannot give ffmpeg's own peak for the same reason).
"""

from __future__ import annotations

import multiprocessing as mp
import tempfile
import time
from pathlib import Path

import numpy as np

from .lookups import rss_bytes

STAGES = ("decode", "features", "insert")
FEATURE_PARTS = ("spectrogram", "peaks", "triplets_codes")
INSERT_PARTS = ("faiss_add", "hdf5_write")


def _peak_rss_bytes() -> int:
    """VmHWM of this process (reset by exec, unlike ru_maxrss)."""
    return rss_bytes("VmHWM")


def _measure(paths: list[tuple[str, str]], tmp_dir: str) -> dict:
    """Runs in the spawned process: every stage of every track, timed."""
    from simsearch import audio, engine, features, index, store
    from simsearch.config import FeatureConfig

    cfg = FeatureConfig().validate()
    rng = np.random.default_rng(0)
    features.reference_fingerprint(0.1 * rng.standard_normal(5 * cfg.sample_rate).astype(np.float32), cfg)
    rss_start = _peak_rss_bytes()

    t = dict.fromkeys((*FEATURE_PARTS, "decode", "faiss_add", "hdf5_write"), 0.0)
    hx = index.HashIndex(cfg.hash_cardinality)
    items, audio_s = [], 0.0
    for number, (track_id, path) in enumerate(paths):
        t0 = time.perf_counter()
        y = audio.decode_audio(path, cfg.sample_rate, prefer_ffmpeg=True)
        t1 = time.perf_counter()
        S = features.log_spectrogram(y, cfg)
        t2 = time.perf_counter()
        p = features.spectral_peaks(S, cfg, cfg.ref_peaks_per_block)
        t3 = time.perf_counter()
        tr = features.peak_triplets(p, cfg, cfg.ref_fanout)
        codes = features.reference_codes(tr, cfg)
        t4 = time.perf_counter()
        hx.add(codes, index.pack_ids(np.full(len(codes), number), tr.t1, tr.f1, tr.span))
        if hx.needs_compaction():
            hx = hx.compacted()
        t5 = time.perf_counter()
        for k, dt in (("decode", t1 - t0), ("spectrogram", t2 - t1), ("peaks", t3 - t2),
                      ("triplets_codes", t4 - t3), ("faiss_add", t5 - t4)):
            t[k] += dt
        duration = len(y) / cfg.sample_rate
        audio_s += duration
        items.append((track_id, number, duration, path, {}, codes, tr))
        del y, S
    with tempfile.TemporaryDirectory(dir=tmp_dir) as d:
        t0 = time.perf_counter()
        seg = store.write_segment(Path(d), 1, engine.make_batch(items), cfg)
        t["hdf5_write"] = time.perf_counter() - t0
        segment_bytes = seg.stat().st_size
    return {"tracks": len(paths), "audio_seconds": audio_s, "seconds": t, "vectors": hx.ntotal,
            "segment_bytes": segment_bytes, "faiss_memory_bytes": hx.memory_bytes(),
            "peak_rss_after_startup_bytes": rss_start, "peak_rss_bytes": _peak_rss_bytes()}


def measure_stages(tracks: list, tmp_dir: Path) -> dict:
    """Time each indexing stage over `tracks` (corpus.Track) in a fresh process."""
    tmp_dir.mkdir(parents=True, exist_ok=True)
    with mp.get_context("spawn").Pool(1) as pool:
        raw = pool.apply(_measure, ([(t.track_id, t.path) for t in tracks], str(tmp_dir)))
    sec, audio_s = raw["seconds"], raw["audio_seconds"]
    stage_s = {"decode": sec["decode"], "features": sum(sec[k] for k in FEATURE_PARTS),
               "insert": sum(sec[k] for k in INSERT_PARTS)}

    def speed(s: float) -> float:
        return round(audio_s / s, 1) if s > 0 else float("inf")

    total = sum(stage_s.values())
    return {
        "tracks": raw["tracks"], "audio_seconds": round(audio_s, 1), "vectors": raw["vectors"],
        "stages": {k: {"seconds": round(v, 3), "x_real_time_per_core": speed(v), "share": round(v / total, 3)}
                   for k, v in stage_s.items()},
        "parts": {k: {"seconds": round(v, 3), "x_real_time_per_core": speed(v)} for k, v in sec.items()},
        "total": {"seconds": round(total, 3), "x_real_time_per_core": speed(total)},
        "segment_bytes": raw["segment_bytes"], "faiss_memory_bytes": raw["faiss_memory_bytes"],
        "memory": {"kind": "VmHWM of the spawned process (/proc/self/status)",
                   "after_startup_bytes": raw["peak_rss_after_startup_bytes"],
                   "peak_bytes": raw["peak_rss_bytes"],
                   "growth_bytes": raw["peak_rss_bytes"] - raw["peak_rss_after_startup_bytes"]},
    }
