"""Temporal alignment on synthetic hits: known lines among outliers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from simsearch import features, matching
from simsearch.config import FeatureConfig, MatchConfig
from simsearch.features import Triplets
from simsearch.index import marked, pack_ids, unpack_ids

CFG = FeatureConfig()
MCFG = MatchConfig()
FS = CFG.frame_seconds


def _line_hits(rng, track, n, speed, offset, pitch, query_frames, jitter=0.3):
    """n hits of `track` on tr = offset + speed * tq (frames), spans scaled by speed."""
    tq = rng.uniform(0, query_frames - 20, n)
    sq = rng.uniform(CFG.min_span, 40, n)
    return dict(track=np.full(n, track), tq=tq, tr=offset + speed * tq + rng.uniform(-jitter, jitter, n),
                sq=sq, sr=sq * speed + rng.uniform(-0.25, 0.25, n), pitch=pitch + rng.uniform(-0.05, 0.05, n))


def _random_hits(rng, tracks, n, query_frames, ref_frames=20_000):
    sq = rng.uniform(CFG.min_span, 40, n)
    return dict(track=rng.choice(tracks, n), tq=rng.uniform(0, query_frames, n), tr=rng.uniform(0, ref_frames, n),
                sq=sq, sr=sq * rng.uniform(MCFG.min_speed, MCFG.max_speed, n),
                pitch=rng.uniform(-MCFG.max_pitch, MCFG.max_pitch, n))


def _hits(*parts) -> matching.Hits:
    keys = ("track", "tq", "tr", "sq", "sr", "pitch")
    cat = {k: np.concatenate([p[k] for p in parts]) for k in keys}
    cat["track"] = cat["track"].astype(np.int64)
    return matching.Hits(*(cat[k] for k in keys))


@pytest.mark.parametrize("speed, pitch", [(1.0, 0.0), (1.03, 0.5), (0.96, -0.8)])
@pytest.mark.parametrize("seed", [0, 1])
def test_align_hits_recovers_a_line_among_outliers(seed, speed, pitch):
    rng = np.random.default_rng(seed)
    query_frames = 10.0 / FS
    offset = 1234.5  # frames
    h = _hits(_line_hits(rng, 7, 80, speed, offset, pitch, query_frames),
              _random_hits(rng, [7, 2, 3, 11, 40], 3000, query_frames))
    cands = matching.align_hits(h, CFG, MCFG, query_frames)
    assert cands, "the line was not found"
    best = cands[0]
    assert best.track == 7
    assert best.speed == pytest.approx(speed, abs=0.005)
    assert best.pitch_semitones == pytest.approx(pitch, abs=0.1)
    # 80 hits within 0.3 frame and 0.05 semitone of the line weigh at least
    # 0.8 each (less the off-unit penalty); a random hit rarely joins them.
    penalty = MCFG.off_unit_penalty if abs(speed - 1.0) > MCFG.unit_speed_tol else 0.0
    assert 0.8 * 80 - penalty <= best.score <= 80 + 5
    # The reported segment lies on the line.
    assert best.ref_start == pytest.approx((offset + speed * best.query_start / FS) * FS, abs=0.1)
    assert best.ref_end == pytest.approx((offset + speed * best.query_end / FS) * FS, abs=0.1)
    assert 0 <= best.query_start < best.query_end <= query_frames * FS + 1e-9
    # Its hits are the line's: (query s, reference s) pairs within the tolerance.
    assert best.hits.shape[1] == 2 and len(best.hits) >= best.score
    np.testing.assert_allclose(best.hits[:, 1], offset * FS + speed * best.hits[:, 0], atol=MCFG.align_tol_s)
    # Outlier tracks, if reported at all, score far lower.
    assert all(c.score < best.score / 3 for c in cands[1:])


def test_align_hits_ranks_two_lines_by_their_hits():
    rng = np.random.default_rng(5)
    query_frames = 9.0 / FS
    h = _hits(_line_hits(rng, 1, 40, 1.0, 300.0, 0.0, query_frames),
              _line_hits(rng, 2, 90, 1.0, 5000.0, 0.0, query_frames),
              _random_hits(rng, [1, 2, 3], 1500, query_frames))
    cands = matching.align_hits(h, CFG, MCFG, query_frames)
    assert [c.track for c in cands[:2]] == [2, 1]
    assert cands[0].ref_start - cands[0].query_start == pytest.approx(5000.0 * FS, abs=0.1)
    assert cands[1].ref_start - cands[1].query_start == pytest.approx(300.0 * FS, abs=0.1)


def test_hits_off_the_line_weigh_less():
    """Two lines with as many hits: the one whose hits scatter over the whole
    alignment tolerance (as chance hits do) scores well below the tight one,
    whose hits weigh close to 1 each."""
    rng = np.random.default_rng(8)
    query_frames = 9.0 / FS
    tol = MCFG.align_tol_s / FS
    tight = _line_hits(rng, 1, 40, 1.0, 300.0, 0.0, query_frames, jitter=0.05)
    loose = _line_hits(rng, 2, 40, 1.0, 5000.0, 0.0, query_frames, jitter=0.9 * tol)
    loose["pitch"] = rng.uniform(-MCFG.pitch_tol, MCFG.pitch_tol, 40)
    cands = matching.align_hits(_hits(tight, loose), CFG, MCFG, query_frames)
    scores = {c.track: c.score for c in cands}
    assert scores[1] >= 0.9 * 40
    assert scores.get(2, 0.0) < 0.5 * scores[1]


def test_align_hits_finds_nothing_in_noise():
    rng = np.random.default_rng(6)
    query_frames = 9.0 / FS
    h = _hits(_random_hits(rng, [0, 1, 2, 3], 2000, query_frames))
    assert all(c.score < MCFG.min_score for c in matching.align_hits(h, CFG, MCFG, query_frames))


def test_align_hits_of_no_hits():
    h = _hits(_random_hits(np.random.default_rng(0), [0], 0, 100.0))
    assert matching.align_hits(h, CFG, MCFG, 100.0) == []


def test_gather_hits_joins_and_filters():
    # Three query triplets; each lookup result names a reference triplet.
    known = dict(t1=np.array([10.0, 20.0, 30.0]), f1=np.array([50.0, 60.0, 70.0]), span=np.array([10.0, 20.0, 8.0]))
    # The hash fields play no part here: zeros, whatever their shape.
    q = Triplets(**known, **{f.name: np.zeros((3, 3) if f.name == "dv" else 3)
                             for f in dataclasses.fields(Triplets) if f.name not in known})
    owner = np.array([0, 1, 2, 2])  # probe -> query triplet
    refs = [  # (probe, track, t1, f1, span)
        (0, 4, 110.0, 50.0, 10.0),  # plain copy
        (1, 5, 220.0, 57.0, 20.5),  # pitch +1 semitone (3 bins), speed 1.025
        (2, 4, 330.0, 70.0, 12.0),  # span ratio 1.5: no searched speed
        (3, 6, 440.0, 40.0, 8.0),   # pitch 30 bins = 10 semitones: out of range
        (0, 9, 120.0, 50.0, 10.0),  # a removed track
    ]
    probe = np.array([r[0] for r in refs])
    ids = pack_ids(np.array([r[1] for r in refs]), np.array([r[2] for r in refs]),
                   np.array([r[3] for r in refs]), np.array([r[4] for r in refs]))
    removed = np.zeros(10, bool)
    removed[9] = True
    h = matching.gather_hits(q, owner, probe, ids, CFG, MCFG, removed)
    assert h.track.tolist() == [4, 5]
    assert h.tq.tolist() == [10.0, 20.0] and h.tr.tolist() == [110.0, 220.0]
    assert h.sq.tolist() == [10.0, 20.0] and h.sr.tolist() == [10.0, 20.5]
    np.testing.assert_allclose(h.pitch, [0.0, 3 * 12 / CFG.bins_per_octave])
    # Without the removed mask, the removed track's hit comes back.
    assert sorted(matching.gather_hits(q, owner, probe, ids, CFG, MCFG).track.tolist()) == [4, 5, 9]


def _gather_oracle(q, owner, probe, ids, cfg, mcfg, removed):
    """gather_hits as numpy alone writes it: every field unpacked, every test on every hit."""
    qi = owner[probe]
    track, tr, fr, sr = unpack_ids(ids)
    tq, fq, sq = q.t1[qi], q.f1[qi], q.span[qi]
    pitch = (fq - fr) * (12.0 / cfg.bins_per_octave)
    log_speed = matching.span_log_speed(sr, sq)
    ok = (log_speed >= np.log2(mcfg.min_speed) - 1.0 / sq) & (log_speed <= np.log2(mcfg.max_speed) + 1.0 / sq)
    ok &= (np.abs(pitch) <= mcfg.max_pitch + mcfg.pitch_tol) & ~marked(track, removed)
    return matching.Hits(track[ok], tq[ok], tr[ok], sq[ok], sr[ok], pitch[ok], log_speed[ok])


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("mcfg", [MCFG, MCFG.narrowed()], ids=["wide", "narrow"])
@pytest.mark.parametrize("slack", [None, 0.05], ids=["kernel", "wide_kernel"])
def test_gather_hits_keeps_exactly_what_numpy_keeps(monkeypatch, seed, mcfg, slack):
    """Hits at the searched range's very edges, where the kernel's log2 and
    numpy's may round apart: the same hits, the same values.  With a kernel
    far looser than numpy (slack 0.05), numpy's test alone decides."""
    if slack is not None:
        monkeypatch.setattr(matching, "_BOUND_SLACK", slack)
    rng = np.random.default_rng(seed)
    n_tr, n = 400, 50_000
    q = Triplets(xr=np.zeros(n_tr), xd2=np.zeros(n_tr), xd3=np.zeros(n_tr), t1=rng.uniform(0, 300, n_tr),
                 f1=rng.integers(0, 144, n_tr) + rng.uniform(-0.49, 0.49, n_tr), span=rng.uniform(3, 60, n_tr),
                 dv=np.zeros((n_tr, 3), np.float32))
    owner = rng.integers(0, n_tr, 1000)
    probe = np.sort(rng.integers(0, 1000, n))
    qi = owner[probe]
    # Reference spans on the speed range's edges (to half a frame, as stored), and beside them.
    edge = q.span[qi] * rng.choice([mcfg.min_speed, mcfg.max_speed, 1.0], n) * np.exp2(rng.choice([-1, 1], n) / q.span[qi])
    sr = np.round(2 * edge) / 2 + rng.choice([-0.5, 0.0, 0.5], n)
    fr = q.f1[qi] + rng.uniform(-1.5, 1.5, n) * (mcfg.max_pitch + mcfg.pitch_tol) * CFG.bins_per_octave / 12
    ids = pack_ids(rng.integers(0, 30, n), rng.uniform(0, 5000, n), np.clip(fr, 0, 200), np.clip(sr, 0, 120))
    removed = np.zeros(25, bool)
    removed[[3, 17]] = True
    got = matching.gather_hits(q, owner, probe, ids, CFG, mcfg, removed)
    want = _gather_oracle(q, owner, probe, ids, CFG, mcfg, removed)
    assert 0 < len(want) < n
    for k in ("track", "tq", "tr", "sq", "sr", "pitch", "log_speed"):
        np.testing.assert_array_equal(getattr(got, k), getattr(want, k))


