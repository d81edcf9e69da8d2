"""numba kernels of the hot path.

Private: no validation, no I/O, no allocation beyond their outputs.  The public
functions in `features`, `matching` and `index` check arguments and call these.
Each kernel has a plain numpy reference in `tests/reference.py`, and the tests
compare them.
"""

from __future__ import annotations

import numba as nb
import numpy as np

_JIT = dict(nopython=True, cache=True, nogil=True)


@nb.jit(**_JIT)
def _is_local_max(S, t, f, rt, rf):
    """S[t, f] >= every cell of its (2*rt+1) x (2*rf+1) neighbourhood.
    Nearest cells first: most cells fail within a few comparisons."""
    n, m = S.shape
    x = S[t, f]
    if rt > 0 and ((t > 0 and S[t - 1, f] > x) or (t < n - 1 and S[t + 1, f] > x)):
        return False
    if rf > 0 and ((f > 0 and S[t, f - 1] > x) or (f < m - 1 and S[t, f + 1] > x)):
        return False
    for u in range(max(0, t - rt), min(n, t + rt + 1)):
        for g in range(max(0, f - rf), min(m, f + rf + 1)):
            if S[u, g] > x:
                return False
    return True


@nb.jit(**_JIT)
def spectral_peaks(S, rt, rf, floor):
    """Cells equal to the maximum of their (2*rt+1) x (2*rf+1) neighbourhood
    and louder than `floor`, with parabolic refinement.

    Returns (t, f, v): time in frames and frequency in bins (float64, refined
    to a fraction of a cell), and the peak's value, in time-then-frequency order.
    """
    n, m = S.shape
    cap = 1024
    tt = np.empty(cap, np.float64)
    ff = np.empty(cap, np.float64)
    vv = np.empty(cap, np.float32)
    k = 0
    for t in range(n):
        for f in range(m):
            x = S[t, f]
            if x <= floor or not _is_local_max(S, t, f, rt, rf):
                continue
            dt = 0.0
            if 0 < t < n - 1:
                a = S[t - 1, f]
                c = S[t + 1, f]
                den = a - 2.0 * x + c
                if den < 0.0:
                    dt = 0.5 * (a - c) / den
            df = 0.0
            if 0 < f < m - 1:
                a = S[t, f - 1]
                c = S[t, f + 1]
                den = a - 2.0 * x + c
                if den < 0.0:
                    df = 0.5 * (a - c) / den
            if k == cap:
                cap *= 2
                tt2 = np.empty(cap, np.float64)
                ff2 = np.empty(cap, np.float64)
                vv2 = np.empty(cap, np.float32)
                tt2[:k] = tt[:k]
                ff2[:k] = ff[:k]
                vv2[:k] = vv[:k]
                tt, ff, vv = tt2, ff2, vv2
            tt[k] = t + dt
            ff[k] = f + df
            vv[k] = x
            k += 1
    return tt[:k], ff[:k], vv[:k]


