"""Side by side with a peer: audfprint (the audfprint2 distribution on PyPI,
a maintained fork of Dan Ellis's landmark fingerprinter) on the same corpus
and the same queries as simsearch, in the same run.

* The peer lives in its own virtual environment, DATA/peers/audfprint2-VERSION
  (created and installed with pip when missing), and runs as a subprocess
  (`benchmarks/audfprint_driver.py` under `python -I`), so simsearch's
  dependencies never see it.
* It indexes the catalog tracks with its own multi-process `new` (jobs
  processes), defaults throughout (see the driver's docstring).
* Queries: core's excerpts k = 0 (one 5 s and one 15 s excerpt per track,
  catalog and out of catalog, the same seeded offsets as core) under every
  core transform, and three derivatives made as the derivatives benchmark
  makes them (sox speed x1.05, pitch +2 semitones, tempo x1.08), written once
  as 16-bit WAV files; simsearch
  (`Engine.query(bytes, min_score=0)`, figures at its default threshold) and
  audfprint (its default rule: a match has more than 5 aligned landmarks at
  its best time skew) answer the very same files.  With --quick, every second
  track.
* Figures for both, with core's functions: recall@1 per transform and length,
  wrong@1, false alarms on the out-of-catalog excerpts; indexing x real time
  per core; index bytes on disk and in memory; query time per query (both
  measured inside `jobs` parallel processes, decoding included: a cost
  figure, not a latency).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np

from simsearch.config import MatchConfig
from simsearch.store import dir_bytes

from . import core, corpus, derivatives
from .core import Excerpt
from .transforms import transforms

PEER = "audfprint2"
PEER_VERSION = "0.1.2"
DRIVER = Path(__file__).resolve().parent / "audfprint_driver.py"
PEER_THRESHOLD = 1  # the driver reports only matches that pass audfprint's own rule
# Derivatives that a landmark fingerprinter is known not to survive (audfprint
# issue #35: pitch beyond +-1%, tempo beyond +-5%), to show the difference.
DERIVATIVES = tuple(d for d in derivatives.DERIVATIVES if d.name in ("speed_x1.05", "pitch_+2st", "tempo_x1.08"))
log = partial(core.log, bench="peer")


def ensure_peer(data: Path) -> Path:
    """The peer venv's python, installing audfprint2 with pip when missing."""
    venv = data / "peers" / f"{PEER}-{PEER_VERSION}"
    python = venv / "bin" / "python"
    probe = [str(python), "-I", "-c", f"import {PEER}"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    log(f"installing {PEER}=={PEER_VERSION} into {venv}")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"{PEER}=={PEER_VERSION}"], check=True)
    subprocess.run(probe, check=True)
    return python


def run_driver(python: Path, cmd: str, db: Path, paths: list[str], ncores: int) -> list[dict]:
    """The driver's JSON lines; its stderr goes to ours."""
    listfile = db.with_name(f"{cmd}-list.txt")
    listfile.write_text("".join(p + "\n" for p in paths))
    proc = subprocess.run([str(python), "-I", str(DRIVER), cmd, str(db), str(listfile), str(ncores)],
                          stdout=subprocess.PIPE, text=True, check=True)
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


class _Ctx:
    """Per-process state of the query pool besides core's Engine and transforms."""

    query_dir = Path("/tmp")
    tmp_dir = Path("/tmp")


def _init_worker(index_dir: str, tmp_dir: str, query_dir: str) -> None:
    core._init_worker(index_dir, tmp_dir)
    _Ctx.query_dir, _Ctx.tmp_dir = Path(query_dir), Path(tmp_dir)


def derivative_wavs(ex: Excerpt):
    """(name, cut, WAV bytes) of the DERIVATIVES of one excerpt, made as the
    derivatives benchmark makes them (source cut long enough for a speed-up)."""
    cut = core.cut_excerpt(ex, derivatives.source_seconds(ex.length_s))
    for d in DERIVATIVES:
        q = derivatives.make_query(d, ex, cut, [], _Ctx.tmp_dir)
        yield d.name, q.ref, core.wav_bytes(q.y, q.sr)


def write_and_query(ex: Excerpt) -> list[dict]:
    """core.query_excerpt plus a few derivatives, keeping each WAV on disk for
    the peer.  Derivatives are asked at the engine's default MatchConfig (its
    answer at the default threshold; see derivatives.py on the early exit)."""
    records = []
    made = [(*x, core.ALL_MATCHES) for x in core.transformed_wavs(ex, core._Worker.transforms)]
    made += [(*x, MatchConfig()) for x in derivative_wavs(ex)]
    for i, (name, cut, wav, mcfg) in enumerate(made):
        path = _Ctx.query_dir / f"{ex.seed:010d}-{i}.wav"
        path.write_bytes(wav)
        rec = core.make_record(ex, name, cut, core._Worker.engine.query(wav, mcfg))
        records.append({**rec, "wav": str(path)})
    return records


