"""The numba kernels against the numpy references in tests/reference.py."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import reference as R
from audio_tools import chirp, tone, tone_sequence
from simsearch import _kernels as K
from simsearch import features
from simsearch.config import FeatureConfig, MatchConfig
from simsearch.index import FREQ_BITS, SPAN_BITS, TIME_BITS, pack_ids

CFG = FeatureConfig()
MCFG = MatchConfig()
# Peak density and fanouts of the synthetic tests: the catalog's and the
# query's usual ones.
PEAKS_PER_BLOCK = 18
FANOUTS = (3, 5)
# Derandomised and without a database: the same examples on every run and machine.
PROPERTY = settings(max_examples=50, deadline=None, derandomize=True, database=None)


def _hash_args(cfg: FeatureConfig = CFG):
    """The configuration arguments of hash_codes/probe_codes, as features passes them."""
    return (cfg.ratio_levels, cfg.df_levels, float(cfg.f1_band), cfg.f1_bands, float(cfg.min_span),
            cfg.span_band_octaves, cfg.span_bands)


def _probe_range(cfg: FeatureConfig = CFG, mcfg: MatchConfig = MCFG):
    """The search arguments of probe_codes, as features.query_probes passes them."""
    hi = mcfg.max_pitch * cfg.bins_per_octave / 12.0 + 1.0
    return (mcfg.probe_margin, -hi, hi, mcfg.min_speed * 0.97, mcfg.max_speed * 1.03, mcfg.tie_db)


def _fields(tr: features.Triplets):
    """The per-triplet arguments of hash_codes/probe_codes."""
    return (tr.xr, tr.xd2, tr.xd3, tr.f1, tr.span, tr.dv)


def _random_spectrogram(rng, n, m, ties=False):
    S = (rng.standard_normal((n, m)) * 12 - 50).astype(np.float32)
    if ties:  # coarse levels make plateaus: equal neighbours in both axes
        S = (np.round(S / 6) * 6).astype(np.float32)
    return S


def _random_peaks(rng, n, n_frames=300, n_bins=180):
    """Peaks as spectral_peaks returns them: in frame order, several per frame,
    each refined by less than half a frame and half a bin."""
    frames = np.sort(rng.integers(0, n_frames, n))
    t = frames + rng.uniform(-0.49, 0.49, n)
    f = rng.integers(0, n_bins, n) + rng.uniform(-0.49, 0.49, n)
    order = np.lexsort((f, frames))
    return t[order], f[order]


def _synthetic_spectrogram():
    """Log spectrogram of an exponential chirp over a melody of tones."""
    sr = CFG.sample_rate
    y = chirp(150.0, 3000.0, 6.0, sr, amp=0.3)
    y = y + tone_sequence([220.0, 330.0, 262.0, 523.0, 392.0, 880.0, 698.0, 1320.0] * 2, 0.375, sr, amp=0.3)
    y = y + tone(1760.0, 6.0, sr, amp=0.05)
    return features.log_spectrogram(y, CFG)


def _synthetic_triplets():
    S = _synthetic_spectrogram()
    p = features.spectral_peaks(S, CFG, PEAKS_PER_BLOCK)
    return features.peak_triplets(p, CFG, FANOUTS[-1])


def _assert_same_peaks(got, want):
    (t, f, v), (rt, rf, rv) = got, want
    assert len(t) == len(rt)
    np.testing.assert_allclose(t, rt, rtol=0, atol=1e-6)
    np.testing.assert_allclose(f, rf, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(v, rv)
    # Same cells, in the same (time, then frequency) order.
    np.testing.assert_array_equal(np.round(t), np.round(rt))
    np.testing.assert_array_equal(np.round(f), np.round(rf))


def _rows(a):
    a = np.asarray(a, np.int64).reshape(-1, 3)
    return a[np.lexsort(a.T[::-1])]


# -- spectral_peaks: local-maximum test on arbitrary arrays -------------------

@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (40, 30), (250, 144)])
@pytest.mark.parametrize("rt, rf", [(0, 0), (1, 2), (4, 6), (12, 40)])
def test_peak_neighbourhoods_match_reference(shape, rt, rf):
    rng = np.random.default_rng(hash((shape, rt, rf)) % 2**32)
    S = _random_spectrogram(rng, *shape)
    for got, want in zip(K.spectral_peaks(S, rt, rf, np.float32(-200.0)), R.spectral_peaks(S, rt, rf, -200.0)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)


@PROPERTY
@given(S=hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=24),
                    elements=st.floats(-120, 0, width=32) | st.sampled_from([-60.0, -30.0, 0.0])),
       rt=st.integers(0, 6), rf=st.integers(0, 6))
def test_peak_neighbourhoods_property(S, rt, rf):
    t, f, v = K.spectral_peaks(S, rt, rf, np.float32(-200.0))
    rt_, rf_, rv = R.spectral_peaks(S, rt, rf, -200.0)
    np.testing.assert_allclose(t, rt_, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(f, rf_, rtol=1e-6, atol=1e-5)
    np.testing.assert_array_equal(v, rv)
    # The global maximum is always a peak.
    assert S.max() in v


# -- spectral_peaks -----------------------------------------------------------

@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spectral_peaks_match_reference_on_random_input(seed, ties):
    rng = np.random.default_rng(seed)
    S = _random_spectrogram(rng, 300, 180, ties=ties)
    floor = np.float32(-55.0)
    got = K.spectral_peaks(S, 4, 6, floor)
    want = R.spectral_peaks(S, 4, 6, floor)
    assert len(want[0]) > 50
    _assert_same_peaks(got, want)


def test_spectral_peaks_match_reference_on_tones_and_chirp():
    S = _synthetic_spectrogram()
    floor = np.float32(CFG.floor_db)
    got = K.spectral_peaks(S, CFG.peak_time_radius, CFG.peak_freq_radius, floor)
    want = R.spectral_peaks(S, CFG.peak_time_radius, CFG.peak_freq_radius, floor)
    assert len(want[0]) > 20
    _assert_same_peaks(got, want)


def test_spectral_peaks_floor_is_strict():
    S = np.full((5, 5), -80.0, np.float32)
    S[2, 2] = -40.0
    t, f, v = K.spectral_peaks(S, 1, 1, np.float32(-40.0))
    assert len(t) == 0
    t, f, v = K.spectral_peaks(S, 1, 1, np.float32(-40.5))
    assert (t.tolist(), f.tolist(), v.tolist()) == ([2.0], [2.0], [-40.0])


# -- peak_triplets ------------------------------------------------------------

@pytest.mark.parametrize("fanout, min_span, max_span, max_df",
                         [(3, 3.0, 60.0, 30.0), (5, 3.0, 60.0, 30.0), (1, 3.0, 60.0, 30.0),
                          (4, 0.0, 8.0, 200.0), (6, 10.0, 20.0, 10.0)])
@pytest.mark.parametrize("seed", [0, 1])
def test_peak_triplets_match_reference_on_random_peaks(seed, fanout, min_span, max_span, max_df):
    rng = np.random.default_rng(seed)
    t, f = _random_peaks(rng, 1500)
    got = K.peak_triplets(t, f, fanout, min_span, max_span, max_df)
    want = R.peak_triplets(t, f, fanout, min_span, max_span, max_df)
    if fanout > 1:
        assert len(want) > 100
    np.testing.assert_array_equal(_rows(got), _rows(want))


def test_peak_triplets_match_reference_on_tones_and_chirp():
    S = _synthetic_spectrogram()
    p = features.spectral_peaks(S, CFG, PEAKS_PER_BLOCK)
    for fanout in FANOUTS:
        args = (fanout, float(CFG.min_span), float(CFG.max_span), float(CFG.max_df))
        got = K.peak_triplets(p.t, p.f, *args)
        want = R.peak_triplets(p.t, p.f, *args)
        assert len(want) > 20
        np.testing.assert_array_equal(_rows(got), _rows(want))


def test_peak_triplets_look_past_a_peak_beyond_max_span_in_the_same_frame():
    # Peaks come in time-then-frequency order, refined by up to half a frame,
    # so within one frame a later-listed peak can be earlier in time: here
    # 78.0 is within max_span (25) of the anchor at 53.0, 78.25 is not.
    t = np.array([53.0, 54.0, 78.25, 78.0])
    f = np.zeros(4)
    want = [[0, 1, 3]]
    assert R.peak_triplets(t, f, 2, 0.0, 25.0, 0.0).tolist() == want
    assert K.peak_triplets(t, f, 2, 0.0, 25.0, 0.0).tolist() == want


def test_peak_triplets_of_no_peaks_is_empty():
    out = K.peak_triplets(np.zeros(0), np.zeros(0), 3, 3.0, 60.0, 30.0)
    assert out.shape == (0, 3)


@st.composite
def _peak_lists(draw):
    n = draw(st.integers(0, 40))
    frames = sorted(draw(st.lists(st.integers(0, 80), min_size=n, max_size=n)))
    jitter = draw(st.lists(st.floats(-0.49, 0.49), min_size=n, max_size=n))
    f = draw(st.lists(st.floats(0, 60) | st.sampled_from([0.0, 10.0, 20.0]), min_size=n, max_size=n))
    t = np.array(frames, np.float64) + np.array(jitter, np.float64)
    return t, np.array(f, np.float64)


@PROPERTY
@given(peaks=_peak_lists(), fanout=st.integers(1, 6), min_span=st.sampled_from([0.0, 1.0, 3.0, 7.5]),
       max_span=st.sampled_from([2.0, 10.0, 25.0, 60.0]), max_df=st.sampled_from([0.0, 5.0, 30.0]))
def test_peak_triplets_property(peaks, fanout, min_span, max_span, max_df):
    t, f = peaks
    got = K.peak_triplets(t, f, fanout, min_span, max_span, max_df)
    np.testing.assert_array_equal(_rows(got), _rows(R.peak_triplets(t, f, fanout, min_span, max_span, max_df)))
    # Each triplet obeys the definition.
    frame = R.frame_of(t)
    for i, a, b in got:
        assert i < a < b
        assert frame[i] < frame[a] < frame[b]
        assert min_span <= t[b] - t[i] <= max_span
        assert abs(f[a] - f[i]) <= max_df and abs(f[b] - f[i]) <= max_df
    # At most every pair of `fanout` targets per anchor.
    if len(got):
        assert np.bincount(got[:, 0]).max() <= fanout * (fanout - 1) // 2


# -- hash_codes ---------------------------------------------------------------

def _level_differences(v):
    """dv as features computes it from the three peaks' levels [n, 3]."""
    return np.stack([v[:, 0] - v[:, 1], v[:, 0] - v[:, 2], v[:, 1] - v[:, 2]], axis=1).astype(np.float32)


