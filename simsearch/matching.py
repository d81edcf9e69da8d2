"""Temporal alignment and scoring of candidate hits.  Pure: arrays in,
candidates out.

A hit pairs a query triplet with a reference triplet that has the same hash.
Hits count only when many of them agree on one line
    reference time = offset + speed * query time
found by a Hough vote over (speed, offset); the score sums over the
distinct anchor pairs on that line a weight that falls with the pair's
distance from the line in time and pitch (`_fit_weight`), less a fixed
penalty when the line is off unit speed and pitch (the wide search tries many
more hypotheses, so chance alignments score higher there).

The range a line's hits span misses the stretches where the query's
strongest peaks are another sound's (a sample under louder music): hits need
the catalog's triplets whole.  `locate_range` grows it, along the line,
over the stretches where the catalog track's own peaks are in the query.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from . import _kernels as K
from .config import FeatureConfig, MatchConfig
from .features import Peaks, Triplets
from .index import FREQ_BITS, SPAN_BITS, TIME_BITS


@dataclass(frozen=True)
class Candidate:
    track: int  # track number
    score: float  # weighted aligned anchor pairs (see _fit_weight), less the off-unit penalty
    speed: float  # reference time per query time
    pitch_semitones: float  # query pitch minus reference pitch
    query_start: float  # seconds
    query_end: float
    ref_start: float
    ref_end: float
    hits: np.ndarray  # float64 [n, 2]: aligned (query s, reference s) anchor times
    # The track's other hits whose own speed and pitch agree with the line's:
    # their reference time less the line's (seconds).  Where the track
    # repeats the passage, they lie on parallel lines (repeat_shifts).
    others: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)


@dataclass(frozen=True)
class Hits:
    """Candidate hits of one query, one row each."""

    track: np.ndarray
    tq: np.ndarray  # query anchor time, frames
    tr: np.ndarray  # reference anchor time, frames
    sq: np.ndarray  # query span, frames
    sr: np.ndarray  # reference span, frames
    pitch: np.ndarray  # implied pitch shift, semitones
    log_speed: np.ndarray | None = None  # implied speed (span ratio), log2; derived when not given

    def __post_init__(self):
        if self.log_speed is None:
            object.__setattr__(self, "log_speed", span_log_speed(self.sr, self.sq))

    def take(self, sel) -> "Hits":
        return Hits(*(getattr(self, k)[sel] for k in ("track", "tq", "tr", "sq", "sr", "pitch", "log_speed")))

    def __len__(self) -> int:
        return len(self.track)


# Relative: far wider than the rounding of log2 and exp2, far narrower than a
# half frame of span.
_BOUND_SLACK = 1e-9


def span_log_speed(sr: np.ndarray, sq: np.ndarray) -> np.ndarray:
    """The speed a hit implies by itself: log2 of reference span over query span."""
    return np.log2(np.maximum(sr, 0.25) / sq)


def gather_hits(q: Triplets, owner: np.ndarray, probe: np.ndarray, ids: np.ndarray,
                cfg: FeatureConfig, mcfg: MatchConfig, removed: np.ndarray | None = None) -> Hits:
    """Join lookup results with the query triplets and drop hits whose own span
    ratio or anchor frequency rules out every speed and pitch searched, or
    whose track `removed` marks."""
    lo, hi = np.log2(mcfg.min_speed), np.log2(mcfg.max_speed)
    # The span of a hit is known to about a frame: allow that much error
    # (slack, below).  The kernel takes the speeds as the reference spans, in
    # half frames, that each query triplet accepts, a hair more than that:
    # numpy's log2 and the kernel's differ in the last bit now and then, so
    # numpy's test on the hits the kernel keeps decides, as before.
    span = np.asarray(q.span, np.float64)
    sr_lo = np.floor(2 * span * np.exp2(lo - 1.0 / span) * (1 - _BOUND_SLACK)).astype(np.int64)
    sr_hi = np.ceil(2 * span * np.exp2(hi + 1.0 / span) * (1 + _BOUND_SLACK)).astype(np.int64)
    track, tq, tr, sq, sr, pitch = K.gather_hits(
        np.asarray(probe, np.int64), np.asarray(ids, np.int64), np.asarray(owner, np.int64), q.t1, q.f1, q.span,
        np.zeros(0, bool) if removed is None else removed, SPAN_BITS, FREQ_BITS, TIME_BITS,
        12.0 / cfg.bins_per_octave, mcfg.max_pitch + mcfg.pitch_tol, sr_lo, sr_hi)
    log_speed = span_log_speed(sr, sq)
    slack = 1.0 / sq
    ok = (log_speed >= lo - slack) & (log_speed <= hi + slack)
    h = Hits(track, tq, tr, sq, sr, pitch, log_speed)
    return h if ok.all() else h.take(ok)


def align_hits(h: Hits, cfg: FeatureConfig, mcfg: MatchConfig, query_frames: float) -> list[Candidate]:
    """Best alignment of each of the most promising tracks, best first."""
    if len(h) == 0:
        return []
    tmid = 0.5 * query_frames
    log_speed = np.clip(h.log_speed, np.log2(mcfg.min_speed), np.log2(mcfg.max_speed))
    tracks, centres, theirs = _promising_tracks(h, log_speed, tmid, mcfg)
    fs = cfg.frame_seconds
    tol = mcfg.align_tol_s / fs
    # Their hits sorted by track, so that each candidate's hits are one slice.
    hs = h.take(theirs[np.argsort(h.track[theirs], kind="stable")])
    lo = np.searchsorted(hs.track, tracks, side="left")
    hi = np.searchsorted(hs.track, tracks, side="right")
    out = []
    for t, centre, a, b in zip(tracks, centres, lo, hi):
        c = _align_track(hs.take(slice(a, b)), int(t), centre, tol, fs, mcfg, query_frames, tmid)
        if c is not None:
            out.append(c)
    out.sort(key=lambda c: -c.score)
    return out


def _promising_tracks(h: Hits, log_speed: np.ndarray, tmid: float, mcfg: MatchConfig,
                      coarse: float = 8.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tracks whose hits pile up in one coarse cell of reference time at the
    query's middle, each hit projected there with its own span-ratio speed.
    Cheap and tolerant, so the exact Hough vote runs on few tracks.

    Returns the tracks, best first; for each the median log2 speed of the
    hits in its best cell (where to centre the exact search); and the
    positions of their hits in `h`, in order.
    """
    cell = np.floor((h.tr + 2.0**log_speed * (tmid - h.tq)) / coarse).astype(np.int64)
    key = (h.track << 24) + (cell + (1 << 23))
    keys, counts = np.unique(key, return_counts=True)
    # A line near a cell edge splits in two: count each cell with its right neighbour.
    has = np.zeros(len(keys), bool)
    has[:-1] = keys[1:] == keys[:-1] + 1
    pair = counts.copy()
    pair[:-1] += np.where(has[:-1], counts[1:], 0)
    # The coarse count is nearly an upper bound of the final score: tracks well
    # under the decision threshold are not worth the exact vote.
    good = np.flatnonzero(pair >= max(3.0, 0.7 * mcfg.min_hit_score))
    track = keys[good] >> 24
    # The best cell of each track: its largest pair, the first (lowest cell) of ties.
    order = np.lexsort((-pair[good], track))
    first = good[order[np.unique(track[order], return_index=True)[1]]]
    first = first[np.argsort(-pair[first], kind="stable")][: mcfg.max_candidates]
    tracks = keys[first] >> 24
    lut = np.zeros(int(h.track.max()) + 1, bool)
    lut[tracks] = True
    theirs = np.flatnonzero(lut[h.track])
    mine = key[theirs]
    centres = np.empty(len(first))
    for k, c in enumerate(first):
        sel = (mine == keys[c]) | (mine == keys[c] + 1) & has[c]
        centres[k] = np.median(log_speed[theirs[sel]])
    return tracks, centres, theirs


