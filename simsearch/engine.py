"""Orchestration: ingest, query, remove.  Owns the FAISS index and the store.

An Engine serves one index directory.  Reads (queries) run concurrently;
writes (add, remove) take the thread lock and the directory's file lock, are
durable on disk before they return, and are then logged in the generation's
change log, which other processes' engines check before each request (sync()).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import functools
import json
import os
import stat
import threading
import time
import unicodedata
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from . import features, matching, store
from .audio import DecodeLimits, Source, decode_audio, read_excerpt
from .config import FORMAT_VERSION, LIST_TARGET, FeatureConfig, MatchConfig
from .errors import AudioUnavailable, BadAudio, DecoderUnavailable, ParameterError, TrackExists, UnknownTrack
from .index import MAX_TRACKS, TableBuilder, marked, pack_ids

MAX_TRACK_ID_BYTES = 256


@dataclass(frozen=True)
class TrackInfo:
    track_id: str
    number: int
    duration: float
    path: str
    meta: dict
    n_triplets: int

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("number")
        return d


@dataclass(frozen=True)
class Repeat:
    """Another range of a match's catalog track that the query's matched
    range aligns with, at the match's speed and pitch, with its own score."""
    ref_start: float
    ref_end: float
    score: float

    def to_json(self) -> dict:
        return {k: round(v, 3) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Match:
    track_id: str
    score: float
    query_start: float
    query_end: float
    ref_start: float
    ref_end: float
    speed: float
    pitch_semitones: float
    kind: str
    hits: np.ndarray = field(repr=False, compare=False)
    # Where the track's other hits lie, off the match's line (matching.Candidate.others).
    others: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)
    # Where else the catalog track holds the passage (a repeated chorus, a
    # loop), verified, best first; ref ranges disjoint from this match's.
    repeats: tuple[Repeat, ...] = ()

    def to_json(self, with_hits: bool = False) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("hits", "others", "repeats")}
        d = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in d.items()}
        d["speed"] = round(self.speed, 4)
        d["repeats"] = [r.to_json() for r in self.repeats]
        if with_hits:
            d["hits"] = np.round(self.hits, 3).tolist()
        return d


@dataclass(frozen=True)
class QueryResult:
    duration_s: float
    matches: list[Match]
    elapsed_ms: float

    def to_json(self, with_hits: bool = False) -> dict:
        return {"duration_s": round(self.duration_s, 3),
                "matches": [m.to_json(with_hits) for m in self.matches],
                "elapsed_ms": round(self.elapsed_ms, 2)}