def _random_levels(rng, n):
    """Levels (dB) of three peaks: spread out, near-tied in pairs, all near-tied, equal."""
    v = rng.uniform(-40, 0, (n, 3))
    kind = rng.integers(0, 4, n)
    pair = kind == 1
    v[pair, 1] = v[pair, 0] + rng.uniform(-1.5, 1.5, pair.sum()) * MCFG.tie_db
    close = kind == 2
    v[close] = v[close, :1] + rng.uniform(-0.7, 0.7, (close.sum(), 3)) * MCFG.tie_db
    v[kind == 3] = -20.0
    return v


def _random_fields(rng, n, cfg: FeatureConfig = CFG, out_of_range: bool = True):
    """Triplet fields; with `out_of_range`, some beyond the quantiser's ends."""
    pad = 1.5 if out_of_range else 0.0
    return (rng.uniform(-pad, cfg.ratio_levels + pad, n),
            rng.uniform(-pad, cfg.df_levels + pad, n),
            rng.uniform(-pad, cfg.df_levels + pad, n),
            rng.uniform(0, cfg.n_bins - 1, n),
            rng.uniform(cfg.min_span * (0.5 if out_of_range else 1.0), cfg.max_span * (1.5 if out_of_range else 1.0), n),
            _level_differences(_random_levels(rng, n)))