def _speed_grid(centre: float, mcfg: MatchConfig, tol: float, half_span: float,
                width: float = 0.06) -> np.ndarray:
    """Speeds to try around `centre` (log2), within the searched range, in steps
    fine enough that a line's hits stay within `tol` frames of each other over
    `half_span` frames either side of the query's middle."""
    lo = max(np.log2(mcfg.min_speed), centre - width)
    hi = min(np.log2(mcfg.max_speed), centre + width)
    step = np.log2(1.0 + min(mcfg.speed_step, tol / max(half_span, 1.0)))
    return 2.0 ** np.arange(lo, hi + step * 0.5, step)


def _align_track(h: Hits, track: int, centre: float, tol: float, fs: float, mcfg: MatchConfig,
                 query_frames: float, tmid: float) -> Candidate | None:
    # Vote with query times centred on the query's middle, so that an error
    # in speed moves the hits least.
    speeds = _speed_grid(centre, mcfg, tol, float(np.abs(h.tq - tmid).max()))
    s, a_mid, votes = K.best_alignment(h.tq - tmid, h.tr, speeds, tol)
    if votes < 3:
        return None
    a = a_mid - s * tmid
    inl = np.abs(h.tr - (a + s * h.tq)) <= tol
    # Refine the line by least squares on its inliers, then take them again.
    x, y = h.tq[inl], h.tr[inl]
    if np.ptp(x) > 1.0 / fs:
        xm, ym = x.mean(), y.mean()
        s_fit = float(np.dot(x - xm, y - ym) / np.dot(x - xm, x - xm))
        a_fit = ym - s_fit * xm
        if mcfg.min_speed * 0.98 <= s_fit <= mcfg.max_speed * 1.02:
            s, a = s_fit, a_fit
            inl = np.abs(h.tr - (a + s * h.tq)) <= tol
    # A hit on the line by chance has a random span ratio and pitch: keep only
    # hits whose own speed and pitch agree with the line's.
    span_err = np.abs(h.log_speed - np.log2(s))
    inl &= span_err <= 1.0 / h.sq + 0.03
    if inl.sum() < 3:
        return None
    pitch = float(np.median(h.pitch[inl]))
    inl &= np.abs(h.pitch - pitch) <= mcfg.pitch_tol
    if inl.sum() < 3:
        return None
    hi = h.take(inl)
    pitch = float(np.median(hi.pitch))
    score = _fit_weight(hi, s, a, pitch, fs, mcfg) - (0.0 if mcfg.near_unit(s, pitch) else mcfg.off_unit_penalty)
    # The matched range spans the substantial runs of aligned hits (gaps of
    # more than `max_gap_s` split runs): a stray chance hit must not stretch it.
    run = _densest_run(hi.tq, mcfg.max_gap_s / fs)
    q0 = float(hi.tq[run].min())
    q1 = float(min(query_frames, (hi.tq[run] + hi.sq[run]).max()))
    # The track's other hits agreeing with the line's speed and pitch (where repeats lie).
    dr = h.tr - (a + s * h.tq)
    others = (span_err <= 1.0 / h.sq + 0.03) & (np.abs(h.pitch - pitch) <= mcfg.pitch_tol) & (np.abs(dr) > tol)
    return Candidate(
        track=track,
        score=float(score),
        speed=float(s),
        pitch_semitones=pitch,
        query_start=q0 * fs,
        query_end=q1 * fs,
        ref_start=(a + s * q0) * fs,
        ref_end=(a + s * q1) * fs,
        hits=np.stack([hi.tq * fs, hi.tr * fs], axis=1),
        others=dr[others] * fs,
    )


