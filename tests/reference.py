"""Plain numpy references of the numba kernels in simsearch._kernels.

Same names and signatures as the kernels.  Each is written from the kernel's
docstring (the definition), as directly as numpy allows, and never from the
kernel's loops: where the kernel sweeps, counts and caps buffers, these take
windows, sets and products.  tests/test_kernels.py compares the two.
"""

from __future__ import annotations

import itertools

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def max_filter_2d(S, rt, rf):
    """Maximum of S over a (2*rt+1) x (2*rf+1) window centred on each cell;
    cells outside S are ignored (padding with -inf never wins a maximum)."""
    S = np.asarray(S)
    n, m = S.shape
    padded = np.full((n + 2 * rt, m + 2 * rf), -np.inf)
    padded[rt : rt + n, rf : rf + m] = S
    windows = sliding_window_view(padded, (2 * rt + 1, 2 * rf + 1))
    return windows.max(axis=(2, 3)).astype(S.dtype)


def _vertex_offset(before, centre, after):
    """Offset of the vertex of the parabola through (-1, before), (0, centre),
    (1, after); 0 where the parabola is not concave (no maximum to refine to)."""
    curvature = before - 2.0 * centre + after
    out = np.zeros_like(centre)
    ok = curvature < 0
    out[ok] = (before[ok] - after[ok]) / (2.0 * curvature[ok])
    return out


def spectral_peaks(S, rt, rf, floor):
    """Cells equal to the maximum of their neighbourhood and louder than
    `floor`, in time-then-frequency order, each refined by a parabola through
    it and its two neighbours along time and along frequency (cells on an
    edge are not refined along that axis).  Returns (t, f, v)."""
    S = np.asarray(S)
    n, m = S.shape
    is_peak = (S == max_filter_2d(S, rt, rf)) & (S > floor)
    ti, fi = np.nonzero(is_peak)  # row-major: time, then frequency
    S64 = S.astype(np.float64)
    x = S64[ti, fi]
    dt = np.zeros(len(ti))
    inner = (ti > 0) & (ti < n - 1)
    dt[inner] = _vertex_offset(S64[ti[inner] - 1, fi[inner]], x[inner], S64[ti[inner] + 1, fi[inner]])
    df = np.zeros(len(fi))
    inner = (fi > 0) & (fi < m - 1)
    df[inner] = _vertex_offset(S64[ti[inner], fi[inner] - 1], x[inner], S64[ti[inner], fi[inner] + 1])
    return ti + dt, fi + df, S[ti, fi].astype(np.float32)


def frame_of(t):
    """The frame a (refined) peak time falls in: the nearest integer, halves up."""
    return np.floor(np.asarray(t, np.float64) + 0.5)


def peak_triplets(t, f, fanout, min_span, max_span, max_df):
    """(anchor, second, third) index triplets, t in time order.

    The targets of anchor i are the first `fanout` peaks after it (in a
    strictly later frame) within `max_span` frames and `max_df` bins; each
    pair of targets in distinct frames whose later member is at least
    `min_span` frames after the anchor makes a triplet.
    """
    t = np.asarray(t, np.float64)
    f = np.asarray(f, np.float64)
    frame = frame_of(t)
    rows = []
    for i in range(len(t)):
        later = np.arange(i + 1, len(t))
        ok = (frame[later] > frame[i]) & (t[later] - t[i] <= max_span) & (np.abs(f[later] - f[i]) <= max_df)
        targets = later[ok][:fanout]
        for a, b in itertools.combinations(targets, 2):
            if frame[a] != frame[b] and t[b] - t[i] >= min_span:
                rows.append((i, a, b))
    return np.array(rows, np.int64).reshape(-1, 3)


def _cell(x, n):
    """Quantisation cell of x (in steps), clamped to the n cells."""
    return np.clip(np.floor(np.asarray(x, np.float64)), 0, n - 1).astype(np.int64)


def _band_fields(f1, span, f1_band, n_fb, min_span, span_oct, n_sb):
    fb = _cell(np.asarray(f1, np.float64) / f1_band, n_fb)
    sb = _cell(np.log2(np.asarray(span, np.float64) / min_span) / span_oct, n_sb)
    return fb, sb


def _louder(dv):
    """The three loudness-order bits of each triplet: v1 > v2, v1 > v3, v2 > v3."""
    return (np.asarray(dv).reshape(-1, 3) > 0).astype(np.int64)


# The loudness-order bits three levels can have: found by trying every way of
# ranking three levels (ties included), not by reasoning about cycles.
POSSIBLE_ORDERS = frozenset((int(a > b), int(a > c), int(b > c)) for a, b, c in itertools.product(range(3), repeat=3))


# Fields of a code, most significant first: the invariant cells, the two
# bands, then the three loudness-order bits.
def _radix(n_r, n_df, n_fb, n_sb):
    return (n_r, n_df, n_df, n_fb, n_sb, 2, 2, 2)