@pytest.mark.parametrize("cfg", [CFG, FeatureConfig(bins_per_octave=24, f1_band=24, df_step=1.5)],
                         ids=["default", "24bpo"])
def test_hash_codes_match_reference(cfg):
    rng = np.random.default_rng(3)
    fields = _random_fields(rng, 20000, cfg)
    got = K.hash_codes(*fields, *_hash_args(cfg))
    assert got.dtype == np.uint64
    np.testing.assert_array_equal(got, R.hash_codes(*fields, *_hash_args(cfg)))
    assert int(got.max()) < cfg.hash_cardinality


def test_hash_codes_match_reference_on_tones_and_chirp():
    tr = _synthetic_triplets()
    assert len(tr) > 20
    fields = _fields(tr)
    np.testing.assert_array_equal(K.hash_codes(*fields, *_hash_args()), R.hash_codes(*fields, *_hash_args()))
    np.testing.assert_array_equal(features.reference_codes(tr, CFG), R.hash_codes(*fields, *_hash_args()))


# -- probe_codes --------------------------------------------------------------

def _pairs(codes, owner, detour):
    return set(zip(np.asarray(owner).tolist(), np.asarray(codes).tolist(), np.asarray(detour).tolist()))


def _assert_same_probes(fields, probe_range):
    codes, owner, detour = K.probe_codes(*fields, *_hash_args(), *probe_range)
    got = _pairs(codes, owner, detour)
    assert len(got) == len(codes), "a code is probed twice for one triplet"
    assert got == _pairs(*R.probe_codes(*fields, *_hash_args(), *probe_range))
    assert set(owner.tolist()) == set(range(len(fields[0])))