def at_unit(c: Candidate, mcfg: MatchConfig) -> Candidate | None:
    """The plain-copy reading of a line near unit speed and pitch (within
    `unit_speed_tol` and `unit_pitch_tol`, not on it): the same line at speed
    1 and pitch 0, through the point of the middle of its matched range.  A
    copy's few surviving hits (under noise, or cut by the lookup bound) fit
    its speed only roughly, and over seconds a speed off by 1% misplaces its
    far peaks by more than verification's tolerance.  None when the line is
    not near unit or already on it."""
    if not mcfg.near_unit(c.speed, c.pitch_semitones) or (c.speed == 1.0 and c.pitch_semitones == 0.0):
        return None
    q_mid = 0.5 * (c.query_start + c.query_end)
    r_mid = c.ref_start + c.speed * (q_mid - c.query_start)
    return dataclasses.replace(c, speed=1.0, pitch_semitones=0.0, ref_start=r_mid - (q_mid - c.query_start),
                               ref_end=r_mid + (c.query_end - q_mid))


def repeat_shifts(dr: np.ndarray, min_shift: float, tol: float, max_repeats: int) -> list[float]:
    """Lines parallel to a match's that its track's other hits vote for.

    dr : those hits' reference times less the match's line (Candidate.others).
    A track that repeats the passage holds its triplets at each repeat, so
    the lookup finds them there too, on a line shifted by the repeat's
    distance.  Only shifts of at least `min_shift` (the match's range in the
    reference: a repeat is a range disjoint from the match's) are voted on,
    so that a rhythm's overlapping echoes do not crowd them out.  Line by
    line, most voted first (bins of `tol`), each line of at least 3 hits is
    kept and its hits set aside, up to `max_repeats`.  Chance lines are kept
    too: the caller verifies each.  Returns the shifts (dr's unit), in the
    order found.
    """
    out: list[float] = []
    rest = np.abs(dr) >= max(min_shift, tol)
    b = np.floor(dr / tol)  # each hit's bin, as the vote counts it
    while len(out) < max_repeats and (n := int(rest.sum())) >= 3:
        # Speed 0: a vote on the shift alone, in bins of `tol`.
        _, shift, votes = K.best_alignment(np.zeros(n), dr[rest], np.zeros(1), tol)
        if votes < 3:
            break
        # The hits that voted: the two bins the vote took.
        first = round(shift / tol) - 1
        on = rest & (b >= first) & (b <= first + 1)
        out.append(float(np.median(dr[on])))
        rest &= ~on
    return out


