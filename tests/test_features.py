"""Public feature functions on synthetic signals: tones, chirps, silence."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import soxr

from audio_tools import chirp, tone, tone_sequence
from simsearch import _kernels as K
from simsearch import features
from simsearch.config import FORMAT_VERSION, FeatureConfig, MatchConfig
from simsearch.errors import ParameterError

CFG = FeatureConfig()


def _bin_freq(k: float, cfg: FeatureConfig = CFG) -> float:
    """Centre frequency (Hz) of log-frequency bin k."""
    return cfg.fmin * 2.0 ** (k / cfg.bins_per_octave)


def _all_peaks(y: np.ndarray, cfg: FeatureConfig = CFG) -> features.Peaks:
    return features.spectral_peaks(features.log_spectrogram(y, cfg), cfg, per_block=10_000)


@pytest.mark.parametrize("cfg", [CFG, FeatureConfig(bins_per_octave=24, sample_rate=11025, n_fft=2048, hop=512)],
                         ids=["default", "24bpo-11k"])
def test_log_filterbank_columns_sum_to_one(cfg):
    fb = features.log_filterbank(cfg)
    assert fb.shape == (cfg.n_fft // 2 + 1, cfg.n_bins)
    assert fb.dtype == np.float32
    assert np.all(fb >= 0)
    np.testing.assert_allclose(fb.sum(axis=0), 1.0, rtol=1e-5)
    # Each bin draws on the FFT bins around its own centre frequency.
    fft_freqs = np.arange(fb.shape[0]) * cfg.sample_rate / cfg.n_fft
    centroid = (fb * fft_freqs[:, None]).sum(axis=0)
    np.testing.assert_allclose(centroid, _bin_freq(np.arange(cfg.n_bins), cfg), rtol=0.02)


def test_log_spectrogram_shape_and_frames():
    y = np.zeros(CFG.sample_rate * 2, np.float32)
    S = features.log_spectrogram(y, CFG)
    assert S.dtype == np.float32
    assert S.shape == (1 + (len(y) - CFG.n_fft) // CFG.hop, CFG.n_bins)
    # Silence sits on the floor, far below the peak threshold.
    assert S.max() < CFG.floor_db - 10
    # Shorter than one FFT: padded to one frame.
    assert features.log_spectrogram(np.ones(10, np.float32) * 0.1, CFG).shape == (1, CFG.n_bins)


def test_log_spectrogram_rejects_multichannel():
    with pytest.raises(ParameterError):
        features.log_spectrogram(np.zeros((CFG.sample_rate, 2), np.float32), CFG)


def test_log_spectrogram_is_in_db():
    y = tone(_bin_freq(60), 2.0, CFG.sample_rate, amp=0.5)
    loud = features.log_spectrogram(y, CFG)[10:-10, 60]
    soft = features.log_spectrogram(y * 0.5, CFG)[10:-10, 60]
    np.testing.assert_allclose(loud - soft, 20 * np.log10(2), atol=0.01)


@pytest.mark.parametrize("k", [4, 10.0, 37.25, 72, 100.5, CFG.n_bins - 6])
def test_pure_tone_peaks_at_its_log_frequency_bin(k):
    p = _all_peaks(tone(_bin_freq(k), 3.0, CFG.sample_rate))
    assert len(p.t) > 0
    # Every peak of a pure tone lies on its bin, refined to within a fifth of a
    # bin (low bins are narrower than the FFT's spacing and interpolate).
    np.testing.assert_allclose(p.f, k, atol=0.2)


def test_resampling_shifts_every_peak_by_the_same_number_of_bins():
    # Played 5 bins (5/3 semitone) faster: every note moves up 5 bins, and
    # the melody gets shorter.
    melody = [262.0, 392.0, 330.0, 523.0, 440.0, 698.0, 1000.0, 1500.0]
    y = tone_sequence(melody, 0.5, CFG.sample_rate)
    faster = soxr.resample(y, CFG.sample_rate * 2 ** (5 / CFG.bins_per_octave), CFG.sample_rate).astype(np.float32)
    base, shifted = _all_peaks(y), _all_peaks(faster)
    # The notes' peaks (onsets also splatter weak peaks over the axis).
    base_f, shifted_f = base.f[base.v > -20], shifted.f[shifted.v > -20]
    assert len(set(np.round(base_f).tolist())) == len(melody)
    assert set(np.round(shifted_f - 5).tolist()) == set(np.round(base_f).tolist())
    # Every note's peak moved by 5 bins, to within a fifth of a bin (how many
    # peaks a steady note gives along time depends on rounding, not on shift).
    gap = np.abs(shifted_f[:, None] - 5.0 - base_f[None, :]).min(axis=1)
    assert gap.max() < 0.2


def test_exponential_chirp_is_a_straight_line():
    # A tremolo makes one peak per beat along the sweep.
    f0, f1, dur, sr = 250.0, 3000.0, 4.0, CFG.sample_rate
    t = np.arange(int(dur * sr)) / sr
    y = chirp(f0, f1, dur, sr, amp=0.5) * (0.6 + 0.4 * np.sin(2 * np.pi * 5 * t)).astype(np.float32)
    p = _all_peaks(y)
    p_t, p_f = p.t[p.v > -30], p.f[p.v > -30]
    assert len(p_t) >= 15
    slope, _ = np.polyfit(p_t, p_f, 1)
    expected = CFG.bins_per_octave * np.log2(f1 / f0) / (dur / CFG.frame_seconds)
    assert slope == pytest.approx(expected, rel=0.05)


@pytest.mark.parametrize("contrast_bins", [0, CFG.contrast_bins])
def test_spectral_peaks_keeps_the_most_salient_per_block(contrast_bins):
    """Each density block keeps its `per_block` peaks of highest rank: level
    (contrast_bins 0) or contrast with the bins around them."""
    cfg = dataclasses.replace(CFG, contrast_bins=contrast_bins)
    rng = np.random.default_rng(0)
    S = (rng.standard_normal((400, cfg.n_bins)) * 10 - 40).astype(np.float32)
    t, f, v = K.spectral_peaks(S, cfg.peak_time_radius, cfg.peak_freq_radius, np.float32(cfg.floor_db))
    rank = _naive_contrast(S, t, f, contrast_bins) if contrast_bins else v
    per_block = 7
    p = features.spectral_peaks(S, cfg, per_block)
    block_frames = cfg.density_block_s / cfg.frame_seconds
    blocks = np.floor(p.t / block_frames)
    assert np.bincount(blocks.astype(int)).max() <= per_block
    assert np.all(np.diff(p.t.round()) >= 0), "peaks stay in time order"
    kept_mask = np.isin(t, p.t) & np.isin(f, p.f)
    assert kept_mask.sum() == len(p.t)
    # Within each block, no dropped peak ranks above a kept one.
    all_blocks = np.floor(t / block_frames)
    for b in np.unique(all_blocks):
        inb = all_blocks == b
        kept, dropped = rank[inb & kept_mask], rank[inb & ~kept_mask]
        assert len(kept) == min(per_block, np.count_nonzero(inb))
        if len(dropped):
            assert dropped.max() <= kept.min()


def _naive_contrast(S, t, f, w):
    """Plain reference of features.peak_contrast: a loop over the peaks."""
    out = np.empty(len(t))
    for k in range(len(t)):
        i, j = int(np.rint(t[k])), int(np.rint(f[k]))
        lo, hi = max(j - w, 0), min(j + w + 1, S.shape[1])
        out[k] = S[i, j] - S[i, lo:hi].astype(np.float64).mean()
    return out


@pytest.mark.parametrize("w", [1, 5, 24, 500])
def test_peak_contrast_matches_a_loop(w):
    rng = np.random.default_rng(w)
    S = (rng.standard_normal((50, CFG.n_bins)) * 10 - 40).astype(np.float32)
    t = rng.uniform(-0.4, 49.4, 300)
    f = rng.uniform(-0.4, CFG.n_bins - 0.6, 300)
    np.testing.assert_allclose(features.peak_contrast(S, t, f, w), _naive_contrast(S, t, f, w), atol=1e-4)
    assert features.peak_contrast(S, t[:0], f[:0], w).shape == (0,)


def test_spectral_peaks_rejects_wrong_shape():
    with pytest.raises(ParameterError):
        features.spectral_peaks(np.zeros((10, CFG.n_bins + 1), np.float32), CFG, 5)
    with pytest.raises(ParameterError):
        features.spectral_peaks(np.zeros(CFG.n_bins, np.float32), CFG, 5)


def test_dense_peaks_are_every_local_maximum_in_time_order():
    rng = np.random.default_rng(2)
    y = tone_sequence([_bin_freq(k) for k in rng.integers(5, 130, 12)], 0.25, CFG.sample_rate)
    y = (y + 0.05 * rng.standard_normal(len(y))).astype(np.float32)
    S = features.log_spectrogram(y, CFG)
    dense = features.dense_peaks(S, CFG, CFG.peak_time_radius, CFG.peak_freq_radius)
    assert np.all(np.diff(dense.t) >= 0)
    # The fingerprint's peaks, before the quota, are the same maxima.
    every = _all_peaks(y)
    assert sorted(zip(dense.t, dense.f)) == sorted(zip(every.t, every.f))
    # A smaller neighbourhood keeps more of them, and every one of those.
    denser = features.dense_peaks(S, CFG, 2, 3)
    assert len(denser.t) > 1.5 * len(dense.t)
    assert set(zip(np.rint(dense.t), np.rint(dense.f))) <= set(zip(np.rint(denser.t), np.rint(denser.f)))
    with pytest.raises(ParameterError):
        features.dense_peaks(S, CFG, -1, 3)
    with pytest.raises(ParameterError):
        features.dense_peaks(S[:, 1:], CFG, 2, 3)


def test_silence_has_no_peaks_and_no_codes():
    codes, tr = features.reference_fingerprint(np.zeros(CFG.sample_rate * 3, np.float32), CFG)
    assert len(codes) == 0 and len(tr) == 0


def _melody():
    rng = np.random.default_rng(1)
    freqs = _bin_freq(rng.uniform(5, CFG.n_bins - 5, 40))
    y = tone_sequence(freqs, 0.2, CFG.sample_rate) + tone_sequence(freqs[::-1], 0.2, CFG.sample_rate)
    return y * 0.5


def test_triplet_fields_stay_inside_their_quantiser():
    codes, tr = features.reference_fingerprint(_melody(), CFG)
    assert len(tr) > 50
    assert np.all((tr.xr >= 0) & (tr.xr <= CFG.ratio_levels))
    assert np.all((tr.xd2 >= 0) & (tr.xd2 <= CFG.df_levels))
    assert np.all((tr.xd3 >= 0) & (tr.xd3 <= CFG.df_levels))
    assert np.all((tr.span >= CFG.min_span) & (tr.span <= CFG.max_span))
    assert codes.dtype == np.uint64 and len(codes) == len(tr)
    assert int(codes.max()) < CFG.hash_cardinality


def test_query_triplets_are_denser_than_reference_triplets():
    y = _melody()
    _, ref = features.reference_fingerprint(y, CFG)
    q = features.query_triplets(y, CFG)
    assert len(q) > len(ref)


def test_feature_config_validates_and_round_trips():
    assert FeatureConfig.from_json(CFG.to_json()) == CFG
    with pytest.raises(ParameterError):
        FeatureConfig(fmin=2000.0).validate()  # the top of the axis would pass Nyquist
    with pytest.raises(ParameterError):
        FeatureConfig(hop=0).validate()


# Codes are stored in segments, so their layout is part of the on-disk format:
# the codes of fixed triplet fields under each FORMAT_VERSION.  A new layout
# needs a new FORMAT_VERSION (old indexes are then refused with ConfigMismatch
# instead of silently matching nothing) and a new entry here.
_LAYOUT_CONFIG = dict(fmin=220.0, bins_per_octave=36, n_octaves=4, ratio_levels=16, max_df=30, df_step=2.0,
                      f1_band=36, min_span=3, max_span=60, span_band_octaves=1.0)
GOLDEN_CODES = {
    1: [2260, 143867, 306899],  # as written by every build from 7ff3e6f to 6a036a0
    2: [18085, 1150939, 2455198],  # loudness-order bits appended (6721a53)
    3: [18085, 1150939, 2455198],  # same layout; peaks ranked by spectral contrast (FeatureConfig.contrast_bins)
}


def test_stored_hash_layout_is_tied_to_the_format_version():
    known = dict(xr=np.array([0.5, 7.5, 15.5]), xd2=np.array([3.5, 15.5, 29.5]), xd3=np.array([20.5, 1.5, 30.5]),
                 t1=np.array([10.0, 20.0, 30.0]), f1=np.array([5.5, 60.5, 140.5]),
                 span=np.array([3.5, 12.5, 59.5]))
    # Any further per-triplet field (such as level differences): one row each.
    extra = {f.name: np.array([[3.0, -4.0, 5.0], [-6.0, 7.0, 8.0], [9.0, 10.0, -11.0]], np.float32)
             for f in dataclasses.fields(features.Triplets) if f.name not in known}
    codes = features.reference_codes(features.Triplets(**known, **extra), FeatureConfig(**_LAYOUT_CONFIG))
    assert FORMAT_VERSION in GOLDEN_CODES, f"record the codes of format version {FORMAT_VERSION} here"
    assert codes.tolist() == GOLDEN_CODES[FORMAT_VERSION], (
        f"the hash layout changed but FORMAT_VERSION is still {FORMAT_VERSION}: indexes written before "
        "would open and silently match nothing")


def test_near_grid_marks_the_cells_within_tolerance_of_every_dense_maximum():
    rng = np.random.default_rng(5)
    S = rng.normal(-40, 6, (120, CFG.n_bins)).astype(np.float32)
    mcfg = MatchConfig()
    maxima = features.dense_peaks(S, CFG, *mcfg.dense_peak_radius)
    near = features.near_grid(maxima, len(S), CFG, mcfg)
    ti, fi = np.rint(2 * maxima.t).astype(int), np.rint(maxima.f).astype(int)  # rows every half frame
    tt, ff = np.meshgrid(np.arange(2 * S.shape[0]), np.arange(S.shape[1]), indexing="ij")
    expected = np.zeros((2 * S.shape[0], S.shape[1]), bool)
    for a, b in zip(ti, fi):
        expected |= (np.abs(tt - a) <= 2 * mcfg.verify_tol_frames) & (np.abs(ff - b) <= mcfg.verify_tol_bins)
    np.testing.assert_array_equal(near, expected)
    assert 0.03 < near.mean() < 0.6  # every maximum, far more than a quota's