@pytest.mark.parametrize("probe_range", [_probe_range(),
                                         _probe_range(mcfg=MatchConfig(min_speed=0.8, max_speed=1.25, max_pitch=3.0,
                                                                       probe_margin=0.45)),
                                         (0.0, 0.0, 0.0, 1.0, 1.0, 0.0)],
                         ids=["default", "wide", "exact"])
def test_probe_codes_match_reference(probe_range):
    rng = np.random.default_rng(4)
    _assert_same_probes(_random_fields(rng, 3000, out_of_range=False), probe_range)


def test_probe_codes_match_reference_on_tones_and_chirp():
    tr = _synthetic_triplets()
    _assert_same_probes(_fields(tr), _probe_range())


def test_probes_cover_every_code_a_matching_reference_triplet_carries():
    """The query-side promise: a reference triplet within the margin on each
    invariant field, pitch-shifted and time-scaled inside the searched range,
    with peak levels close enough that no level difference moves by tie_db,
    hashes to one of the probes of its query triplet."""
    rng = np.random.default_rng(5)
    n = 20000
    xr, xd2, xd3, f1, span, _ = _random_fields(rng, n, out_of_range=False)
    margin, f1_lo, f1_hi, span_lo, span_hi, tie_db = _probe_range()

    def jitter(scale, shape=n):
        return rng.uniform(-scale, scale, shape) * 0.999

    # The reference's levels: each within tie_db/2 of the query's, so every
    # level difference moves by less than tie_db.
    levels = _random_levels(rng, n)
    dv = _level_differences(levels)
    codes, owner, _ = K.probe_codes(xr, xd2, xd3, f1, span, dv, *_hash_args(), *_probe_range())
    probes = set(zip(owner.tolist(), codes.tolist()))
    ref_dv = _level_differences(levels + jitter(tie_db / 2, (n, 3)))
    ref = K.hash_codes(xr + jitter(margin), xd2 + jitter(margin), xd3 + jitter(margin),
                       f1 - rng.uniform(f1_lo, f1_hi, n), span * rng.uniform(span_lo, span_hi, n),
                       ref_dv, *_hash_args())
    missing = [i for i in range(n) if (i, int(ref[i])) not in probes]
    assert missing == []