def _fit_weight(h: Hits, speed: float, offset: float, pitch: float, fs: float, mcfg: MatchConfig) -> float:
    """Evidence of the hits on a line: each distinct (query, reference) anchor
    pair weighs exp(-(dt/sigma_t)^2/2 - (dp/sigma_p)^2/2), dt its distance from
    the line in time (about the hits' own median, which absorbs a constant
    bias of the fit) and dp from the match's pitch.  A true match's hits lie
    on the line to a fraction of a frame and share one pitch; chance hits
    scatter over the whole tolerance, so they weigh less."""
    key = np.rint(h.tq * 2).astype(np.int64) * (1 << 22) + np.rint(h.tr * 2).astype(np.int64)
    _, first = np.unique(key, return_index=True)
    dt = h.tr[first] - (offset + speed * h.tq[first])
    dt -= np.median(dt)
    z = (dt * (fs / mcfg.hit_time_sigma_s)) ** 2 + ((h.pitch[first] - pitch) / mcfg.hit_pitch_sigma) ** 2
    return float(np.exp(-0.5 * z).sum())


# -- verification ---------------------------------------------------------------

class ReferenceAnchors:
    """Each catalog track's peak positions for verification and locating: the
    distinct anchors (to half a frame, to a bin) of its stored triplets, in
    time order.  2 bytes an anchor: the half frames since the previous one
    (a gap of more than 254 takes filler entries of 255 half frames, bin 255)
    and the bin."""

    FILLER = 255

    def __init__(self):
        self._dt: dict[int, np.ndarray] = {}
        self._f: dict[int, np.ndarray] = {}

    def add(self, numbers: np.ndarray, t1: np.ndarray, f1: np.ndarray) -> None:
        """Anchors of the triplets of tracks `numbers` (one per triplet), at t1 frames, f1 bins."""
        if len(numbers) == 0:
            return
        key = ((np.asarray(numbers, np.int64) << 40) | (np.rint(2 * np.asarray(t1)).astype(np.int64) << 8)
               | np.clip(np.rint(f1), 0, self.FILLER - 1).astype(np.int64))
        key = np.sort(key)  # distinct keys by sorting: np.unique's hash table is ~30x slower here
        key = key[np.concatenate(([True], key[1:] != key[:-1]))]
        num = key >> 40
        for part in np.split(key, np.flatnonzero(np.diff(num)) + 1):
            t = (part >> 8) & ((1 << 32) - 1)
            gap = np.diff(t, prepend=0)
            fillers = np.maximum(gap - 1, 0) // self.FILLER  # whole filler steps before each anchor
            dt = np.full(len(t) + int(fillers.sum()), self.FILLER, np.uint8)
            f = np.full(len(dt), self.FILLER, np.uint8)
            at = np.arange(len(t)) + np.cumsum(fillers)  # each anchor after its fillers
            dt[at] = gap - fillers * self.FILLER
            f[at] = part & 0xFF
            self._dt[int(part[0] >> 40)], self._f[int(part[0] >> 40)] = dt, f

    def discard(self, number: int) -> None:
        self._dt.pop(number, None)
        self._f.pop(number, None)

    def get(self, number: int) -> tuple[np.ndarray, np.ndarray]:
        """(frames, bins) as float64, in time order; empty for an unknown track."""
        dt = self._dt.get(number)
        if dt is None:
            return np.zeros(0), np.zeros(0)
        t = np.cumsum(dt, dtype=np.int64)
        f = self._f[number]
        real = f != self.FILLER
        return 0.5 * t[real], f[real].astype(np.float64)

    def __len__(self) -> int:
        return len(self._dt)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._dt.values()) + sum(a.nbytes for a in self._f.values())