def hash_codes(xr, xd2, xd3, f1, span, dv, n_r, n_df, f1_band, n_fb, min_span, span_oct, n_sb):
    """One code per triplet: the fields' cells (ratio, two frequency
    differences, anchor-frequency band, span band in octaves above
    min_span) and the signs of the level differences dv, written as one
    mixed-radix number, the ratio most significant."""
    fb, sb = _band_fields(f1, span, f1_band, n_fb, min_span, span_oct, n_sb)
    bits = _louder(dv)
    cells = (_cell(xr, n_r), _cell(xd2, n_df), _cell(xd3, n_df), fb, sb, bits[:, 0], bits[:, 1], bits[:, 2])
    return np.ravel_multi_index(cells, _radix(n_r, n_df, n_fb, n_sb)).astype(np.uint64)


def _cell_range(lo, hi, n):
    """Cells (clamped to the n cells) that values in [lo, hi] fall in."""
    return range(int(_cell(lo, n)), int(_cell(hi, n)) + 1)


def probe_codes(xr, xd2, xd3, f1, span, dv, n_r, n_df, f1_band, n_fb, min_span, span_oct, n_sb,
                margin, f1_lo, f1_hi, span_lo, span_hi, tie_db):
    """Every code a reference triplet may carry when it matches query triplet
    i: each invariant field anywhere within `margin` steps of the query's,
    the anchor frequency moved by any shift in [f1_lo, f1_hi] bins (reference
    = query - shift), the span scaled by any factor in [span_lo, span_hi],
    and each level difference of either sign when it is within `tie_db` of 0,
    as long as some three levels have that loudness order.
    Returns (codes, owner, detour), one probe per (triplet, code); detour:
    the fields in another cell than the query's own value's, plus the
    loudness signs other than the query's."""
    codes, owner, detour = [], [], []
    radix = _radix(n_r, n_df, n_fb, n_sb)
    dv = np.asarray(dv, np.float64).reshape(-1, 3)
    bits = _louder(dv)
    for i in range(len(xr)):
        r_cells = _cell_range(xr[i] - margin, xr[i] + margin, n_r)
        d2_cells = _cell_range(xd2[i] - margin, xd2[i] + margin, n_df)
        d3_cells = _cell_range(xd3[i] - margin, xd3[i] + margin, n_df)
        fb_cells = _cell_range((f1[i] - f1_hi) / f1_band, (f1[i] - f1_lo) / f1_band, n_fb)
        sb_cells = _cell_range(np.log2(span[i] * span_lo / min_span) / span_oct,
                               np.log2(span[i] * span_hi / min_span) / span_oct, n_sb)
        sign_options = [(0, 1) if abs(dv[i, k]) < tie_db else (bits[i, k],) for k in range(3)]
        orders = [o for o in itertools.product(*sign_options) if o in POSSIBLE_ORDERS]
        own = (_cell(xr[i], n_r), _cell(xd2[i], n_df), _cell(xd3[i], n_df))
        for cell in itertools.product(r_cells, d2_cells, d3_cells, fb_cells, sb_cells, orders):
            codes.append(np.ravel_multi_index(cell[:5] + cell[5], radix))
            owner.append(i)
            detour.append(sum(int(c != o) for c, o in zip(cell[:3], own))
                          + sum(int(s != b) for s, b in zip(cell[5], bits[i])))
    return np.array(codes, np.uint64), np.array(owner, np.int64), np.array(detour, np.uint8)


def line_votes(tq, tr, speed, offset, tol):
    """Hits counted for the line tr = offset + speed * tq: those whose offset
    tr - speed * tq falls in the two `tol`-wide bins that meet at `offset`."""
    tq = np.asarray(tq, np.float64)
    tr = np.asarray(tr, np.float64)
    edge = int(round(offset / tol))
    bins = np.floor((tr - speed * tq) / tol)
    return int(np.count_nonzero((bins == edge - 1) | (bins == edge)))


def best_alignment(tq, tr, speeds, tol):
    """Hough vote over (speed, offset): for each speed, hits vote for the bin
    of their offset tr - speed * tq (bins `tol` wide), and a line's votes are
    those of two adjacent bins.  Returns (speed, offset, votes) of the line
    with most votes (the first speed and lowest offset among ties); the
    offset is the edge the two bins share, 0 when there are no hits."""
    tq = np.asarray(tq, np.float64)
    tr = np.asarray(tr, np.float64)
    best = (speeds[0], 0.0, 0)
    for s in speeds:
        if len(tq) == 0:
            break
        bins = np.floor((tr - s * tq) / tol).astype(np.int64)
        values, counts = np.unique(bins, return_counts=True)
        count_of = dict(zip(values.tolist(), counts.tolist()))
        votes = np.array([count_of[v] + count_of.get(v + 1, 0) for v in values.tolist()])
        k = int(np.argmax(votes))
        if votes[k] > best[2]:
            best = (s, (values[k] + 1.0) * tol, int(votes[k]))
    return best