@pytest.mark.parametrize("levels", [[-20.5, -20.0, -19.6], [-19.6, -20.0, -20.5], [-20.0, -19.6, -20.5],
                                    [-20.0, -20.0, -20.0]])
def test_near_tied_peaks_probe_every_loudness_order(levels):
    """Three peaks within tie_db of each other may come in any order in the
    reference: all six orders of three distinct levels must be probed."""
    dv = _level_differences(np.array([levels]))
    fields = (np.array([5.5]), np.array([10.5]), np.array([12.5]), np.array([60.0]), np.array([12.0]), dv)
    codes, *_ = K.probe_codes(*fields, *_hash_args(), *_probe_range())
    every_order = set()
    for perm in itertools.permutations([-21.0, -20.0, -19.0]):
        every_order |= set(K.hash_codes(*fields[:5], _level_differences(np.array([perm])), *_hash_args()).tolist())
    assert len(every_order) == 6
    assert every_order <= set(codes.tolist())


# -- best_alignment -----------------------------------------------------------

def _hits_on_line(rng, n_line, n_noise, speed, offset, jitter):
    tq_line = rng.uniform(0, 300, n_line)
    tr_line = offset + speed * tq_line + rng.uniform(-jitter, jitter, n_line)
    tq = np.concatenate([tq_line, rng.uniform(0, 300, n_noise)])
    tr = np.concatenate([tr_line, rng.uniform(0, 3000, n_noise)])
    perm = rng.permutation(len(tq))
    return tq[perm], tr[perm]


def _assert_same_alignment(tq, tr, speeds, tol):
    s, a, votes = K.best_alignment(tq, tr, speeds, tol)
    rs, ra, rvotes = R.best_alignment(tq, tr, speeds, tol)
    assert votes == rvotes
    assert s in speeds
    # The kernel's line is one of the best lines by the reference's count, and
    # the reference's line gets what it claims.
    assert R.line_votes(tq, tr, s, a, tol) == rvotes
    assert R.line_votes(tq, tr, rs, ra, tol) == rvotes
    return s, a, votes


@pytest.mark.parametrize("seed", range(4))
def test_best_alignment_matches_reference_on_random_hits(seed):
    rng = np.random.default_rng(seed)
    speeds = np.geomspace(0.95, 1.05, 25)
    tq, tr = _hits_on_line(rng, 60, 400, speed=speeds[17], offset=812.3, jitter=0.6)
    s, a, votes = _assert_same_alignment(tq, tr, speeds, 2.0)
    assert votes >= 60
    # Two bins of 2 frames over 300 query frames resolve the speed to about 4/300.
    assert s == pytest.approx(speeds[17], abs=0.015)
    assert a + s * 150 == pytest.approx(812.3 + speeds[17] * 150, abs=4.0)


@pytest.mark.parametrize("seed", range(4))
def test_best_alignment_matches_reference_on_noise_only(seed):
    rng = np.random.default_rng(100 + seed)
    tq, tr = rng.uniform(0, 50, 300), rng.uniform(0, 60, 300)
    _assert_same_alignment(tq, tr, np.geomspace(0.8, 1.25, 40), 1.5)