class NearCounts(NamedTuple):
    """Cumulative counts of a query's near grid, made once per query
    (near_counts) so that any candidate's chance rates are a few lookups."""

    over_time: np.ndarray  # int32 [rows + 1, bins]: set cells before each row, bin by bin
    over_bins: np.ndarray  # int16 [rows, bins + 1]: set cells before each bin, row by row (bins < 256)


def near_counts(near: np.ndarray) -> NearCounts:
    """The cumulative counts of `near` along time and along frequency."""
    over_time = np.zeros((near.shape[0] + 1, near.shape[1]), np.int32)
    np.cumsum(near, axis=0, dtype=np.int32, out=over_time[1:])
    over_bins = np.zeros((near.shape[0], near.shape[1] + 1), np.int16)
    np.cumsum(near, axis=1, dtype=np.int16, out=over_bins[:, 1:])
    return NearCounts(over_time, over_bins)


def verify(near: np.ndarray, anchors: tuple[np.ndarray, np.ndarray], c: Candidate,
           cfg: FeatureConfig, mcfg: MatchConfig, counts: NearCounts | None = None
           ) -> tuple[float, int, int, float]:
    """Check a candidate against its reference's own peaks.

    near : bool [2 * query frames, bins], the query's cells near a local
    maximum, a row every half frame (features.near_grid); anchors : the
    reference's peaks (frames, bins); counts : near_counts(near), when
    already made.
    The window is the candidate's matched query range widened by
    `verify_margin_s` either side, and at least `verify_min_window_s` long
    (within the query): a chance alignment's few hits are query peaks by
    construction and must not make the count by themselves.  Each anchor
    whose image along the candidate's line (speed, offset) and pitch falls in
    the window is looked up in `near`.  By chance, an image at row t in bin b
    is found at the rate p at which the query sets `near` there, the largest
    of three estimates:
      * bin b's rate over the window (the query's density, frequency by
        frequency);
      * bin b's rate over +-`verify_local_s` around the image (a loud or busy
        passage offers more coincidences than the window's mean says);
      * row t's rate across the other bins (beyond +-(2 verify_tol_bins + 1)
        of b, what a peak found for this image could set), scaled by bin b's
        rate over the window's mean: a drum hit or any onset sets maxima
        across the spectrum in its rows, and a reference whose own onsets
        fall on the query's (two tracks at one tempo) finds peaks there at
        any frequency.  Without this a few seconds of rhythm shared by
        unrelated tracks scored like a copy.

    Returns (z, found, looked up, mean p), z = (found - sum p) /
    sqrt(sum p (1 - p)): how far the count lies above chance.
    """
    fs = cfg.frame_seconds / 2  # near has a row every half frame
    tr, fr = anchors
    tr = 2 * tr
    n_frames, n_bins = near.shape
    q0, q1 = c.query_start / fs, c.query_end / fs
    offset = c.ref_start / fs - c.speed * q0
    half = max(0.5 * (q1 - q0) + mcfg.verify_margin_s / fs, 0.5 * mcfg.verify_min_window_s / fs)
    lo = int(np.floor(min(max(0.5 * (q0 + q1) - half, 0.0), max(n_frames - 2 * half, 0.0))))
    hi = int(np.ceil(min(lo + 2 * half, n_frames - 1.0)))
    tq = np.rint((tr - offset) / c.speed).astype(np.int64)
    fq = np.rint(fr + c.pitch_semitones * cfg.bins_per_octave / 12.0).astype(np.int64)
    sel = (tq >= lo) & (tq <= hi) & (fq >= 0) & (fq < n_bins)
    tq, fq = tq[sel], fq[sel]
    if len(tq) == 0:
        return 0.0, 0, 0, 0.0
    if counts is None:
        counts = near_counts(near)
    over_time, over_bins = counts
    k = int(near[tq, fq].sum())
    in_window = over_time[hi + 1] - over_time[lo]
    window = in_window[fq] / (hi + 1 - lo)
    w = int(round(mcfg.verify_local_s / fs))
    a, b = np.maximum(tq - w, 0), np.minimum(tq + w + 1, n_frames)
    local = (over_time[b, fq] - over_time[a, fq]) / (b - a)
    g = 2 * mcfg.verify_tol_bins + 1
    f0, f1 = np.maximum(fq - g, 0), np.minimum(fq + g + 1, n_bins)
    across = (over_bins[tq, n_bins] - over_bins[tq, f1] + over_bins[tq, f0]) / np.maximum(n_bins - (f1 - f0), 1)
    mean = max(float(in_window.sum()) / ((hi + 1 - lo) * n_bins), 1e-9)
    p = np.maximum(np.maximum(window, local), np.minimum(across * window / mean, 1.0))
    z = (k - float(p.sum())) / np.sqrt(max(float(np.sum(p * (1.0 - p))), 1e-6))
    return float(z), k, len(tq), float(p.mean())