def constellation_hits(qt, qf, pt, pf, tol_t, tol_f, half_window):
    """Whether a peak lies within `tol_t` frames and `tol_f` bins of each
    point, and how many peaks lie within `tol_f` bins of it at more than
    `tol_t` and at most `half_window` frames.  Returns (hit, background)."""
    dt = np.abs(np.asarray(qt, np.float64)[None, :] - np.asarray(pt, np.float64)[:, None])
    same_f = np.abs(np.asarray(qf, np.float64)[None, :] - np.asarray(pf, np.float64)[:, None]) <= tol_f
    hit = (same_f & (dt <= tol_t)).any(axis=1)
    background = (same_f & (dt > tol_t) & (dt <= half_window)).sum(axis=1).astype(np.int64)
    return hit, background


def scatter_entries(codes, ids, k, code_size, start, sizes, filled, image):
    """Entries, in order, into the next free slots of their lists (a code's
    low k bits): an entry's rank in its list is the slots already taken plus
    the entries of that list before it; the entries before the first whose
    rank reaches its list's size are written, each its code's high bits
    (code_size bytes) at start + rank * code_size and its id (8 bytes) after
    the list's codes, little-endian.  Updates `filled` and `image` in place;
    returns the entries written."""
    codes = np.asarray(codes, np.uint64)
    lists = (codes & np.uint64((1 << k) - 1)).astype(np.int64)
    order = np.argsort(lists, kind="stable")
    first_of_list = np.searchsorted(lists[order], lists[order], side="left")
    rank = np.empty(len(codes), np.int64)
    rank[order] = filled[lists[order]] + np.arange(len(codes)) - first_of_list
    full = np.flatnonzero(rank >= sizes[lists])
    n = int(full[0]) if len(full) else len(codes)
    lists, rank = lists[:n], rank[:n]
    high = np.ascontiguousarray(codes[:n] >> np.uint64(k), "<u8").view(np.uint8).reshape(-1, 8)
    id_bytes = np.ascontiguousarray(ids[:n], "<i8").view(np.uint8).reshape(-1, 8)
    for b in range(code_size):
        image[start[lists] + rank * code_size + b] = high[:, b]
    for b in range(8):
        image[start[lists] + sizes[lists] * code_size + rank * 8 + b] = id_bytes[:, b]
    filled += np.bincount(lists, minlength=len(filled))
    return n


def gather_hits(probe, ids, owner, t1, f1, span, removed, span_bits, freq_bits, time_bits,
                pitch_per_bin, max_pitch, sr_lo, sr_hi):
    """The lookup results (ids unpacked field by field) joined with their
    query triplets i = owner[probe], less the hits of tracks `removed` marks,
    whose pitch (query anchor bin less the reference's, times
    `pitch_per_bin`) is beyond +-`max_pitch`, or whose reference span in half
    frames lies outside [sr_lo[i], sr_hi[i]].  Returns (track, tq, tr, sq, sr, pitch)."""
    ids = np.asarray(ids, np.int64)
    track = ids >> (span_bits + freq_bits + time_bits)
    tr = ((ids >> (span_bits + freq_bits)) % (1 << time_bits)) / 2
    fr = ((ids >> span_bits) % (1 << freq_bits)) / 2
    half_spans = ids % (1 << span_bits)
    qi = np.asarray(owner)[np.asarray(probe)]
    tq, fq, sq = t1[qi], f1[qi], span[qi]
    pitch = (fq - fr) * pitch_per_bin
    ok = ~np.isin(track, np.flatnonzero(removed)) & (np.abs(pitch) <= max_pitch)
    ok &= (half_spans >= sr_lo[qi]) & (half_spans <= sr_hi[qi])
    return track[ok], tq[ok], tr[ok], sq[ok], half_spans[ok] / 2, pitch[ok]


def list_lookup(image, coarse, stride, sizes, code_size, lists, stored):
    """The entries of each probe's list (lists[p]; none when negative) whose
    stored code begins with stored[p], in list order: list l holds sizes[l]
    entries, their codes (code_size bytes each) then their ids (8 bytes,
    little-endian); the lists follow one another, list c * stride starting
    at byte coarse[c].  Returns (lims, ids) as a range search does."""
    image = np.asarray(image, np.uint8)
    block = np.asarray(sizes, np.int64) * (code_size + 8)
    before = np.cumsum(block) - block  # bytes of the lists before each, from the first
    lims, found = [0], []
    for p, l in enumerate(np.asarray(lists)):
        if l < 0:
            lims.append(lims[-1])
            continue
        start = coarse[l // stride] + before[l] - before[l - l % stride]
        n = int(sizes[l])
        codes = image[start: start + n * code_size].reshape(n, code_size)[:, : stored.shape[1]]
        ids = image[start + n * code_size: start + n * (code_size + 8)].copy().view("<i8")
        keep = ids[(codes == stored[p]).all(axis=1)]
        found.append(keep)
        lims.append(lims[-1] + len(keep))
    return np.array(lims, np.int64), np.concatenate(found or [np.zeros(0, np.int64)]).astype(np.int64)