def test_best_alignment_on_integer_grid_ties():
    # Frame-quantised times put many offsets exactly on bin edges.
    rng = np.random.default_rng(7)
    tq = rng.integers(0, 100, 500).astype(np.float64)
    tr = tq + rng.integers(-6, 7, 500)
    _assert_same_alignment(tq, tr, np.array([1.0, 1.02]), 2.0)


def test_best_alignment_of_no_hits():
    speeds = np.array([0.99, 1.0])
    s, a, votes = K.best_alignment(np.zeros(0), np.zeros(0), speeds, 2.0)
    assert (s, a, votes) == (0.99, 0.0, 0) == R.best_alignment(np.zeros(0), np.zeros(0), speeds, 2.0)


def _assert_same_constellation_hits(qt, qf, pt, pf, tol_t, tol_f, half_window):
    hit, background = K.constellation_hits(qt, qf, pt, pf, tol_t, tol_f, half_window)
    rhit, rbackground = R.constellation_hits(qt, qf, pt, pf, tol_t, tol_f, half_window)
    np.testing.assert_array_equal(hit, rhit)
    np.testing.assert_array_equal(background, rbackground)
    return hit, background


@pytest.mark.parametrize("seed", range(4))
def test_constellation_hits_match_reference_on_random_points(seed):
    rng = np.random.default_rng(seed)
    qt, qf = _random_peaks(rng, 3000, n_frames=1500, n_bins=144)
    qt = np.sort(qt)  # the kernel needs peaks in time order, not frame order
    pt, pf = rng.uniform(-40, 1540, 400), rng.uniform(-2, 146, 400)
    hit, background = _assert_same_constellation_hits(qt, qf, pt, pf, 1.0, 1.0, 32.0)
    assert hit.any() and not hit.all() and background.sum() > 0


def test_constellation_hits_on_integer_grid_edges():
    # Whole frames and bins put peaks exactly on the tolerance and window edges.
    rng = np.random.default_rng(5)
    qt = np.sort(rng.integers(0, 200, 800)).astype(np.float64)
    qf = rng.integers(0, 40, 800).astype(np.float64)
    pt, pf = rng.integers(0, 200, 300).astype(np.float64), rng.integers(0, 40, 300).astype(np.float64)
    _assert_same_constellation_hits(qt, qf, pt, pf, 1.0, 1.0, 8.0)


def test_constellation_hits_finds_points_on_peaks_and_counts_their_neighbours():
    qt = np.array([10.0, 20.0, 20.4, 30.0])
    qf = np.array([50.0, 50.5, 80.0, 51.0])
    hit, background = _assert_same_constellation_hits(qt, qf, np.array([20.0, 20.0, 60.0]),
                                                       np.array([50.0, 80.0, 50.0]), 1.0, 1.0, 10.0)
    assert hit.tolist() == [True, True, False]
    assert background.tolist() == [2, 0, 0]  # the peaks at 10 and 30 frames, within a bin of 50


def test_constellation_hits_of_nothing():
    none = np.zeros(0)
    hit, background = _assert_same_constellation_hits(none, none, np.array([1.0]), np.array([2.0]), 1.0, 1.0, 8.0)
    assert hit.tolist() == [False] and background.tolist() == [0]
    hit, background = _assert_same_constellation_hits(np.array([1.0]), np.array([2.0]), none, none, 1.0, 1.0, 8.0)
    assert len(hit) == len(background) == 0


def _scatter_case(rng, n_entries, k, code_size, room=0):
    """Codes of k list bits and code_size bytes above them, their ids, and
    lists sized for them (plus `room` spare slots each, some already taken)."""
    codes = rng.integers(0, 1 << min(63, k + 8 * code_size), n_entries, dtype=np.uint64)
    ids = rng.integers(0, 1 << 62, n_entries)
    lists = (codes & np.uint64((1 << k) - 1)).astype(np.int64)
    taken = rng.integers(0, room + 1, 1 << k)
    sizes = np.bincount(lists, minlength=1 << k) + taken
    block = sizes * (code_size + 8)
    start = 40 + np.cumsum(block) - block
    return codes, ids, sizes, start, taken, int(40 + block.sum())


