"""Persistence: HDF5 segments of fingerprints and track metadata.

Layout of an index directory (see indexes/README.md):

    INDEX_DIR/CURRENT              name of the live generation (atomically replaced)
    INDEX_DIR/gen-*/segment-NNNNNN-<sha256:16>.h5
    INDEX_DIR/gen-*/removed.json   track numbers removed since the segments were written
    INDEX_DIR/gen-*/changes.log    one line appended per committed change: its size tells
                                   readers (other server processes) to refresh
    INDEX_DIR/building/            a build in progress (resumable)

Every file is written to a temporary name, fsynced and renamed, so a crash
never leaves a half-written file under a real name.  A segment's name carries
the first 16 hex digits of its SHA-256, checked when it is opened.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from .config import FORMAT_VERSION, FeatureConfig
from .errors import BuildInProgress, ConfigMismatch, IndexCorrupt, IndexNotFound

_SEGMENT_RE = re.compile(r"^segment-(\d{6})-([0-9a-f]{16})\.h5$")
_GENERATION_RE = re.compile(r"gen-[0-9A-Za-z_-]+")
_STR = h5py.string_dtype("utf-8")


@dataclass
class TrackBatch:
    """Tracks and their triplets, as written to one segment."""

    track_id: list[str]
    number: np.ndarray  # int64 [n_tracks], the track's permanent number
    duration: np.ndarray  # float64 [n_tracks], seconds
    path: list[str]
    meta: list[str]  # JSON objects
    count: np.ndarray  # int64 [n_tracks], triplets of each track
    # The triplets, tracks in order (None where read_segment was asked not to read them):
    codes: np.ndarray  # uint64 [n_triplets]
    t1: np.ndarray  # float32 [n_triplets], frames
    f1: np.ndarray  # float32 [n_triplets], bins
    span: np.ndarray  # float32 [n_triplets], frames

    @classmethod
    def empty(cls) -> "TrackBatch":
        z = np.zeros(0)
        return cls([], z.astype(np.int64), z, [], [], z.astype(np.int64), z.astype(np.uint64),
                   z.astype(np.float32), z.astype(np.float32), z.astype(np.float32))

    @classmethod
    def concat(cls, batches: list["TrackBatch"]) -> "TrackBatch":
        if not batches:
            return cls.empty()
        return cls(
            [t for b in batches for t in b.track_id],
            np.concatenate([b.number for b in batches]),
            np.concatenate([b.duration for b in batches]),
            [p for b in batches for p in b.path],
            [m for b in batches for m in b.meta],
            np.concatenate([b.count for b in batches]),
            np.concatenate([b.codes for b in batches]),
            np.concatenate([b.t1 for b in batches]),
            np.concatenate([b.f1 for b in batches]),
            np.concatenate([b.span for b in batches]),
        )

    def __len__(self) -> int:
        return len(self.track_id)

    def triplet_track_numbers(self) -> np.ndarray:
        return np.repeat(self.number, self.count)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_segment(gen_dir: Path, seq: int, batch: TrackBatch, cfg: FeatureConfig) -> Path:
    """Write `batch` as a new segment of `gen_dir`; durable when this returns."""
    tmp = gen_dir / f".segment-{seq:06d}.tmp{os.getpid()}"
    with h5py.File(tmp, "w") as h:
        h.attrs["format_version"] = FORMAT_VERSION
        h.attrs["feature_config"] = cfg.to_json()
        g = h.create_group("tracks")
        g.create_dataset("track_id", data=np.array(batch.track_id, dtype=object), dtype=_STR)
        g.create_dataset("number", data=batch.number.astype(np.int64))
        g.create_dataset("duration", data=batch.duration.astype(np.float64))
        g.create_dataset("path", data=np.array(batch.path, dtype=object), dtype=_STR)
        g.create_dataset("meta", data=np.array(batch.meta, dtype=object), dtype=_STR)
        g.create_dataset("count", data=batch.count.astype(np.int64))
        f = h.create_group("triplets")
        for name in ("codes", "t1", "f1", "span"):
            f.create_dataset(name, data=getattr(batch, name), chunks=True if len(getattr(batch, name)) else None)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    digest = sha256_file(tmp)[:16]
    final = gen_dir / f"segment-{seq:06d}-{digest}.h5"
    os.replace(tmp, final)
    fsync_dir(gen_dir)
    return final


def remove_stale_temp_files(gen_dir: Path) -> None:
    """Temporary segment files of writers that died mid-write.  Call under the write lock."""
    for p in gen_dir.glob(".segment-*.tmp*"):
        p.unlink(missing_ok=True)


TRIPLET_FIELDS = ("codes", "t1", "f1", "span")


def read_segment(path: Path, cfg: FeatureConfig | None, verify: bool = True,
                 triplets: tuple[str, ...] = TRIPLET_FIELDS) -> TrackBatch:
    """Read a segment, checking its checksum and its configuration against `cfg`.

    `triplets`: which of the triplet arrays (TRIPLET_FIELDS) to read; those
    left out are None in the batch (an engine opening a large index reads
    the track records first, then each segment's codes, then the rest).
    """
    unknown = set(triplets) - set(TRIPLET_FIELDS)
    if unknown:
        raise ValueError(f"no triplet arrays {sorted(unknown)} in a segment")
    m = _SEGMENT_RE.match(path.name)
    if m is None:
        raise IndexCorrupt(f"{path}: not a segment file name")
    if verify and sha256_file(path)[:16] != m.group(2):
        raise IndexCorrupt(f"{path}: checksum mismatch, the file is damaged. {_recovery(path)}")
    try:
        with h5py.File(path, "r") as h:
            version = int(h.attrs.get("format_version", -1))
            if version != FORMAT_VERSION:
                raise ConfigMismatch(f"{path}: format version {version}, this simsearch reads {FORMAT_VERSION}")
            stored = FeatureConfig.from_json(h.attrs["feature_config"])
            if cfg is not None and stored != cfg:
                raise ConfigMismatch(f"{path}: made with another feature configuration ({stored}); "
                                     f"rebuild it or open it with its own configuration")
            g, f = h["tracks"], h["triplets"]
            arrays = {name: f[name][()] if name in triplets else None for name in TRIPLET_FIELDS}
            batch = TrackBatch(
                [s.decode() if isinstance(s, bytes) else s for s in g["track_id"][()]],
                g["number"][()], g["duration"][()],
                [s.decode() if isinstance(s, bytes) else s for s in g["path"][()]],
                [s.decode() if isinstance(s, bytes) else s for s in g["meta"][()]],
                g["count"][()], **arrays)
            lengths = {f[name].shape[0] for name in TRIPLET_FIELDS}
    except (OSError, KeyError) as exc:
        raise IndexCorrupt(f"{path}: unreadable HDF5 ({exc}). {_recovery(path)}") from None
    # Checked even when the arrays are not read: readers select triplets by track.
    if lengths != {int(batch.count.sum())}:
        raise IndexCorrupt(f"{path}: its track records count {int(batch.count.sum())} triplets, its triplet "
                           f"arrays hold {sorted(lengths)}. {_recovery(path)}")
    return batch


def _recovery(segment: Path) -> str:
    index_dir = segment.parent.parent
    return (f"Recover with `simsearch repair {index_dir}` (drops the damaged segment's tracks, then re-add "
            f"them), `simsearch build {index_dir} SOURCE...`, or a backup")


def list_segments(gen_dir: Path) -> list[Path]:
    return sorted(p for p in gen_dir.iterdir() if _SEGMENT_RE.match(p.name))


def next_segment_seq(gen_dir: Path) -> int:
    segs = list_segments(gen_dir)
    return int(_SEGMENT_RE.match(segs[-1].name).group(1)) + 1 if segs else 1


def read_removed(gen_dir: Path) -> set[int]:
    p = gen_dir / "removed.json"
    if not p.exists():
        return set()
    try:
        return set(int(x) for x in json.loads(p.read_text()))
    except (ValueError, TypeError) as exc:
        raise IndexCorrupt(f"{p}: unreadable ({exc})") from None


def write_removed(gen_dir: Path, numbers: set[int]) -> None:
    atomic_write_bytes(gen_dir / "removed.json", json.dumps(sorted(numbers)).encode())


CHANGES = "changes.log"


def log_change(gen_dir: Path, line: str) -> int:
    """Append `line` to the generation's change log, after the change itself
    is durable; returns the log's new size (-1 when the generation is gone).
    Call under the write lock.

    The log is append-only, so its size grows with every change: a reader
    that stats it before each query sees any change committed before that
    query, whatever the clock (file times are too coarse to order two quick
    changes).  It is a signal, not a record: nothing reads its lines back.
    """
    try:
        with open(gen_dir / CHANGES, "ab") as fh:
            fh.write(line.encode() + b"\n")
            return fh.tell()
    except FileNotFoundError:
        return -1


def change_log_size(gen_dir: Path) -> int:
    """Size of the generation's change log: 0 before its first change, -1 when
    the generation itself is gone (a reader of it must reload)."""
    try:
        return os.stat(gen_dir / CHANGES).st_size
    except FileNotFoundError:
        return 0 if gen_dir.is_dir() else -1


def write_generation_config(gen_dir: Path, cfg: FeatureConfig) -> None:
    body = {"format_version": FORMAT_VERSION, "feature_config": json.loads(cfg.to_json())}
    atomic_write_bytes(gen_dir / "config.json", json.dumps(body, indent=2).encode())


def read_generation_config(gen_dir: Path) -> FeatureConfig:
    """The feature configuration of a generation; refused when made by another format version."""
    cfg_file = gen_dir / "config.json"
    if not cfg_file.exists():
        raise IndexNotFound(f"{gen_dir}: no config.json; rebuild the index with `simsearch build`")
    try:
        meta = json.loads(cfg_file.read_text())
        version, fields = meta.get("format_version"), meta["feature_config"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise IndexCorrupt(f"{cfg_file} is unreadable ({exc}); rebuild the index with "
                           f"`simsearch build {gen_dir.parent} SOURCE...`") from None
    if version != FORMAT_VERSION:
        raise ConfigMismatch(f"{gen_dir}: format version {version}, "
                             f"this simsearch reads {FORMAT_VERSION}; rebuild the index")
    return FeatureConfig.from_json(json.dumps(fields)).validate()


def current_generation(index_dir: Path) -> Path:
    cur = index_dir / "CURRENT"
    if not cur.exists():
        raise IndexNotFound(f"no index at {index_dir} (build one with `simsearch build {index_dir} SOURCE...`)")
    name = cur.read_text().strip()
    gen = index_dir / name
    if not _GENERATION_RE.fullmatch(name) or not gen.is_dir():
        raise IndexCorrupt(f"{cur} names a missing generation {name!r}")
    return gen


def switch_generation(index_dir: Path, gen_dir: Path) -> None:
    """Make `gen_dir` the live generation, atomically, and log the switch in the
    generation it replaces (whose readers watch that log).  Call under the write lock."""
    cur = index_dir / "CURRENT"
    old = cur.read_text().strip() if cur.exists() else ""
    atomic_write_bytes(cur, (gen_dir.name + "\n").encode())
    if _GENERATION_RE.fullmatch(old) and old != gen_dir.name:
        log_change(index_dir / old, f"switched to {gen_dir.name}")


def new_generation_name() -> str:
    """Names sort in creation order (nanosecond clock, then random)."""
    return f"gen-{time.time_ns():020d}-{os.urandom(3).hex()}"


@contextlib.contextmanager
def write_lock(index_dir: Path):
    """Exclusive lock for writers of one index directory (across processes)."""
    index_dir.mkdir(parents=True, exist_ok=True)
    with open(index_dir / ".lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def build_lock(index_dir: Path):
    """Exclusive, non-blocking: one build of an index directory at a time
    (two would interleave track numbers in the same `building/`)."""
    index_dir.mkdir(parents=True, exist_ok=True)
    with open(index_dir / ".build.lock", "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BuildInProgress(f"another build of {index_dir} is running; wait for it to finish") from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