def release_free_memory() -> None:
    """Hand the heap pages freed after loading back to the OS (glibc keeps
    them otherwise, and they would count as the process's memory); a no-op
    where malloc_trim is missing."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)


@functools.cache
def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def _next_free_number(by_number: dict[int, str], removed: set[int], at_least: int = 0) -> int:
    """The next track number to give: past every live and removed one (never reused)."""
    return max([at_least - 1, *by_number, *removed]) + 1


def validate_track_id(track_id: str) -> str:
    """Ids are opaque strings, but they appear in URLs and logs: at most 256
    bytes of UTF-8, no control characters, no surrounding white space; '/'
    only between non-empty segments other than '.' and '..', no backslash."""
    if not isinstance(track_id, str) or not track_id:
        raise ParameterError("track_id must be a non-empty string")
    try:
        size = len(track_id.encode("utf-8"))
    except UnicodeEncodeError:
        raise ParameterError("track_id is not valid Unicode text") from None
    if size > MAX_TRACK_ID_BYTES:
        raise ParameterError(f"track_id is over {MAX_TRACK_ID_BYTES} bytes")
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in track_id):
        raise ParameterError("track_id contains control characters")
    if track_id.strip() != track_id:
        raise ParameterError("track_id has leading or trailing white space")
    if "\\" in track_id or any(seg in ("", ".", "..") for seg in track_id.split("/")):
        raise ParameterError("track_id may use '/' only between non-empty segments other than '.' and '..', "
                             "and no backslash")
    return track_id


def fingerprint_samples(y: np.ndarray, cfg: FeatureConfig) -> tuple[float, np.ndarray, features.Triplets]:
    """Duration, codes and triplets of one catalog track, decoded (mono at cfg.sample_rate)."""
    codes, tr = features.reference_fingerprint(y, cfg)
    return len(y) / cfg.sample_rate, codes, tr


def fingerprint_source(source: Source, cfg: FeatureConfig, limits: DecodeLimits,
                       prefer_ffmpeg: bool = False) -> tuple[float, np.ndarray, features.Triplets]:
    """fingerprint_samples() of a file or its bytes."""
    return fingerprint_samples(decode_audio(source, cfg.sample_rate, limits, prefer_ffmpeg), cfg)


def make_batch(items: list[tuple[str, int, float, str, dict, np.ndarray, features.Triplets]]) -> store.TrackBatch:
    """TrackBatch from (track_id, number, duration, path, meta, codes, triplets) tuples."""
    if not items:
        return store.TrackBatch.empty()
    return store.TrackBatch(
        [i[0] for i in items],
        np.array([i[1] for i in items], np.int64),
        np.array([i[2] for i in items], np.float64),
        [i[3] for i in items],
        [json.dumps(i[4], sort_keys=True) for i in items],
        np.array([len(i[5]) for i in items], np.int64),
        np.concatenate([i[5] for i in items]).astype(np.uint64),
        np.concatenate([i[6].t1 for i in items]).astype(np.float32),
        np.concatenate([i[6].f1 for i in items]).astype(np.float32),
        np.concatenate([i[6].span for i in items]).astype(np.float32),
    )


def _kind(query_start: float, query_end: float, speed: float, pitch: float, duration: float) -> str:
    """duplicate, modified or partial: whether the range covers the query, and at unit speed and pitch."""
    covers = (query_end - query_start) >= 0.7 * duration - 1.0
    plain = abs(speed - 1.0) < 0.01 and abs(pitch) < 0.25
    return ("duplicate" if plain else "modified") if covers else "partial"


class _RWLock:
    """Many readers or one writer."""

    def __init__(self):
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False

    @contextmanager
    def read(self):
        with self._cond:
            while self._writer:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def write(self):
        with self._cond:
            while self._writer or self._readers:
                self._cond.wait()
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class Engine:
    """A loaded index directory, ready to answer queries and take additions."""

    def __init__(self, index_dir: str | Path, match_config: MatchConfig = MatchConfig(),
                 limits: DecodeLimits = DecodeLimits(), verify: bool = True, list_target: int = LIST_TARGET):
        """`list_target`: mean entries per inverted list the serving table is
        sized for (index.TableLayout): fewer lists cost less memory, longer
        ones more scanning per probe.  A serving choice, not stored with the
        index."""
        if not isinstance(list_target, int) or isinstance(list_target, bool) or list_target < 1:
            raise ParameterError(f"list_target must be a positive integer, not {list_target!r}")
        self.index_dir = Path(index_dir)
        self.match_config = match_config
        self.limits = limits
        self.list_target = list_target
        self._verify = verify
        self._lock = _RWLock()
        self._write_mutex = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._last_check = time.monotonic()
        self._load()

    # -- loading -------------------------------------------------------------
    def _load(self) -> None:
        """Everything from disk: the live generation, its segments and removals.

        Streamed, so that opening a large index takes little more memory than
        serving it: the segments' track records first (which tracks are live:
        neither removed nor superseded), then each segment's codes to size the
        table's lists, then each segment again to fill them and take its
        anchors (index.TableBuilder).  One segment's triplets are in memory at
        a time.
        """
        try:
            stamp = self._stamp()  # before: a switch from here on differs from it, and is seen
        except FileNotFoundError:
            stamp = None  # current_generation() says what is missing
        gen = store.current_generation(self.index_dir)
        changes = store.change_log_size(gen)  # before reading: a change made meanwhile grows it
        segments = store.list_segments(gen)
        cfg = store.read_generation_config(gen)
        removed = store.read_removed(gen)
        tracks: dict[str, TrackInfo] = {}
        by_number: dict[int, str] = {}
        records = [store.read_segment(seg, cfg, verify=False, triplets=()) for seg in segments]
        for batch in records:
            self._record_tracks(batch, removed, tracks, by_number)
        masked = self._mask(removed, by_number)
        # Tracks a later segment superseded (it re-added their id) stay out, as removed ones do.
        kept = [~marked(batch.number, masked) for batch in records]  # per track
        entries = sum(int(batch.count[k].sum()) for batch, k in zip(records, kept))
        anchors = matching.ReferenceAnchors()
        with TableBuilder(cfg.hash_cardinality, entries, self.list_target) as table:
            for seg, batch, k in zip(segments, records, kept):  # checksums checked on this first full read
                codes = store.read_segment(seg, cfg, verify=self._verify, triplets=("codes",)).codes
                table.count(codes if k.all() else codes[np.repeat(k, batch.count)])
                del codes  # before the next segment's are read
            for seg, batch, k in zip(segments, records, kept):
                table.fill(*self._entries(store.read_segment(seg, cfg, verify=False), np.repeat(k, batch.count),
                                          anchors))
            index = table.index()
        del records, kept
        release_free_memory()
        with self._lock.write():
            self.gen_dir, self.config, self.removed = gen, cfg, removed
            self.tracks, self.by_number, self.index = tracks, by_number, index
            self.anchors = anchors
            self._segments = {p.name for p in segments}
            self._removed_mask = masked
            self._next_number = _next_free_number(by_number, removed)
            self._current_stamp, self._changes = stamp, changes

    @staticmethod
    def _record_tracks(batch: store.TrackBatch, removed, tracks, by_number,
                       anchors: matching.ReferenceAnchors | None = None) -> np.ndarray:
        """Record the batch's tracks not `removed` (a later copy of an id
        supersedes an earlier one, whose anchors go); which they are."""
        live = ~np.isin(batch.number, np.fromiter(removed, np.int64, len(removed)))
        for k in np.flatnonzero(live):
            info = TrackInfo(batch.track_id[k], int(batch.number[k]), float(batch.duration[k]),
                             batch.path[k], json.loads(batch.meta[k] or "{}"), int(batch.count[k]))
            old = tracks.get(info.track_id)
            if old is not None:  # a later segment re-adds an id: the newer copy wins
                by_number.pop(old.number, None)
                if anchors is not None:
                    anchors.discard(old.number)
            tracks[info.track_id] = info
            by_number[info.number] = info.track_id
        return live

    @staticmethod
    def _entries(batch: store.TrackBatch, sel: np.ndarray,
                 anchors: matching.ReferenceAnchors) -> tuple[np.ndarray, np.ndarray]:
        """The (codes, hit ids) of the batch's triplets `sel` selects (bool
        [n_triplets]; whole tracks), whose anchors go to `anchors`."""
        take = slice(None) if sel.all() else sel  # most segments: every track, and no copies
        nums, t1, f1 = batch.triplet_track_numbers()[take], batch.t1[take], batch.f1[take]
        anchors.add(nums, t1, f1)
        return batch.codes[take], pack_ids(nums, t1, f1, batch.span[take])

    @classmethod
    def _absorb(cls, batch: store.TrackBatch, removed, tracks, by_number,
                anchors: matching.ReferenceAnchors) -> tuple[np.ndarray, np.ndarray]:
        """Record the batch's live tracks and their anchors; their (codes, hit ids)."""
        live = cls._record_tracks(batch, removed, tracks, by_number, anchors)
        return cls._entries(batch, np.repeat(live, batch.count), anchors)

    @staticmethod
    def _mask(removed: set[int], by_number: dict[int, str]) -> np.ndarray:
        size = max(list(removed) + list(by_number) + [-1]) + 1
        mask = np.ones(size, bool)  # numbers not live (removed or superseded) are masked
        if by_number:
            mask[np.fromiter(by_number, np.int64, len(by_number))] = False
        return mask

    def _stamp(self):
        cur = self.index_dir / "CURRENT"
        return cur.read_text(), cur.stat().st_mtime_ns

    def sync(self) -> None:
        """Catch up with the index on disk before answering a request: any
        addition, removal or generation switch committed by any process before
        this call is seen.  When nothing changed this costs one stat of the
        generation's change log; a change is loaded incrementally (refresh())."""
        if store.change_log_size(self.gen_dir) != self._changes:
            self.refresh()
        else:
            self.maybe_refresh()  # a hand-edited CURRENT leaves no line in any change log

    def maybe_refresh(self, min_interval_s: float = 1.0) -> None:
        """refresh(), at most once per `min_interval_s`, by one thread at a time;
        the others go on with the state they have."""
        now = time.monotonic()
        if now - self._last_check < min_interval_s or not self._refresh_lock.acquire(blocking=False):
            return
        try:
            self._last_check = now
            self.refresh()
        finally:
            self._refresh_lock.release()

    def refresh(self) -> bool:
        """Load what other processes changed since: new segments and new
        removals of the live generation, or everything after a generation switch."""
        with self._write_mutex:
            return self._refresh_locked()

    def _refresh_locked(self) -> bool:
        try:
            if self._stamp() != self._current_stamp:
                self._load()
                return True
            changes = store.change_log_size(self.gen_dir)  # before looking, as in _load
            segments = store.list_segments(self.gen_dir)
            removed = store.read_removed(self.gen_dir)
        except FileNotFoundError:
            self._load()
            return True
        if not ({p.name for p in segments} >= self._segments and removed >= self.removed):
            self._load()  # something was taken away, which no addition or removal does
            return True
        new = [p for p in segments if p.name not in self._segments]
        changed = bool(new) or removed != self.removed
        if changed:
            batches = [store.read_segment(p, self.config, verify=self._verify) for p in new]
            with self._lock.write():
                for number in removed - self.removed:
                    track_id = self.by_number.pop(number, None)  # live numbers only
                    self.anchors.discard(number)
                    if track_id is not None:
                        del self.tracks[track_id]
                for batch in batches:  # in segment order: a later copy of an id wins
                    self.index.add(*self._absorb(batch, removed, self.tracks, self.by_number, self.anchors))
                self.removed = removed
                self._segments.update(p.name for p in new)
                self._removed_mask = self._mask(removed, self.by_number)
                self._next_number = _next_free_number(self.by_number, removed, self._next_number)
        self._changes = changes
        if changed:
            self._maybe_compact()
        return changed

    def _maybe_compact(self) -> None:
        """Fold the codes added since the table was built into a new table
        once they are many (HashIndex.needs_compaction).  Call under the
        write mutex: built while queries go on with the current index (which
        does not change: writers hold the mutex), then swapped in."""
        if self.index.needs_compaction():
            compact = self.index.compacted(self._removed_mask)
            with self._lock.write():
                self.index = compact
            release_free_memory()

    # -- queries ------------------------------------------------------------
    def query(self, source: Source, match_config: MatchConfig | None = None) -> QueryResult:
        t0 = time.perf_counter()
        return self.query_samples(self.decode(source), match_config, t0)

    def query_samples(self, y: np.ndarray, match_config: MatchConfig | None = None,
                      t0: float | None = None) -> QueryResult:
        """Match decoded audio (mono float32 at the index's rate).

        Two passes over the same query peaks: first near unit speed and pitch
        (few probes, cheap); when that finds a convincing plain copy of the
        whole query (score >= early_exit_score), it is the answer.  Otherwise
        the whole searched range of speed and pitch follows, with more
        triplets per anchor (wide_query_fanout), and the two passes' matches
        are merged.
        """
        t0 = time.perf_counter() if t0 is None else t0
        mcfg = match_config or self.match_config
        cfg = self.config
        duration = len(y) / cfg.sample_rate
        S = features.log_spectrogram(y, cfg)
        n_frames = len(S)
        peaks = features.spectral_peaks(S, cfg, mcfg.query_peaks_per_block)
        maxima = features.dense_peaks(S, cfg, *mcfg.dense_peak_radius)
        del S
        near = features.near_grid(maxima, n_frames, cfg, mcfg)
        counts = matching.near_counts(near)
        q = features.peak_triplets(peaks, cfg, mcfg.query_fanout)
        narrow = mcfg.narrowed()
        with self._lock.read():
            names = self.by_number
            matches = self._search(q, near, counts, narrow, len(y), names)
            # Only a convincing plain copy ends the search: a weak one may be a
            # chance alignment hiding the true, transformed source.
            plain_copy = (bool(matches) and matches[0].kind == "duplicate"
                          and matches[0].score >= max(mcfg.min_score, mcfg.early_exit_score))
            if narrow != mcfg and not plain_copy:
                best = {m.track_id: m for m in matches}
                if mcfg.wide_query_fanout != mcfg.query_fanout:
                    q = features.peak_triplets(peaks, cfg, mcfg.wide_query_fanout)
                for m in self._search(q, near, counts, mcfg, len(y), names):
                    if m.track_id not in best or m.score > best[m.track_id].score:
                        best[m.track_id] = m
                matches = sorted(best.values(), key=lambda m: -m.score)
            matches = [m for m in matches if m.score >= mcfg.min_score][: mcfg.top_k]
            if mcfg.locate:
                matches = [self._located(m, maxima, n_frames, duration, mcfg) for m in matches]
            matches = [self._with_repeats(m, near, counts, mcfg) for m in matches]
        return QueryResult(duration, matches, (time.perf_counter() - t0) * 1000.0)

    def _located(self, m: Match, maxima: features.Peaks, n_frames: int, duration: float,
                 mcfg: MatchConfig) -> Match:
        """`m` with its range grown where the catalog track's own peaks are in
        the query (matching.locate_range).  Call under the read lock."""
        t1, f1 = self.anchors.get(self.tracks[m.track_id].number)
        fs = self.config.frame_seconds
        offset = (m.ref_start - m.speed * m.query_start) / fs
        q0, q1 = matching.locate_range(t1, f1, m.speed, offset, m.pitch_semitones, m.query_start / fs,
                                       m.query_end / fs, maxima, n_frames, self.config, mcfg)
        if (q0, q1) == (m.query_start / fs, m.query_end / fs):
            return m
        q0, q1 = float(q0 * fs), float(q1 * fs)
        ref0 = float(offset * fs)
        return dataclasses.replace(m, query_start=q0, query_end=q1, ref_start=ref0 + m.speed * q0,
                                   ref_end=ref0 + m.speed * q1,
                                   kind=_kind(q0, q1, m.speed, m.pitch_semitones, duration))

    def _search(self, q: features.Triplets, near: np.ndarray, counts: matching.NearCounts, mcfg: MatchConfig,
                n_samples: int, names) -> list[Match]:
        """One lookup, alignment and verification pass; every verified
        candidate, best first.  Call under the read lock."""
        cfg = self.config
        codes, owner, detour = features.query_probes(q, cfg, mcfg)
        probe, ids = self.index.lookup(codes, mcfg.max_lookup_entries, mcfg.probe_detour_cost ** detour.astype(float))
        hits = matching.gather_hits(q, owner, probe, ids, cfg, mcfg, self._removed_mask)
        cands = matching.align_hits(hits, cfg, mcfg, n_samples / cfg.hop)
        duration = n_samples / cfg.sample_rate
        out = []
        for c in cands:
            if c.track in names and c.score >= mcfg.min_hit_score:
                c, z = matching.verify_line(near, self.anchors.get(c.track), c, cfg, mcfg, counts)
                out.append(self._to_match(c, z, names[c.track], duration))
        out.sort(key=lambda m: -m.score)
        return out

    def _with_repeats(self, m: Match, near: np.ndarray, counts: matching.NearCounts, mcfg: MatchConfig) -> Match:
        """`m` with the lines parallel to its own that the track's other hits
        vote for (matching.repeat_shifts) and that verify like a match over
        its matched range nearly as well as it does (repeat_min_ratio),
        their ranges clipped to the track, best first.  Call under the read
        lock."""
        shifts = matching.repeat_shifts(m.others, m.ref_end - m.ref_start, mcfg.align_tol_s, mcfg.max_repeats)
        if not shifts:
            return m
        out = []
        track = self.tracks[m.track_id]
        anchors = self.anchors.get(track.number)  # decoded once for every shift
        for d in shifts:
            r = dataclasses.replace(m, ref_start=m.ref_start + d, ref_end=m.ref_end + d)
            z, *_ = matching.verify(near, anchors, r, self.config, mcfg, counts)
            if z >= max(mcfg.min_score, mcfg.repeat_min_ratio * m.score):
                out.append(Repeat(max(r.ref_start, 0.0), min(r.ref_end, track.duration), float(z)))
        return dataclasses.replace(m, repeats=tuple(sorted(out, key=lambda r: -r.score)))

    @staticmethod
    def _to_match(c: matching.Candidate, score: float, track_id: str, duration: float) -> Match:
        return Match(track_id, score, c.query_start, c.query_end, c.ref_start, c.ref_end, c.speed,
                     c.pitch_semitones, _kind(c.query_start, c.query_end, c.speed, c.pitch_semitones, duration),
                     c.hits, c.others)

    # -- catalog ------------------------------------------------------------
    def get(self, track_id: str) -> TrackInfo:
        info = self.tracks.get(track_id)
        if info is None:
            raise UnknownTrack(f"no track {track_id!r} in the index")
        return info

    def catalog_audio(self, track_id: str, start_s: float, end_s: float,
                      media_roots: tuple[str, ...] = ()) -> tuple[np.ndarray, int]:
        """The track's audio from `start_s` to `end_s` seconds (cut at the
        track's end), as read_excerpt gives it.  Read only from the source file
        the index recorded, only while it is a regular file, and only when it
        lies (symbolic links resolved) inside one of `media_roots`."""
        info = self.get(track_id)
        if not (np.isfinite(start_s) and np.isfinite(end_s)) or start_s < 0 or end_s <= start_s:
            raise ParameterError("start and end must be finite seconds with 0 <= start < end")
        if start_s >= info.duration:
            raise ParameterError(f"start is past the end of the track ({info.duration:.3f} s)")
        if not info.path:
            raise AudioUnavailable(f"the index does not know an audio file for track {track_id!r} "
                                   "(tracks added over HTTP keep no file)")
        real = Path(os.path.realpath(info.path))
        if not any(real.is_relative_to(os.path.realpath(root)) for root in media_roots):
            raise AudioUnavailable(f"the audio file of track {track_id!r} is not under a media root of this server "
                                   "(catalog audio is served only from `simsearch serve --media-root DIR`)")
        try:
            mode = os.stat(real).st_mode
        except OSError:
            raise AudioUnavailable(f"the audio file of track {track_id!r} is no longer there") from None
        if not stat.S_ISREG(mode):
            raise AudioUnavailable(f"the audio file of track {track_id!r} is not a regular file")
        try:
            return read_excerpt(real, start_s, min(end_s, info.duration) - start_s, self.limits)
        except (BadAudio, DecoderUnavailable) as exc:
            raise AudioUnavailable(f"the audio file of track {track_id!r} cannot be read: {exc}") from None

    def check_new_id(self, track_id: str) -> str:
        """A valid id not yet in the index (checked again under the lock when written)."""
        validate_track_id(track_id)
        if track_id in self.tracks:
            raise TrackExists(f"track id {track_id!r} is already in the index")
        return track_id

    def decode(self, source: Source) -> np.ndarray:
        """`source` as mono float32 at the index's rate, within this engine's decode limits."""
        return decode_audio(source, self.config.sample_rate, self.limits)

    def add(self, track_id: str, source: Source, path: str = "", meta: dict | None = None) -> TrackInfo:
        """Fingerprint and add one track; durable on disk when this returns."""
        self.check_new_id(track_id)
        return self.add_samples(track_id, self.decode(source), path, meta)

    def add_samples(self, track_id: str, y: np.ndarray, path: str = "", meta: dict | None = None) -> TrackInfo:
        """add() for decoded audio (mono float32 at the index's rate)."""
        self.check_new_id(track_id)
        duration, codes, tr = fingerprint_samples(y, self.config)
        return self.add_fingerprints([(track_id, duration, path, meta or {}, codes, tr)])[0]

    def add_fingerprints(self, items) -> list[TrackInfo]:
        """Add already fingerprinted tracks: (track_id, duration, path, meta, codes, triplets)."""
        with self._write_mutex, store.write_lock(self.index_dir):
            # Another process may have written since we loaded: numbers, ids
            # and the live generation must come from disk, under the lock.
            self._refresh_locked()
            ids = [i[0] for i in items]
            if len(set(ids)) != len(ids):
                raise TrackExists(f"track ids given twice in one addition: {sorted({t for t in ids if ids.count(t) > 1})}")
            for tid in ids:
                self.check_new_id(tid)
            if self._next_number + len(items) > MAX_TRACKS:
                raise ParameterError("the index holds the maximum number of tracks")
            numbered = [(tid, self._next_number + k, d, p, m, c, t)
                        for k, (tid, d, p, m, c, t) in enumerate(items)]
            batch = make_batch(numbered)
            store.remove_stale_temp_files(self.gen_dir)  # a writer killed mid-write (we hold the lock)
            seg = store.write_segment(self.gen_dir, store.next_segment_seq(self.gen_dir), batch, self.config)
            infos = [TrackInfo(tid, n, d, p, m, len(c)) for tid, n, d, p, m, c, _ in numbered]
            new_ids = pack_ids(batch.triplet_track_numbers(), batch.t1, batch.f1, batch.span)
            with self._lock.write():
                self.index.add(batch.codes, new_ids)
                self.anchors.add(batch.triplet_track_numbers(), batch.t1, batch.f1)
                for info in infos:
                    self.tracks[info.track_id] = info
                    self.by_number[info.number] = info.track_id
                self._next_number += len(items)
                self._removed_mask = self._mask(self.removed, self.by_number)
                self._segments.add(seg.name)
            self._changes = store.log_change(self.gen_dir, f"added {seg.name}")
            self._maybe_compact()
        return infos

    def remove(self, track_id: str) -> TrackInfo:
        with self._write_mutex, store.write_lock(self.index_dir):
            self._refresh_locked()
            info = self.get(track_id)
            removed = set(self.removed) | {info.number}
            store.write_removed(self.gen_dir, removed)
            with self._lock.write():
                self.removed = removed
                del self.tracks[track_id]
                self.by_number.pop(info.number, None)
                self.anchors.discard(info.number)
                self._removed_mask = self._mask(removed, self.by_number)
            self._changes = store.log_change(self.gen_dir, f"removed {info.number}")
        return info

    # -- reporting ----------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        with self._lock.read():
            hours = sum(t.duration for t in self.tracks.values()) / 3600.0
            return {
                "tracks": len(self.tracks),
                "hours": round(hours, 3),
                "vectors": int(self.index.ntotal),
                "bytes_on_disk": store.dir_bytes(self.gen_dir),
                "bytes_in_memory": self.index.memory_bytes() + self.anchors.nbytes,
                "generation": self.gen_dir.name,
                "format_version": FORMAT_VERSION,
                "feature_config": json.loads(self.config.to_json()),
                "faiss_index": self.index.describe(),
                "faiss_parameters": self.index.parameters(),
            }