def _assert_same_scatter(codes, ids, k, code_size, start, sizes, filled, image_bytes, parts=1):
    """Kernel and reference from the same start, part by part: the same
    entries written, the same slots taken, the same image."""
    got = (filled.copy(), np.zeros(image_bytes, np.uint8))
    want = (filled.copy(), np.zeros(image_bytes, np.uint8))
    done = []
    for part in np.array_split(np.arange(len(codes)), parts):
        n = K.scatter_entries(codes[part], ids[part], k, code_size, start, sizes, *got)
        assert n == R.scatter_entries(codes[part], ids[part], k, code_size, start, sizes, *want)
        done.append(n)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    return done, got


@pytest.mark.parametrize("k, code_size, parts", [(0, 3, 1), (4, 1, 3), (10, 2, 5), (13, 1, 2)])
def test_scatter_entries_matches_reference(k, code_size, parts):
    rng = np.random.default_rng(k * 10 + code_size)
    codes, ids, sizes, start, taken, size = _scatter_case(rng, 20_000, k, code_size, room=2)
    done, (filled, _) = _assert_same_scatter(codes, ids, k, code_size, start, sizes, taken, size, parts)
    assert sum(done) == len(codes)
    np.testing.assert_array_equal(filled, sizes)  # every slot taken


def test_scatter_entries_stops_before_the_first_entry_of_a_full_list():
    rng = np.random.default_rng(11)
    codes, ids, sizes, start, _, size = _scatter_case(rng, 5000, 6, 1)
    crowded = int(codes[3000] & np.uint64(63))
    sizes[crowded] -= 1  # one slot short: its last entry does not fit
    last = np.flatnonzero((codes & np.uint64(63)) == crowded)[-1]
    done, _ = _assert_same_scatter(codes, ids, 6, 1, start, sizes, np.zeros(64, np.int64), size)
    assert done == [last]


@PROPERTY
@given(st.integers(0, 12), st.integers(1, 3), st.integers(0, 400), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_scatter_entries_property(k, code_size, n, parts, seed):
    rng = np.random.default_rng(seed)
    codes, ids, sizes, start, taken, size = _scatter_case(rng, n, k, code_size, room=1)
    _assert_same_scatter(codes, ids, k, code_size, start, sizes, taken, size, parts)


# -- gather_hits ----------------------------------------------------------------

def _lookup_results(rng, n, n_triplets=300, n_tracks=50):
    """Query triplets (t1, f1, span as peak_triplets makes them) and lookup
    results naming random reference triplets, some at the searched range's
    edges: a reference span or frequency equal to the query's, spans of a
    quarter frame or none."""
    t1 = np.sort(rng.uniform(0, 300, n_triplets))
    f1 = rng.integers(0, 144, n_triplets) + rng.uniform(-0.49, 0.49, n_triplets)
    span = rng.uniform(3, 60, n_triplets)
    owner = rng.integers(0, n_triplets, 3 * n_triplets)
    probe = np.sort(rng.integers(0, len(owner), n))
    qi = owner[probe]
    sr = np.where(rng.random(n) < 0.2, span[qi], span[qi] * np.exp2(rng.uniform(-0.6, 0.6, n)))
    sr[rng.random(n) < 0.02] = 0.0
    fr = np.where(rng.random(n) < 0.2, f1[qi], f1[qi] + rng.uniform(-20, 20, n))
    ids = pack_ids(rng.integers(0, n_tracks, n), rng.uniform(0, 5000, n), np.clip(fr, 0, 200), sr)
    return probe, ids, owner, t1, f1, span


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("mcfg", [MCFG, MCFG.narrowed()], ids=["wide", "narrow"])
def test_gather_hits_match_reference(seed, mcfg):
    rng = np.random.default_rng(seed)
    probe, ids, owner, t1, f1, span = _lookup_results(rng, 20000)
    removed = rng.random(60) < 0.2  # numbers past its end (none here) are kept
    sr_lo = np.floor(2 * span * mcfg.min_speed * np.exp2(-1 / span)).astype(np.int64)
    sr_hi = np.ceil(2 * span * mcfg.max_speed * np.exp2(1 / span)).astype(np.int64)
    args = (probe, ids, owner, t1, f1, span, removed[: 40 if seed else 60], SPAN_BITS, FREQ_BITS, TIME_BITS,
            12.0 / CFG.bins_per_octave, mcfg.max_pitch + mcfg.pitch_tol, sr_lo, sr_hi)
    got, want = K.gather_hits(*args), R.gather_hits(*args)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)
    assert 0 < len(got[0]) < len(ids)