def _promising_oracle(h, log_speed, tmid, mcfg, coarse=8.0):
    """_promising_tracks over every (track, cell) with an inverse map: the
    tracks, best first, and the median log2 speed of each one's best cell pair."""
    cell = np.floor((h.tr + 2.0**log_speed * (tmid - h.tq)) / coarse).astype(np.int64)
    keys, inverse, counts = np.unique((h.track << 24) + (cell + (1 << 23)), return_inverse=True, return_counts=True)
    nxt = np.searchsorted(keys, keys + 1)
    has = (nxt < len(keys)) & (keys[np.minimum(nxt, len(keys) - 1)] == keys + 1)
    pair = counts + np.where(has, counts[np.minimum(nxt, len(keys) - 1)], 0)
    track = keys >> 24
    order = np.lexsort((-pair, track))
    first = order[np.unique(track[order], return_index=True)[1]]
    first = first[pair[first] >= max(3.0, 0.7 * mcfg.min_hit_score)]
    first = first[np.argsort(-pair[first], kind="stable")][: mcfg.max_candidates]
    centres = [np.median(log_speed[(inverse == c) | (inverse == nxt[c]) & has[c]]) for c in first]
    return track[first], np.array(centres)


@pytest.mark.parametrize("seed", range(4))
def test_promising_tracks_are_the_best_cells_of_all(seed):
    """Many tracks with lines of a few hits (ties between tracks and between
    cells), more than max_candidates of them over the bar."""
    rng = np.random.default_rng(seed)
    query_frames = 10.0 / FS
    parts = [_line_hits(rng, t, int(rng.integers(2, 9)), rng.uniform(0.8, 1.25), rng.uniform(0, 9000), 0.0,
                        query_frames, jitter=3.0) for t in range(60)]
    h = _hits(*parts, _random_hits(rng, np.arange(200), 20_000, query_frames))
    log_speed = np.clip(h.log_speed, np.log2(MCFG.min_speed), np.log2(MCFG.max_speed))
    tracks, centres, theirs = matching._promising_tracks(h, log_speed, 0.5 * query_frames, MCFG)
    want_tracks, want_centres = _promising_oracle(h, log_speed, 0.5 * query_frames, MCFG)
    assert len(want_tracks) == MCFG.max_candidates
    np.testing.assert_array_equal(tracks, want_tracks)
    np.testing.assert_array_equal(centres, want_centres)
    np.testing.assert_array_equal(theirs, np.flatnonzero(np.isin(h.track, tracks)))


