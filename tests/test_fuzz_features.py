"""Property tests of the public feature functions on arbitrary signals and
spectrograms: empty and tiny inputs, silence, DC, full-scale square waves,
denormals, huge values.  Each returns well-formed output or raises
ParameterError.  (tests/test_kernels.py checks each kernel against its
definition; these check what the kernels are handed from the outside.)
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from simsearch import features
from simsearch.config import MAX_SAMPLE_MAGNITUDE, FeatureConfig, MatchConfig
from simsearch.errors import ParameterError

CFG = FeatureConfig()
MCFG = MatchConfig()
PROPERTY = settings(max_examples=100, deadline=None, derandomize=True, database=None)
# Samples of any magnitude a decoder can give: float WAV allows values past
# full scale.  (Past about 1e16 the power spectrum overflows float32: see
# test_log_spectrogram_of_huge_samples_is_finite.)
MAX_AMPLITUDE = 1e12


@st.composite
def signals(draw) -> np.ndarray:
    """Mono signals from empty to 1.5 s: drawn sample by sample when short,
    otherwise a constant (silence, DC, denormal) or seeded noise, clipped or
    not, at any level."""
    kind = draw(st.sampled_from(["samples", "constant", "noise", "square"]))
    if kind == "samples":
        return draw(hnp.arrays(np.float32, st.integers(0, 3 * CFG.n_fft),
                               elements=st.floats(-1.0, 1.0, width=32)
                               | st.sampled_from([0.0, 1.0, -1.0, 1e-40, -1e-45])))
    n = draw(st.integers(0, int(1.5 * CFG.sample_rate)))
    level = draw(st.sampled_from([0.0, 1e-42, 1e-30, 1e-6, 0.1, 1.0, 1e4, MAX_AMPLITUDE]))
    if kind == "constant":
        return np.full(n, level * draw(st.sampled_from([1.0, -1.0])), np.float32)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    y = rng.standard_normal(n)
    if kind == "square":  # clipped as hard as it gets
        y = np.sign(y)
    return (y * level).astype(np.float32)


def _expected_frames(n: int) -> int:
    return 1 + (max(n, CFG.n_fft) - CFG.n_fft) // CFG.hop


def assert_well_formed_spectrogram(S: np.ndarray, n_samples: int) -> None:
    assert S.dtype == np.float32 and S.shape == (_expected_frames(n_samples), CFG.n_bins)
    assert np.all(np.isfinite(S))
    assert S.min() >= 10 * np.log10(features._EPS) - 1e-3  # the floor, in dB


def assert_well_formed_peaks(p: features.Peaks, n_frames: int, per_block: int) -> None:
    assert len(p.t) == len(p.f) == len(p.v)
    assert np.all(np.isfinite(p.t)) and np.all(np.isfinite(p.f)) and np.all(np.isfinite(p.v))
    # Refinement moves a peak by at most half a cell (and a rounding error).
    half = 0.5 + 1e-6
    assert np.all((p.t >= -half) & (p.t <= n_frames - 1 + half))
    assert np.all((p.f >= -half) & (p.f <= CFG.n_bins - 1 + half))
    assert np.all(np.diff(p.t) > -2 * half), "peaks not in frame order"
    assert np.all(p.v > CFG.floor_db)
    if len(p.t):
        block = np.floor(p.t / (CFG.density_block_s / CFG.frame_seconds))
        assert np.bincount(block.astype(np.int64)).max() <= per_block


def assert_well_formed_triplets(tr: features.Triplets, p: features.Peaks) -> None:
    n = len(tr)
    for name in ("xr", "xd2", "xd3", "t1", "f1", "span"):
        field = getattr(tr, name)
        assert field.shape == (n,) and np.all(np.isfinite(field)), name
    assert tr.dv.shape == (n, 3) and np.all(np.isfinite(tr.dv))
    assert np.all((tr.xr >= 0) & (tr.xr <= CFG.ratio_levels))
    assert np.all((tr.span >= CFG.min_span) & (tr.span <= CFG.max_span))
    assert set(tr.t1.tolist()) <= set(p.t.tolist())


@PROPERTY
@given(y=signals())
def test_pipeline_on_arbitrary_signals(y):
    """Spectrogram, peaks, triplets, codes and probes of any signal are well
    formed; samples past MAX_SAMPLE_MAGNITUDE are refused."""
    if len(y) and np.max(np.abs(y)) > MAX_SAMPLE_MAGNITUDE:
        with pytest.raises(ParameterError):
            features.log_spectrogram(y, CFG)
        return
    S = features.log_spectrogram(y, CFG)
    assert_well_formed_spectrogram(S, len(y))
    for per_block, fanout in ((CFG.ref_peaks_per_block, CFG.ref_fanout),
                              (MCFG.query_peaks_per_block, MCFG.query_fanout)):
        p = features.spectral_peaks(S, CFG, per_block)
        assert_well_formed_peaks(p, len(S), per_block)
        tr = features.peak_triplets(p, CFG, fanout)
        assert_well_formed_triplets(tr, p)
    codes = features.reference_codes(tr, CFG)
    assert codes.dtype == np.uint64 and codes.shape == (len(tr),)
    assert np.all(codes < CFG.hash_cardinality)
    probes, owner, _ = features.query_probes(tr, CFG, MCFG)
    assert probes.dtype == np.uint64 and len(probes) == len(owner)
    assert np.all(probes < CFG.hash_cardinality)
    assert set(owner.tolist()) == set(range(len(tr)))
    # Constant signals up to full scale (silence, DC, denormals) carry nothing
    # to match.  (Far past full scale, the window's leakage of a DC crosses
    # the absolute floor_db and makes peaks.)
    if len(y) and np.all(y == y[0]) and abs(y[0]) <= 1.0:
        assert len(codes) == 0


@PROPERTY
@given(S=hnp.arrays(np.float32, st.tuples(st.integers(1, 40), st.just(CFG.n_bins)),
                    elements=st.floats(-120, 40, width=32) | st.sampled_from([-100.0, CFG.floor_db, 0.0])),
       per_block=st.integers(1, 30))
def test_spectral_peaks_on_arbitrary_spectrograms(S, per_block):
    p = features.spectral_peaks(S, CFG, per_block)
    assert_well_formed_peaks(p, len(S), per_block)
    # Each peak's level is that of a cell.
    assert np.all(np.isin(p.v, S))


@pytest.mark.parametrize("shape", [(0,), (CFG.n_bins,), (10, CFG.n_bins - 1), (10, CFG.n_bins + 1),
                                   (2, 10, CFG.n_bins)])
def test_spectral_peaks_refuses_wrong_shapes(shape):
    with pytest.raises(ParameterError):
        features.spectral_peaks(np.zeros(shape, np.float32), CFG, 10)


@pytest.mark.parametrize("shape", [(), (100, 2), (2, 100), (0, 0)])
def test_log_spectrogram_refuses_anything_but_mono(shape):
    with pytest.raises(ParameterError):
        features.log_spectrogram(np.zeros(shape, np.float32), CFG)


@pytest.mark.parametrize("level", [1e20, 1e30, 3e38])
def test_log_spectrogram_of_huge_samples_is_refused(level):
    """Found by the fuzzing: float32 powers overflowed past about 1e16 into an
    infinite or NaN spectrogram; samples past MAX_SAMPLE_MAGNITUDE are refused."""
    y = np.clip(np.random.default_rng(0).standard_normal(CFG.sample_rate) * level, -3e38, 3e38).astype(np.float32)
    with pytest.raises(ParameterError, match="within"):
        features.log_spectrogram(y, CFG)