def verify_line(near: np.ndarray, anchors: tuple[np.ndarray, np.ndarray], c: Candidate, cfg: FeatureConfig,
                mcfg: MatchConfig, counts: NearCounts | None = None) -> tuple[Candidate, float]:
    """The candidate as verified (verify's z), or its plain-copy reading
    (at_unit) where that verifies better: (the reading kept, its z)."""
    z = verify(near, anchors, c, cfg, mcfg, counts)[0]
    unit = at_unit(c, mcfg)
    if unit is not None:
        z_unit = verify(near, anchors, unit, cfg, mcfg, counts)[0]
        if z_unit > z:
            return unit, z_unit
    return c, z


def _densest_run(t: np.ndarray, max_gap: float) -> np.ndarray:
    """Mask of the times that lie in substantial runs: split the sorted times
    where consecutive ones are more than `max_gap` apart, and drop runs of at
    most 2 times or 10% of all (stray chance hits on the line)."""
    order = np.argsort(t, kind="stable")
    st = t[order]
    run_id = np.concatenate([[0], np.cumsum(np.diff(st) > max_gap)])
    sizes = np.bincount(run_id)
    keep = sizes > max(2, 0.1 * len(t))
    if not keep.any():
        keep = sizes == sizes.max()
    mask = np.zeros(len(t), bool)
    mask[order[keep[run_id]]] = True
    return mask