def peer_record(sim: dict, ans: dict, track_of_path: dict[str, str]) -> dict:
    """The simsearch record's excerpt fields with the peer's answer."""
    top = track_of_path.get(ans["top"]) if ans["top"] else None
    return {**{k: sim[k] for k in ("track_id", "in_catalog", "transform", "length_s", "k", "start_s")},
            "top_track": top, "top_score": float(ans["aligned"]), "top_offset": ans["offset_s"],
            "elapsed_ms": ans["elapsed_ms"]}


def summary(records: list[dict], threshold: float, names: list[str]) -> dict:
    acc = core.accuracy_at(records, threshold, names, core.LENGTHS_S)
    cat = [r for r in records if r["in_catalog"]]
    return {"recall_at_1": acc["recall_at_1"], "recall_at_1_by_length": acc["recall_at_1_by_length"],
            "recall_at_1_all": core.rate(cat, lambda r: core.is_correct(r, threshold)),
            "wrong_at_1": core.rate(cat, lambda r: core.is_wrong(r, threshold)),
            "false_alarm_rate": acc["false_alarm_rate"], "false_alarms": acc["false_alarms"],
            "offset_error_median_s": acc["offset_error_median_s"], "queries": acc["queries"],
            "query_ms": core.percentiles([r["elapsed_ms"] for r in records])}


def run_peer(data: Path, work: Path, tracks: list[corpus.Track], index_dir: Path, simsearch_indexing: dict,
             jobs: int, quick: bool) -> dict:
    """Index the catalog with the peer, query both systems with the same files."""
    python = ensure_peer(data)
    peer_dir = work / "peer"
    if peer_dir.exists():
        shutil.rmtree(peer_dir)
    query_dir = peer_dir / "queries"
    query_dir.mkdir(parents=True)
    catalog = sorted((t for t in tracks if t.split == "catalog"), key=lambda t: t.track_id)
    track_of_path = {t.path: t.track_id for t in tracks}
    db = peer_dir / "audfprint.pklz"

    log(f"indexing {len(catalog)} catalog tracks with {PEER} ({jobs} processes)")
    ix = run_driver(python, "index", db, [t.path for t in catalog], jobs)[0]
    audio_s = sum(t.duration for t in catalog)
    peer_indexing = {**ix, "audio_seconds": round(audio_s, 1),
                     "x_real_time_per_core": round(audio_s / ix["wall_seconds"] / jobs, 1)}

    queried = sorted(tracks, key=lambda t: t.track_id)[:: 2 if quick else 1]
    plan = core.plan_excerpts(queried, 1, core.LENGTHS_S)
    names = [*transforms(work / "tmp"), *(d.name for d in DERIVATIVES)]
    sim_records = core.run_queries(plan, write_and_query, _init_worker,
                                   (str(index_dir), str(work / "tmp"), str(query_dir)), jobs, log)
    log(f"{PEER}: matching {len(sim_records)} queries")
    head, *answers = run_driver(python, "match", db, [r["wav"] for r in sim_records], jobs)
    by_path = {a["path"]: a for a in answers}
    peer_records = [peer_record(r, by_path[r["wav"]], track_of_path) for r in sim_records]
    shutil.rmtree(query_dir)

    threshold = MatchConfig().min_score
    return {
        "peer": {"name": PEER, "version": PEER_VERSION, "parameters": "audfprint defaults: density 20/s, 5 peaks per "
                 "frame, fan-out 3, 20-bit hashes x 100 per bucket, 11,025 Hz, 4 time shifts at query, "
                 "match = more than 5 aligned landmarks"},
        "queries": {"excerpts_per_track_and_length": 1, "tracks": len(queried), "transforms": names,
                    "lengths_s": list(core.LENGTHS_S), "n": len(sim_records)},
        "simsearch": {"threshold": threshold, **summary(sim_records, threshold, names),
                      "indexing_x_real_time_per_core": simsearch_indexing["x_real_time_per_core"],
                      "bytes_on_disk": dir_bytes(index_dir), "bytes_in_memory": simsearch_indexing["bytes_in_memory"],
                      "catalog_hours": round(audio_s / 3600, 3)},
        "audfprint": {"threshold": PEER_THRESHOLD, **summary(peer_records, PEER_THRESHOLD, names),
                      "indexing": peer_indexing,
                      "indexing_x_real_time_per_core": peer_indexing["x_real_time_per_core"],
                      "bytes_on_disk": ix["bytes_on_disk"], "bytes_in_memory": ix["table_bytes_in_memory"],
                      "load_seconds": head["load_seconds"], "maxrss_after_load_bytes": head["maxrss_after_load_bytes"],
                      "catalog_hours": round(audio_s / 3600, 3)},
        "agreement": {"both_right": _both(sim_records, peer_records, threshold, True, True),
                      "simsearch_only": _both(sim_records, peer_records, threshold, True, False),
                      "audfprint_only": _both(sim_records, peer_records, threshold, False, True),
                      "neither": _both(sim_records, peer_records, threshold, False, False)},
    }


def _both(sim: list[dict], peer: list[dict], threshold: float, want_sim: bool, want_peer: bool) -> int:
    """Catalog queries that simsearch got right (or not) and the peer right (or not)."""
    return int(np.sum([core.is_correct(s, threshold) == want_sim and core.is_correct(p, PEER_THRESHOLD) == want_peer
                       for s, p in zip(sim, peer) if s["in_catalog"]]))