def test_a_stray_hit_on_the_line_does_not_stretch_the_matched_range():
    """Hits of a real 8 s segment plus one chance hit on the same line 20 s
    earlier: the reported range is the segment's."""
    from simsearch.matching import _densest_run

    rng = np.random.default_rng(3)
    segment = np.sort(rng.uniform(300.0, 550.0, 40))  # frames
    t = np.concatenate([[20.0], segment])
    run = _densest_run(t, max_gap=3.0 / 0.032)
    assert not run[0] and run[1:].all()
    # Sparse but evenly spread hits (a degraded copy) all stay in.
    sparse = np.linspace(0.0, 300.0, 11)
    assert _densest_run(sparse, max_gap=3.0 / 0.032).all()


# -- verification -----------------------------------------------------------------

def test_reference_anchors_keep_each_distinct_peak_in_time_order():
    anchors = matching.ReferenceAnchors()
    # A 70-minute track to half a frame, with long silent gaps (filler entries).
    t1 = np.array([70_000.2, 5.0, 5.1, 20_000.0, 40_000.0, 65_536.6, 100_000.0, 130_000.0, 5.0, 0.0, 127.0, 127.5])
    f1 = np.array([10.0, 20.0, 20.4, 1.0, 2.0, 40.0, 3.0, 50.0, 21.0, 7.0, 8.0, 143.0])
    anchors.add(np.full(len(t1), 3), t1, f1)
    anchors.add(np.array([4, 4]), np.array([1.0, 2.0]), np.array([143.0, 0.0]))
    t, f = anchors.get(3)
    # 5.0 and 5.1 at bin 20: one anchor; 127 and 127.5: a gap of 254 half frames after 0.
    assert t.tolist() == [0, 5, 5, 127, 127.5, 20_000, 40_000, 65_536.5, 70_000, 100_000, 130_000]
    assert f.tolist() == [7, 20, 21, 8, 143, 1, 2, 40, 10, 3, 50]
    assert anchors.get(4)[1].tolist() == [143, 0] and anchors.get(4)[0].tolist() == [1, 2]
    assert len(anchors) == 2 and anchors.nbytes < 2 * (11 + 2 + 260_000 // 255 + 20)
    anchors.discard(3)
    assert len(anchors.get(3)[0]) == 0 and len(anchors) == 1


@pytest.mark.parametrize("seed", range(3))
def test_reference_anchors_round_trip_random_tracks(seed):
    rng = np.random.default_rng(seed)
    t1 = np.round(np.concatenate([rng.uniform(0, 40_000, 3000), rng.uniform(60_000, 61_000, 50)]) * 2) / 2
    f1 = rng.integers(0, 144, len(t1)).astype(float)
    anchors = matching.ReferenceAnchors()
    anchors.add(np.full(len(t1), 9), t1, f1)
    pairs = sorted(set(zip(t1.tolist(), f1.tolist())))
    t, f = anchors.get(9)
    assert list(zip(t.tolist(), f.tolist())) == pairs


def _candidate(speed=1.0, offset_s=20.0, pitch=0.0, q0=0.0, q1=10.0):
    return matching.Candidate(track=0, score=10.0, speed=speed, pitch_semitones=pitch, query_start=q0,
                              query_end=q1, ref_start=offset_s + speed * q0, ref_end=offset_s + speed * q1,
                              hits=np.zeros((0, 2)))


@pytest.mark.parametrize("speed, pitch", [(1.0, 0.0), (1.25, 0.0), (0.8, -2.0), (1.0, 3.0)])
def test_verify_finds_a_reference_s_peaks_where_the_line_puts_them(speed, pitch):
    rng = np.random.default_rng(7)
    rows, n_bins = int(2 * 10 / FS), CFG.n_bins  # a row every half frame
    near = rng.random((rows, n_bins)) < 0.2  # the query's maxima by chance: 20% of cells
    # The reference's peaks from 20 s on; those the line maps into the query are there.
    tr = np.sort(rng.uniform(20 / FS, 40 / FS, 300))
    fr = rng.integers(20, 120, 300).astype(float)
    c = _candidate(speed, 20.0, pitch)
    tq = np.rint(2 * (tr - 20 / FS) / speed).astype(int)
    fq = np.rint(fr + pitch * CFG.bins_per_octave / 12).astype(int)
    inside = (tq >= 0) & (tq < rows)
    found = near.copy()
    found[tq[inside], fq[inside]] = True
    z, k, n, p = matching.verify(found, (tr, fr), c, CFG, MCFG)
    assert n == inside.sum() and k == n and z > 10 and p == pytest.approx(0.2, abs=0.05)
    # The same peaks off the line, or another track's: chance.
    z_off, k_off, n_off, _ = matching.verify(near, (tr, fr), c, CFG, MCFG)
    assert abs(z_off) < 3 and k_off == pytest.approx(0.2 * n_off, abs=4 * np.sqrt(0.16 * n_off))


def test_verify_counts_over_at_least_the_minimum_window():
    near = np.zeros((int(2 * 10 / FS), CFG.n_bins), bool)
    tr = np.arange(0, int(10 / FS), 4.0)
    fr = np.full(len(tr), 60.0)
    near[2 * tr.astype(int), 60] = True  # a reference peak every 4 frames, all found
    short = _candidate(offset_s=0.0, q0=4.0, q1=4.5)
    _, k, n, _ = matching.verify(near, (tr, fr), short, CFG, MCFG)
    assert k == n == pytest.approx(MCFG.verify_min_window_s / FS / 4, abs=1)
    wide = _candidate(offset_s=0.0, q0=2.0, q1=8.0)
    _, _, n_wide, _ = matching.verify(near, (tr, fr), wide, CFG, MCFG)
    assert n_wide == pytest.approx((6 + 2 * MCFG.verify_margin_s) / FS / 4, abs=1)
    assert matching.verify(near, (np.zeros(0), np.zeros(0)), wide, CFG, MCFG)[:3] == (0.0, 0, 0)

def test_verify_takes_chance_where_the_query_is_densest():
    """A chance alignment whose images fall in a busy stretch of the query
    finds its peaks at that stretch's rate, not the window's mean: no
    significance.  The same images in a query of uniform density are found
    as often as the window's rate says."""
    rng = np.random.default_rng(11)
    rows, n_bins = int(2 * 10 / FS), CFG.n_bins
    near = rng.random((rows, n_bins)) < 0.05
    busy = slice(rows // 2, rows)
    near[busy] = rng.random((rows - rows // 2, n_bins)) < 0.4  # the second half is busy
    # Reference peaks that the line maps into the busy half only.
    tr = np.sort(rng.uniform(20 / FS + 6.0 / FS, 20 / FS + 9.5 / FS, 200))
    fr = rng.integers(20, 120, 200).astype(float)
    c = _candidate(1.0, 20.0, 0.0, q0=1.0, q1=9.0)
    z, k, n, p = matching.verify(near, (tr, fr), c, CFG, MCFG)
    assert n == 200 and k == pytest.approx(0.4 * n, abs=4 * np.sqrt(0.24 * n))
    assert p == pytest.approx(0.4, abs=0.05) and abs(z) < 4
    # What the window's mean rate alone would have made of the same count.
    mean = near[int(2 * 0.0 / FS):].mean(axis=0)[fr.astype(int)]
    assert (k - mean.sum()) / np.sqrt(np.sum(mean * (1 - mean))) > 6
    # Precomputed counts give the same answer.
    assert matching.verify(near, (tr, fr), c, CFG, MCFG, matching.near_counts(near)) == (z, k, n, p)


def test_near_counts_are_cumulative_counts_along_time_and_frequency():
    rng = np.random.default_rng(3)
    near = rng.random((50, 7)) < 0.3
    counts = matching.near_counts(near)
    for a, b in [(0, 50), (10, 11), (13, 40)]:
        np.testing.assert_array_equal(counts.over_time[b] - counts.over_time[a], near[a:b].sum(axis=0))
    for a, b in [(0, 7), (2, 3), (1, 6)]:
        np.testing.assert_array_equal(counts.over_bins[:, b] - counts.over_bins[:, a], near[:, a:b].sum(axis=1))


def test_verify_takes_chance_from_onsets_across_the_spectrum():
    """Two unrelated tracks at one tempo: the query's onsets set maxima across
    the spectrum in their rows, and a reference whose own peaks sit on its
    onsets finds them there at any frequency.  Found at the onset rows' rate
    across the spectrum, not at the bins' mean rate: no significance.  The
    same peaks in a query whose rows are all alike still count as found."""
    rng = np.random.default_rng(5)
    rows, n_bins = int(2 * 10 / FS), CFG.n_bins
    near = rng.random((rows, n_bins)) < 0.08
    onsets = np.arange(20, rows - 20, 30)  # a beat every 15 frames
    near[onsets] = rng.random((len(onsets), n_bins)) < 0.6
    # Reference peaks on the onsets at random frequencies, mapped along the line.
    tq = rng.choice(onsets, 200)
    fr = rng.integers(20, 120, 200).astype(float)
    tr = 20 / FS + tq / 2.0
    c = _candidate(1.0, 20.0, 0.0, q0=0.5, q1=9.5)
    z, k, n, p = matching.verify(near, (tr, fr), c, CFG, MCFG)
    assert n == 200 and k == pytest.approx(0.6 * n, abs=4 * np.sqrt(0.24 * n))
    assert abs(z) < 4 and p > 0.4
    # What the bins' rates alone would have made of the same count.
    window = near.mean(axis=0)[fr.astype(int)]
    assert (k - window.sum()) / np.sqrt(np.sum(window * (1 - window))) > 10
    # A copy: every reference peak there, in a query without onsets.
    flat = rng.random((rows, n_bins)) < 0.1
    flat[tq, fr.astype(int)] = True
    z_copy, k_copy, *_ = matching.verify(flat, (tr, fr), c, CFG, MCFG)
    assert k_copy == n and z_copy > 10


def _constellation(rng, ref_frames: float, per_frame: float = 0.4):
    """Reference peaks (anchors, frames and bins) at about `per_frame` per frame."""
    n = int(ref_frames * per_frame)
    return np.sort(rng.uniform(0, ref_frames, n)), rng.uniform(0, CFG.n_bins - 1, n)


def _query_maxima(rng, t1, f1, speed, offset, pitch, present: tuple[float, float], n_frames: int,
                  found: float = 0.7, clutter_per_frame: float = 1.5):
    """The query's dense maxima: a share `found` of the reference peaks that
    the line maps into `present` (query frames), jittered, among clutter."""
    qt = (t1 - offset) / speed
    qf = f1 + pitch * CFG.bins_per_octave / 12.0
    keep = (qt >= present[0]) & (qt <= present[1]) & (rng.random(len(qt)) < found)
    n_clutter = int(n_frames * clutter_per_frame)
    t = np.concatenate([qt[keep] + rng.uniform(-0.4, 0.4, keep.sum()), rng.uniform(0, n_frames, n_clutter)])
    f = np.concatenate([qf[keep] + rng.uniform(-0.4, 0.4, keep.sum()), rng.uniform(0, CFG.n_bins - 1, n_clutter)])
    order = np.argsort(t)
    return features.Peaks(t[order], f[order], np.zeros(len(t), np.float32))


@pytest.mark.parametrize("speed, pitch", [(1.0, 0.0), (1.1, 1.65), (0.92, 0.0)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_locate_range_grows_over_the_stretches_where_the_reference_is(seed, speed, pitch):
    rng = np.random.default_rng(seed)
    t1, f1 = _constellation(rng, 6000)
    n_frames = int(45 / FS)
    offset = 2000.0  # reference frames at query frame 0
    start, end = 15 / FS, 30 / FS  # where the reference truly is in the query
    maxima = _query_maxima(rng, t1, f1, speed, offset, pitch, (start, end), n_frames)
    # The hashes found only the middle: 4 s late, 2 s early.
    q0, q1 = matching.locate_range(t1, f1, speed, offset, pitch, start + 4 / FS, end - 2 / FS, maxima,
                                   n_frames, CFG, MCFG)
    # Within a few reference peaks (misses next to the edge keep it inward).
    assert q0 * FS == pytest.approx(15.0, abs=0.5)
    assert q1 * FS == pytest.approx(30.0, abs=0.5)


@pytest.mark.parametrize("seed", range(4))
def test_locate_range_does_not_grow_into_clutter(seed):
    rng = np.random.default_rng(10 + seed)
    t1, f1 = _constellation(rng, 6000)
    n_frames = int(45 / FS)
    # The reference is exactly where the hashes say; around it, only clutter
    # (dense: about one maximum in every 100 cells).
    maxima = _query_maxima(rng, t1, f1, 1.0, 2000.0, 0.0, (15 / FS, 30 / FS), n_frames, clutter_per_frame=1.5)
    q0, q1 = matching.locate_range(t1, f1, 1.0, 2000.0, 0.0, 15 / FS, 30 / FS, maxima, n_frames, CFG, MCFG)
    assert q0 * FS == pytest.approx(15.0, abs=0.1) and q1 * FS == pytest.approx(30.0, abs=0.1)


def test_locate_range_keeps_a_range_without_reference_peaks_or_beyond_the_query():
    rng = np.random.default_rng(3)
    t1, f1 = _constellation(rng, 6000)
    n_frames = int(10 / FS)
    maxima = _query_maxima(rng, t1, f1, 1.0, 100.0, 0.0, (0, n_frames), n_frames)
    # The whole query: nothing beyond it to take in.
    assert matching.locate_range(t1, f1, 1.0, 100.0, 0.0, 0.0, n_frames - 1.0, maxima, n_frames,
                                 CFG, MCFG) == (0.0, n_frames - 1.0)
    # A line past the reference's end maps no peak into the range: nothing to go on.
    assert matching.locate_range(t1, f1, 1.0, 10_000.0, 0.0, 50.0, 200.0, maxima, n_frames,
                                 CFG, MCFG) == (50.0, 200.0)


def test_locate_range_counts_a_peak_anchoring_several_triplets_once():
    rng = np.random.default_rng(4)
    t1, f1 = _constellation(rng, 6000)
    n_frames = int(45 / FS)
    maxima = _query_maxima(rng, t1, f1, 1.0, 2000.0, 0.0, (15 / FS, 30 / FS), n_frames)
    once = matching.locate_range(t1, f1, 1.0, 2000.0, 0.0, 19 / FS, 28 / FS, maxima, n_frames, CFG, MCFG)
    # As stored: each anchor repeated for each of its triplets, in a row.
    repeats = rng.integers(1, 4, len(t1))
    assert matching.locate_range(np.repeat(t1, repeats), np.repeat(f1, repeats), 1.0, 2000.0, 0.0, 19 / FS,
                                 28 / FS, maxima, n_frames, CFG, MCFG) == once


def test_repeat_shifts_finds_parallel_lines_disjoint_from_the_match():
    """Hits on the match's own line (shift 0), on a parallel line 400 frames
    away (a repeat), on one 30 frames away (overlapping the match's range of
    100 frames: not a repeat) and scattered chance hits: only the repeat is
    reported, at its shift."""
    rng = np.random.default_rng(3)
    tol = 2.0
    dr = np.concatenate([rng.uniform(-0.5, 0.5, 40), 400 + rng.uniform(-0.5, 0.5, 25),
                         30 + rng.uniform(-0.5, 0.5, 30), rng.uniform(-3000, 3000, 60)])
    shifts = matching.repeat_shifts(dr, 100.0, tol, max_repeats=3)
    assert len(shifts) >= 1 and shifts[0] == pytest.approx(400, abs=0.5)
    assert all(abs(s) >= 100 for s in shifts)
    assert not any(abs(s - 30) < 10 for s in shifts)
    assert matching.repeat_shifts(dr, 100.0, tol, max_repeats=0) == []
    # Echoes within the match's range (a rhythm's), however many, do not crowd out a repeat.
    echoes = np.concatenate([k + rng.uniform(-0.5, 0.5, 30) for k in (-80, -40, 20, 40, 60, 80)])
    assert matching.repeat_shifts(np.concatenate([echoes, dr[40:65]]), 100.0, tol, 1) == [pytest.approx(400, abs=0.5)]
    # Lines of fewer than 3 hits are never lines.
    assert matching.repeat_shifts(np.array([0.0, 0.1, 500.0, 500.1]), 100.0, tol, 3) == []


def test_repeat_shifts_takes_the_hits_that_voted_even_on_a_bin_edge():
    """Hit times on a grid put whole lines on the vote's bin edges, where a
    distance test in floating point could lose every hit that voted."""
    tol = 0.064
    dr = np.array([21.12, 21.12, 21.12, 30.0, 45.0])  # 21.12 = 330 bins of tol, a bin edge
    shifts = matching.repeat_shifts(dr, 1.8, tol, 3)
    assert shifts == [pytest.approx(21.12)]


def test_at_unit_reads_a_line_near_unit_as_a_plain_copy_through_its_middle():
    c = _candidate(speed=0.985, offset_s=20.0, pitch=0.1, q0=1.0, q1=9.0)
    u = matching.at_unit(c, MCFG)
    assert u.speed == 1.0 and u.pitch_semitones == 0.0
    assert (u.query_start, u.query_end) == (c.query_start, c.query_end)
    mid_ref = c.ref_start + c.speed * 4.0  # the line's reference time at the query's 5 s
    assert u.ref_start + 4.0 == pytest.approx(mid_ref) and u.ref_end - u.ref_start == pytest.approx(8.0)
    # Off unit (a speed change, a pitch shift) or already on it: nothing to read.
    assert matching.at_unit(_candidate(speed=1.05), MCFG) is None
    assert matching.at_unit(_candidate(pitch=1.0), MCFG) is None
    assert matching.at_unit(_candidate(), MCFG) is None


def test_verify_at_unit_finds_a_copy_whose_line_is_a_little_off():
    """A plain copy's line estimated 2% slow (the few hits left under noise,
    at the edge of the unit pass) misplaces its far peaks; read at unit speed
    through the same middle, they are found."""
    rng = np.random.default_rng(9)
    rows, n_bins = int(2 * 10 / FS), CFG.n_bins
    near = rng.random((rows, n_bins)) < 0.1
    tr = np.sort(rng.uniform(20 / FS, 30 / FS, 120))
    fr = rng.integers(20, 120, 120).astype(float)
    near[np.rint(2 * (tr - 20 / FS)).astype(int).clip(0, rows - 1), fr.astype(int)] = True  # a copy from 20 s
    off = _candidate(speed=1 / 1.02, offset_s=20.0 + 5.0 * (1 - 1 / 1.02), q0=0.0, q1=10.0)
    z_off, k_off, n_off, _ = matching.verify(near, (tr, fr), off, CFG, MCFG)
    z_unit, k_unit, n_unit, _ = matching.verify(near, (tr, fr), matching.at_unit(off, MCFG), CFG, MCFG)
    assert k_unit == n_unit and k_off < 0.7 * n_off and z_unit > z_off + 3
    # verify_line keeps the reading that verifies better.
    kept, z_kept = matching.verify_line(near, (tr, fr), off, CFG, MCFG)
    assert kept.speed == 1.0 and z_kept == z_unit
    modified = _candidate(speed=1.05, offset_s=20.0)
    assert matching.verify_line(near, (tr, fr), modified, CFG, MCFG)[0] is modified