@nb.jit(**_JIT)
def peak_triplets(t, f, fanout, min_span, max_span, max_df):
    """Triplets (anchor, second, third) of peak indices.

    t, f : peaks in time order.  For each anchor, the first `fanout` later
    peaks (strictly later frame) within `max_span` frames and `max_df` bins
    are its targets; every pair of targets in distinct frames, the later one
    at least `min_span` frames after the anchor, makes a triplet.
    """
    n = len(t)
    cap = n * (fanout * (fanout - 1) // 2)
    out = np.empty((cap, 3), np.int64)
    targets = np.empty(fanout, np.int64)
    k = 0
    for i in range(n):
        ti = np.floor(t[i] + 0.5)
        nt = 0
        j = i + 1
        # Peaks are in order of their frame, not of their refined time: scan
        # one frame past the span so none within it is missed.
        while j < n and nt < fanout and np.floor(t[j] + 0.5) - ti <= max_span + 1:
            if np.floor(t[j] + 0.5) > ti and t[j] - t[i] <= max_span and abs(f[j] - f[i]) <= max_df:
                targets[nt] = j
                nt += 1
            j += 1
        for a in range(nt):
            ja = targets[a]
            for b in range(a + 1, nt):
                jb = targets[b]
                # Distinct frames (not "later": on a plateau, a peak refined to
                # t + 0.5 rounds past a later-listed peak of the next frame).
                if t[jb] - t[i] >= min_span and np.floor(t[jb] + 0.5) != np.floor(t[ja] + 0.5):
                    out[k, 0] = i
                    out[k, 1] = ja
                    out[k, 2] = jb
                    k += 1
    return out[:k]


@nb.jit(**_JIT)
def _pack(r, d2, d3, fb, sb, order, n_df, n_fb, n_sb):
    return ((((r * n_df + d2) * n_df + d3) * n_fb + fb) * n_sb + sb) * 8 + order


@nb.jit(**_JIT)
def hash_codes(xr, xd2, xd3, f1, span, dv, n_r, n_df, f1_band, n_fb, min_span, span_oct, n_sb):
    """Reference-side hash of each triplet: one code per triplet.

    xr, xd2, xd3 are the invariant fields in units of quantisation steps;
    f1 (bins) and span (frames) give the coarse, non-invariant bands;
    dv [n, 3] holds the level differences v1-v2, v1-v3, v2-v3 (dB), whose
    signs (the loudness order of the three peaks) make three more bits.
    """
    n = len(xr)
    out = np.empty(n, np.uint64)
    for i in range(n):
        order = (dv[i, 0] > 0) * 4 + (dv[i, 1] > 0) * 2 + (dv[i, 2] > 0) * 1
        r = min(max(int(np.floor(xr[i])), 0), n_r - 1)
        d2 = min(max(int(np.floor(xd2[i])), 0), n_df - 1)
        d3 = min(max(int(np.floor(xd3[i])), 0), n_df - 1)
        fb = min(max(int(np.floor(f1[i] / f1_band)), 0), n_fb - 1)
        sb = min(max(int(np.floor(np.log2(span[i] / min_span) / span_oct)), 0), n_sb - 1)
        out[i] = _pack(r, d2, d3, fb, sb, order, n_df, n_fb, n_sb)
    return out


@nb.jit(**_JIT)
def _cells(x, margin, n, out):
    """Cells of a value x (in steps) worth probing: its own, and a neighbour
    when x lies within `margin` of that edge."""
    c = min(max(int(np.floor(x)), 0), n - 1)
    k = 0
    out[k] = c
    k += 1
    frac = x - np.floor(x)
    if frac < margin and c - 1 >= 0 and np.floor(x) == c:
        out[k] = c - 1
        k += 1
    if frac > 1.0 - margin and c + 1 < n and np.floor(x) == c:
        out[k] = c + 1
        k += 1
    return k


@nb.jit(**_JIT)
def probe_codes(xr, xd2, xd3, f1, span, dv, n_r, n_df, f1_band, n_fb, min_span, span_oct, n_sb,
                margin, f1_lo, f1_hi, span_lo, span_hi, tie_db):
    """Query-side probes: every code a reference triplet matching each query
    triplet may carry, given quantisation noise (`margin`, in steps), the
    searched range of pitch shifts (f1 moves by [f1_lo, f1_hi] bins) and
    speeds (span scales by [span_lo, span_hi]), and level differences within
    `tie_db` of zero, whose sign may have flipped.

    Returns (codes, owner, detour): owner[k] is the query triplet of probe
    k; detour[k] how many of its invariant fields are a neighbour's cell
    and not their own, plus how many loudness signs it flips.
    """
    n = len(xr)
    cr = np.empty(3, np.int64)
    c2 = np.empty(3, np.int64)
    c3 = np.empty(3, np.int64)
    max_fb = int(np.ceil((f1_hi - f1_lo) / f1_band)) + 2
    max_sb = int(np.ceil(np.log2(span_hi / span_lo) / span_oct)) + 2
    cap = n * 27 * max_fb * max_sb * 8
    orders = np.empty(8, np.int64)
    flips = np.empty(8, np.uint8)
    codes = np.empty(cap, np.uint64)
    owner = np.empty(cap, np.int64)
    detour = np.empty(cap, np.uint8)
    k = 0
    for i in range(n):
        nr = _cells(xr[i], margin, n_r, cr)
        n2 = _cells(xd2[i], margin, n_df, c2)
        n3 = _cells(xd3[i], margin, n_df, c3)
        fb0 = max(int(np.floor((f1[i] - f1_hi) / f1_band)), 0)
        fb1 = min(int(np.floor((f1[i] - f1_lo) / f1_band)), n_fb - 1)
        s_lo = span[i] * span_lo
        s_hi = span[i] * span_hi
        sb0 = max(int(np.floor(np.log2(max(s_lo, 1e-9) / min_span) / span_oct)), 0)
        sb1 = min(int(np.floor(np.log2(s_hi / min_span) / span_oct)), n_sb - 1)
        base = (dv[i, 0] > 0) * 4 + (dv[i, 1] > 0) * 2 + (dv[i, 2] > 0) * 1
        ties = (abs(dv[i, 0]) < tie_db) * 4 + (abs(dv[i, 1]) < tie_db) * 2 + (abs(dv[i, 2]) < tie_db) * 1
        n_ord = 0
        for flip in range(8):
            o = base ^ flip
            # Flip only near-tied signs; orders 2 and 5 are cyclic: impossible.
            if (flip & ~ties) == 0 and o != 2 and o != 5:
                orders[n_ord] = o
                flips[n_ord] = (flip & 1) + ((flip >> 1) & 1) + ((flip >> 2) & 1)
                n_ord += 1
        for a in range(nr):
            for b in range(n2):
                for c in range(n3):
                    for fb in range(fb0, fb1 + 1):
                        for sb in range(sb0, sb1 + 1):
                            for o in range(n_ord):
                                codes[k] = _pack(cr[a], c2[b], c3[c], fb, sb, orders[o], n_df, n_fb, n_sb)
                                owner[k] = i
                                # _cells gives a value's own cell first.
                                detour[k] = (a > 0) + (b > 0) + (c > 0) + flips[o]
                                k += 1
    return codes[:k], owner[:k], detour[:k]


@nb.jit(**_JIT)
def best_alignment(tq, tr, speeds, tol):
    """Hough vote for the line tr = offset + speed * tq that most hits agree with.

    tq, tr : hit times in query and reference (frames).  For each candidate
    speed, offsets are binned at `tol` frames and two adjacent bins counted
    together, so that a line never splits across a bin edge.
    Returns (speed, offset, votes).
    """
    n = len(tq)
    best_votes = 0
    best_s = speeds[0]
    best_a = 0.0
    bins = np.empty(n, np.int64)
    for si in range(len(speeds)):
        s = speeds[si]
        for i in range(n):
            bins[i] = int(np.floor((tr[i] - s * tq[i]) / tol))
        order = np.argsort(bins)
        sb = bins[order]
        # Count hits in [b, b+1] for every distinct b with a two-pointer sweep.
        j = 0
        for i in range(n):
            if i > 0 and sb[i] == sb[i - 1]:
                continue
            if j < i:
                j = i
            while j < n and sb[j] <= sb[i] + 1:
                j += 1
            votes = j - i
            if votes > best_votes:
                best_votes = votes
                best_s = s
                best_a = (sb[i] + 1.0) * tol
    return best_s, best_a, best_votes


@nb.jit(**_JIT)
def constellation_hits(qt, qf, pt, pf, tol_t, tol_f, half_window):
    """Each point (pt[i], pf[i]) against the peaks (qt, qf), qt ascending.

    Returns (hit, background): hit[i] when a peak lies within `tol_t` frames
    and `tol_f` bins of the point; background[i] the peaks within `tol_f`
    bins of it and more than `tol_t`, at most `half_window`, frames away (the
    same frequency, off the point in time: what chance offers around it).
    """
    n = len(pt)
    hit = np.zeros(n, np.bool_)
    background = np.zeros(n, np.int64)
    for i in range(n):
        # Scan a frame wider than the window: the tests on |dt| decide.
        j = np.searchsorted(qt, pt[i] - half_window - 1.0)
        while j < len(qt) and qt[j] <= pt[i] + half_window + 1.0:
            if abs(qf[j] - pf[i]) <= tol_f:
                dt = abs(qt[j] - pt[i])
                if dt <= tol_t:
                    hit[i] = True
                elif dt <= half_window:
                    background[i] += 1
            j += 1
    return hit, background


@nb.jit(**_JIT)
def scatter_entries(codes, ids, k, code_size, start, sizes, filled, image):
    """Write entries, in order, into the next free slots of their inverted lists.

    An entry's list is its code's low `k` bits; its slot holds the code's
    remaining high bits (`code_size` bytes) and its id (8 bytes), both
    little-endian.  List l's slots: its sizes[l] codes from byte start[l] of
    `image`, then its sizes[l] ids; filled[l] of them are taken (and grows).
    Stops before the first entry whose list is full.  Returns the entries
    written.
    """
    mask = (np.uint64(1) << np.uint64(k)) - np.uint64(1)
    for i in range(len(codes)):
        c = np.uint64(codes[i])
        lst = np.int64(c & mask)
        r = filled[lst]
        if r >= sizes[lst]:
            return i
        filled[lst] = r + 1
        high = c >> np.uint64(k)
        at = start[lst] + r * code_size
        for b in range(code_size):
            image[at + b] = np.uint8((high >> np.uint64(8 * b)) & np.uint64(0xFF))
        at = start[lst] + sizes[lst] * code_size + r * 8
        v = np.uint64(ids[i])
        for b in range(8):
            image[at + b] = np.uint8((v >> np.uint64(8 * b)) & np.uint64(0xFF))
    return len(codes)


@nb.jit(**_JIT)
def gather_hits(probe, ids, owner, t1, f1, span, removed, span_bits, freq_bits, time_bits,
                pitch_per_bin, max_pitch, sr_lo, sr_hi):
    """Join lookup results with their query triplets and keep the hits a
    searched speed and pitch may explain.

    probe, ids : lookup results (ids packed as index.pack_ids packs them,
    with the given field widths); owner[probe] is the query triplet i whose
    anchor time, frequency and span are t1[i], f1[i], span[i].  A hit is kept
    when its track is not set in `removed` (numbers past its end are not),
    its pitch (query anchor bin less reference's, times `pitch_per_bin`) is
    within +-`max_pitch`, and its reference span in half frames (the id's
    own field) within [sr_lo[i], sr_hi[i]].
    Returns (track, tq, tr, sq, sr, pitch) of the hits kept, in their order.
    """
    n = len(ids)
    if len(removed) == 0:
        removed = np.zeros(1, np.bool_)
    last = len(removed) - 1
    span_mask = (1 << span_bits) - 1
    freq_mask = (1 << freq_bits) - 1
    track_shift = span_bits + freq_bits + time_bits
    # Without branches (whether a hit is kept is a coin toss to the CPU):
    # every position is written, the count moves on for those kept.
    at = np.empty(n, np.int64)
    k = 0
    for j in range(n):
        x = ids[j]
        i = owner[probe[j]]
        s = x & span_mask
        track = x >> track_shift
        shift = (f1[i] - ((x >> span_bits) & freq_mask) * 0.5) * pitch_per_bin
        ok = (s >= sr_lo[i]) & (s <= sr_hi[i]) & (abs(shift) <= max_pitch)
        ok &= ~((track <= last) & removed[min(track, last)])
        at[k] = j
        k += ok
    time_mask = (1 << time_bits) - 1
    track_out = np.empty(k, np.int64)
    tq = np.empty(k, t1.dtype)
    tr = np.empty(k, np.float64)
    sq = np.empty(k, span.dtype)
    sr = np.empty(k, np.float64)
    pitch = np.empty(k, np.float64)
    for m in range(k):
        x = ids[at[m]]
        i = owner[probe[at[m]]]
        track_out[m] = x >> track_shift
        tq[m] = t1[i]
        tr[m] = ((x >> (span_bits + freq_bits)) & time_mask) * 0.5
        sq[m] = span[i]
        sr[m] = (x & span_mask) * 0.5
        pitch[m] = (f1[i] - ((x >> span_bits) & freq_mask) * 0.5) * pitch_per_bin
    return track_out, tq, tr, sq, sr, pitch


@nb.jit(**_JIT)
def _id_at(image, words, q):
    """The little-endian int64 at byte q of `image` (`words`: its whole
    8-byte words): one or two aligned loads, bytes at the very end."""
    w = q >> 3
    r = q & 7
    if r == 0:
        return np.int64(words[w])
    if w + 1 < len(words):
        return np.int64((words[w] >> np.uint64(8 * r)) | (words[w + 1] << np.uint64(64 - 8 * r)))
    v = np.int64(0)
    for b in range(8):
        v |= np.int64(image[q + b]) << (8 * b)
    return v


@nb.jit(**_JIT)
def list_lookup(image, coarse, stride, sizes, code_size, lists, stored):
    """Exact lookups in inverted lists laid out as FAISS serialises them:
    list l holds sizes[l] entries, their stored codes (code_size bytes
    each), then their ids (8 bytes each, little-endian, unaligned); the
    lists follow one another in `image`, list c * stride starting at byte
    coarse[c].  Probe p reads list lists[p] (none when negative) and keeps,
    in list order, its entries whose stored code begins with the bytes
    stored[p] ([n, m], m <= code_size; m may be less, even 0, where the
    other bytes are zero on both sides).

    Returns (lims [n + 1], ids): probe p's ids are ids[lims[p]:lims[p + 1]].
    """
    n = len(lists)
    starts = np.empty(n, np.int64)
    lims = np.zeros(n + 1, np.int64)
    for p in range(n):
        l = lists[p]
        found = 0
        if l >= 0:
            at = coarse[l // stride]
            for j in range(l - l % stride, l):
                at += np.int64(sizes[j]) * (code_size + 8)
            starts[p] = at
            for e in range(np.int64(sizes[l])):
                same = True
                for b in range(stored.shape[1]):
                    same &= image[at + e * code_size + b] == stored[p, b]
                found += same
        lims[p + 1] = lims[p] + found
    words = image[: len(image) // 8 * 8].view(np.uint64)
    ids = np.empty(lims[n], np.int64)
    for p in range(n):
        l = lists[p]
        k = lims[p]
        if k == lims[p + 1]:
            continue
        at = starts[p]
        size = np.int64(sizes[l])
        first = at + size * code_size
        if lims[p + 1] - k == size and first + 8 * size + 8 <= len(words) * 8:
            # The whole list (always so when each list holds one code): its
            # ids from aligned words, shifted into place.
            w = first >> 3
            r = np.uint64(8 * (first & 7))
            if r == 0:
                for e in range(size):
                    ids[k + e] = np.int64(words[w + e])
            else:
                for e in range(size):
                    ids[k + e] = np.int64((words[w + e] >> r) | (words[w + e + 1] << (np.uint64(64) - r)))
            continue
        for e in range(size):
            same = True
            for b in range(stored.shape[1]):
                same &= image[at + e * code_size + b] == stored[p, b]
            if same:
                ids[k] = _id_at(image, words, first + 8 * e)
                k += 1
    return lims, ids