def test_gather_hits_of_nothing():
    none = np.zeros(0, np.int64)
    out = K.gather_hits(none, none, none, np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0, bool),
                        SPAN_BITS, FREQ_BITS, TIME_BITS, 1 / 3, 5.5, none, none)
    assert [len(a) for a in out] == [0] * 6


# -- list_lookup ----------------------------------------------------------------

def _list_image(rng, nlist, code_size, mean_size, values=3):
    """Random inverted lists (a few distinct stored codes each) laid out one
    after the other behind a header of odd length, ids unaligned."""
    sizes = rng.poisson(mean_size, nlist).astype(np.int64)
    sizes[rng.random(nlist) < 0.2] = 0
    head = int(rng.integers(1, 50))
    image = [rng.integers(0, 256, head, dtype=np.uint8)]
    for n in sizes:
        image.append(rng.integers(0, values, (n, code_size), dtype=np.uint8).ravel())
        image.append(rng.integers(0, 1 << 62, n, dtype=np.int64).view(np.uint8))
    block = sizes * (code_size + 8)
    return np.concatenate(image), head + np.cumsum(block) - block, sizes


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("code_size, compared, stride", [(1, 1, 64), (1, 0, 64), (2, 2, 3), (3, 1, 1)])
def test_list_lookup_matches_reference(seed, code_size, compared, stride):
    rng = np.random.default_rng(seed)
    image, starts, sizes = _list_image(rng, 300, code_size, 6.0)
    lists = rng.integers(-1, 300, 500)  # -1: no list
    lists[-1] = np.flatnonzero(sizes)[-1]  # the last entry of the image
    stored = np.ascontiguousarray(rng.integers(0, 3, (500, code_size), dtype=np.uint8)[:, :compared])
    coarse = starts[::stride].copy()
    for size_type in (np.uint64, np.uint32):
        got = K.list_lookup(image, coarse, stride, sizes.astype(size_type), code_size, lists, stored)
        want = R.list_lookup(image, coarse, stride, sizes, code_size, lists, stored)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    assert 0 < len(got[1]) and (compared == 0 or len(got[1]) < sizes[lists[lists >= 0]].sum())


def test_list_lookup_of_nothing():
    image, starts, sizes = _list_image(np.random.default_rng(0), 4, 1, 2.0)
    lims, ids = K.list_lookup(image, starts, 1, sizes, 1, np.zeros(0, np.int64), np.zeros((0, 1), np.uint8))
    assert lims.tolist() == [0] and len(ids) == 0


def test_every_kernel_is_compiled():
    """Each function of the kernel module is a numba dispatcher: a kernel
    that lost its decorator still gives the right answers, in pure Python,
    ten times slower."""
    import inspect

    import numba

    plain = [name for name, fn in inspect.getmembers(K, inspect.isfunction) if fn.__module__ == K.__name__]
    assert plain == []
    compiled = [name for name, fn in vars(K).items() if isinstance(fn, numba.core.registry.CPUDispatcher)]
    assert {"gather_hits", "list_lookup", "scatter_entries", "spectral_peaks"} <= set(compiled)
