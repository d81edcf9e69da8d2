"""Offline index builds: parallel extraction, resumable, atomic switch."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
from tqdm import tqdm

from . import store
from .audio import DecodeLimits
from .config import FeatureConfig
from .engine import fingerprint_source, make_batch, validate_track_id
from .errors import ParameterError, SimsearchError

BUILDING = "building"


@dataclass
class BuildReport:
    tracks: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    resumed: int = 0
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    generation: str = ""

    def to_json(self) -> dict:
        return {"tracks": self.tracks, "audio_hours": round(self.audio_seconds / 3600, 4),
                "wall_seconds": round(self.wall_seconds, 2), "resumed": self.resumed,
                "failed": len(self.failures), "generation": self.generation,
                "failures": [{"track_id": t, "path": p, "error": e} for t, p, e in self.failures]}


def create_empty(index_dir: Path, cfg: FeatureConfig = FeatureConfig()) -> Path:
    """A new, empty index (used by `serve`/`add` on a directory with none)."""
    with store.write_lock(index_dir):
        gen = index_dir / store.new_generation_name()
        gen.mkdir(parents=True)
        store.write_generation_config(gen, cfg.validate())
        store.switch_generation(index_dir, gen)
    return gen


_WORKER_CFG: FeatureConfig | None = None
_WORKER_LIMITS: DecodeLimits | None = None


def _init_worker(cfg: FeatureConfig, limits: DecodeLimits) -> None:
    global _WORKER_CFG, _WORKER_LIMITS
    _WORKER_CFG, _WORKER_LIMITS = cfg, limits
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _extract(item):
    track_id, path = item
    try:
        validate_track_id(track_id)
        duration, codes, tr = fingerprint_source(path, _WORKER_CFG, _WORKER_LIMITS, prefer_ffmpeg=True)
        return track_id, path, (duration, codes, tr), None
    except SimsearchError as exc:
        return track_id, path, None, str(exc)
    except Exception as exc:  # noqa: BLE001 - a bad file must not stop a build; it is reported
        return track_id, path, None, f"{type(exc).__name__}: {exc}"


def build(index_dir: str | Path, sources: list[tuple[str, str]], cfg: FeatureConfig = FeatureConfig(),
          jobs: int | None = None, limits: DecodeLimits = DecodeLimits(), progress: bool = True,
          flush_seconds: float = 30.0, flush_tracks: int = 500) -> BuildReport:
    """Fingerprint `sources` into a new generation of `index_dir`, then switch to it.

    An interrupted build leaves its finished segments in INDEX_DIR/building;
    running the same build again skips the tracks they hold.  A second build
    of the same directory while one runs fails with BuildInProgress.
    """
    cfg = cfg.validate()
    index_dir = Path(index_dir)
    with store.build_lock(index_dir):
        return _build_locked(index_dir, sources, cfg, jobs, limits, progress, flush_seconds, flush_tracks)


def _build_locked(index_dir: Path, sources, cfg: FeatureConfig, jobs, limits, progress,
                  flush_seconds: float, flush_tracks: int) -> BuildReport:
    ids = [t for t, _ in sources]
    if len(set(ids)) != len(ids):
        dup = sorted({t for t in ids if ids.count(t) > 1})[:5]
        raise ParameterError(f"duplicate track ids among the sources: {dup}")
    work = index_dir / BUILDING
    report = BuildReport()
    done: set[str] = set()
    next_number = 0
    if work.is_dir() and (work / "config.json").exists():
        stored = json.loads((work / "config.json").read_text())
        if stored.get("feature_config") == json.loads(cfg.to_json()):
            for seg in store.list_segments(work):
                batch = store.read_segment(seg, cfg)
                done.update(batch.track_id)
                if len(batch):
                    next_number = max(next_number, int(batch.number.max()) + 1)
            report.resumed = len(done)
        else:
            shutil.rmtree(work)
    if not work.is_dir():
        work.mkdir()
        store.write_generation_config(work, cfg)
    for leftover in work.glob(".segment-*"):
        leftover.unlink()
    todo = [(t, p) for t, p in sources if t not in done]
    jobs = max(1, jobs or os.cpu_count() or 1)
    t0 = time.perf_counter()
    pending: list = []
    last_flush = time.perf_counter()

    def flush():
        nonlocal pending, next_number, last_flush
        if pending:
            items = [(tid, next_number + k, d, p, {}, c, tr) for k, (tid, p, d, c, tr) in enumerate(pending)]
            store.write_segment(work, store.next_segment_seq(work), make_batch(items), cfg)
            next_number += len(pending)
            pending = []
        last_flush = time.perf_counter()

    bar = tqdm(total=len(todo), unit="file", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    ctx = mp.get_context("fork")
    with ctx.Pool(jobs, initializer=_init_worker, initargs=(cfg, limits)) as pool:
        for track_id, path, result, error in pool.imap_unordered(_extract, todo, chunksize=1):
            if error is not None:
                report.failures.append((track_id, path, error))
                tqdm.write(f"failed: {path}: {error}", file=sys.stderr)
            else:
                duration, codes, tr = result
                # Absolute, so that the catalog audio can be found from any working directory.
                pending.append((track_id, str(Path(path).resolve()), duration, codes, tr))
                report.tracks += 1
                report.audio_seconds += duration
            elapsed = time.perf_counter() - t0
            bar.update(1)
            bar.set_postfix_str(f"{report.audio_seconds / 3600 / max(elapsed, 1e-9):.3f} audio h/s, "
                                f"{report.audio_seconds / max(elapsed, 1e-9):.0f}x real time, "
                                f"{len(report.failures)} failed")
            if len(pending) >= flush_tracks or time.perf_counter() - last_flush > flush_seconds:
                flush()
    flush()
    bar.close()
    report.tracks += report.resumed
    report.wall_seconds = time.perf_counter() - t0
    if report.failures:
        lines = "".join(f"{t}\t{p}\t{e}\n" for t, p, e in report.failures)
        store.atomic_write_bytes(work / "failures.tsv", lines.encode())
    with store.write_lock(index_dir):
        try:
            previous = store.current_generation(index_dir)
        except SimsearchError:
            previous = None
        gen = index_dir / store.new_generation_name()
        os.replace(work, gen)
        store.fsync_dir(index_dir)
        store.switch_generation(index_dir, gen)
        # Keep the generation just replaced for one rollback; drop older ones.
        for stale in _generations(index_dir):
            if stale != gen and stale != previous:
                shutil.rmtree(stale, ignore_errors=True)
    report.generation = gen.name
    return report


def _generations(index_dir: Path) -> list[Path]:
    return sorted(p for p in index_dir.iterdir() if p.is_dir() and p.name.startswith("gen-"))


@dataclass
class ScanReport:
    """The segments of the live generation: healthy, or damaged with the reason."""
    generation: str
    healthy: list[str] = field(default_factory=list)
    damaged: list[dict] = field(default_factory=list)
    removed_damaged: bool = False
    stale_temp_files: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.damaged and not self.removed_damaged

    def to_json(self) -> dict:
        return {"generation": self.generation, "ok": self.ok, "healthy_segments": len(self.healthy),
                "damaged_segments": self.damaged, "removed_list_damaged": self.removed_damaged,
                "stale_temp_files": self.stale_temp_files}


def scan(index_dir: str | Path) -> ScanReport:
    """Verify every file of the live generation (checksums, HDF5, configuration)."""
    index_dir = Path(index_dir)
    gen = store.current_generation(index_dir)
    cfg = store.read_generation_config(gen)
    report = ScanReport(gen.name)
    for seg in store.list_segments(gen):
        try:
            store.read_segment(seg, cfg, verify=True)
            report.healthy.append(seg.name)
        except SimsearchError as exc:
            report.damaged.append({"segment": seg.name, "error": str(exc), "track_ids": _salvage_ids(seg)})
    try:
        store.read_removed(gen)
    except SimsearchError:
        report.removed_damaged = True
    report.stale_temp_files = sorted(p.name for p in gen.glob(".segment-*.tmp*"))
    return report


def repair(index_dir: str | Path) -> ScanReport:
    """Switch to a new generation holding the healthy segments of the live one.

    Segments are immutable, so they are hard-linked, not copied.  The tracks of
    damaged segments are lost from the index (their ids are listed when the
    damaged file still shows them): re-add them from their sources.  A damaged
    list of removed tracks is replaced by an empty one, so removed tracks come
    back and must be removed again.  The old generation stays on disk.
    """
    index_dir = Path(index_dir)
    with store.build_lock(index_dir), store.write_lock(index_dir):
        report = scan(index_dir)
        old = index_dir / report.generation
        gen = index_dir / store.new_generation_name()
        gen.mkdir()
        store.write_generation_config(gen, store.read_generation_config(old))
        for name in report.healthy:
            try:
                os.link(old / name, gen / name)
            except OSError:
                shutil.copy2(old / name, gen / name)
        removed = set() if report.removed_damaged else store.read_removed(old)
        if removed:
            store.write_removed(gen, removed)
        store.fsync_dir(gen)
        store.switch_generation(index_dir, gen)
    return report


def _salvage_ids(seg: Path) -> list[str] | None:
    """The track ids a damaged segment still shows, or None when it shows none."""
    try:
        with h5py.File(seg, "r") as h:
            return [s.decode() if isinstance(s, bytes) else str(s) for s in h["tracks/track_id"][()]]
    except Exception:  # noqa: BLE001 - best effort on a file already known to be damaged
        return None