def locate_range(t1: np.ndarray, f1: np.ndarray, speed: float, offset: float, pitch: float,
                 q0: float, q1: float, maxima: Peaks, n_frames: int, cfg: FeatureConfig,
                 mcfg: MatchConfig) -> tuple[float, float]:
    """The range [q0, q1] (query frames) of a match, grown outward over the
    stretches where the catalog track's peaks are in the query.

    t1, f1 : the track's triplet anchors (frames, bins) as stored, anchor by
    anchor (a peak anchoring several triplets repeats in a row): the
    reference's own peaks.  Each is mapped into the query along the line
    (reference time = offset + speed * query time, in frames) and shifted by
    `pitch` semitones, and found or not among `maxima` (the query's dense local
    maxima, in time order) within the locate tolerances.  Its chance p0 of
    being found is what the maxima at its frequency around it offer; inside
    [q0, q1] the share found is p1.  A peak weighs log(p1/p0) when found,
    log((1-p1)/(1-p0)) when not: out of the match these sum to a falling walk.
    Walking away from each end, the range takes in the peaks up to the
    walk's maximum, when that maximum reaches log(locate_odds).
    """
    fs = cfg.frame_seconds
    t1, f1 = np.asarray(t1, np.float64), np.asarray(f1, np.float64)
    pt = (t1 - offset) / speed
    pf = f1 + pitch * cfg.bins_per_octave / 12.0
    keep = (pt >= 0) & (pt < n_frames) & (pf >= 0) & (pf <= cfg.n_bins - 1)
    keep[1:] &= (t1[1:] != t1[:-1]) | (f1[1:] != f1[:-1])  # each peak once
    order = np.argsort(pt[keep], kind="stable")
    pt, pf = pt[keep][order], pf[keep][order]
    inside = (pt >= q0) & (pt <= q1)
    if not inside.any() or inside.all():
        return q0, q1
    tol_t = mcfg.locate_tol_s / fs
    tol_f = mcfg.locate_tol_semitones * cfg.bins_per_octave / 12.0
    window = max(mcfg.locate_background_s / fs, 2.0 * tol_t)
    hit, background = K.constellation_hits(maxima.t, maxima.f, pt, pf, tol_t, tol_f, window)
    # Chance: the background's rate per frame over the length of query it was
    # counted on, times the length a find may lie in.  Both rates count half
    # a peak more (Jeffreys' prior), so that an empty background does not make
    # a find infinitely telling.
    span = (np.minimum(pt + window, n_frames) - np.maximum(pt - window, 0.0)
            - (np.minimum(pt + tol_t, n_frames) - np.maximum(pt - tol_t, 0.0)))
    p0 = -np.expm1(-(background + 0.5) / np.maximum(span, 1.0) * 2.0 * tol_t)
    p1 = (hit[inside].sum() + 0.5) / (inside.sum() + 1.0)
    with np.errstate(divide="ignore"):
        weight = np.where(hit, np.log(p1 / p0), np.log1p(-p1) - np.log1p(-p0))
    weight[p0 >= p1] = 0.0  # where chance finds as much as the match, nothing is learnt
    need = np.log(mcfg.locate_odds)
    before = np.flatnonzero(pt < q0)[::-1]
    if len(before):
        walk = np.cumsum(weight[before])
        k = int(np.argmax(walk))
        if walk[k] >= need:
            q0 = float(pt[before[k]])
    after = np.flatnonzero(pt > q1)
    if len(after):
        walk = np.cumsum(weight[after])
        k = int(np.argmax(walk))
        if walk[k] >= need:
            q1 = float(pt[after[k]])
    return q0, q1
