"""Feature extraction: log-frequency spectrogram -> spectral peaks -> peak
triplets -> hash codes.

A triplet is an anchor peak and two later peaks.  Its hash is built from
  * the time ratio (t2 - t1) / (t3 - t1), unchanged by any time scaling,
  * the frequency differences f2 - f1 and f3 - f1 on a log-frequency axis,
    unchanged by any pitch shift or resampling,
  * the loudness order of the three peaks (three signs of level differences),
    which a gain or a gentle equaliser keeps,
  * two coarse bands, of f1 and of the span t3 - t1, which do move under
    pitch and speed changes: the query probes every band the searched range
    of pitch and speed can reach.
So one fingerprint serves plain copies and speed, pitch and tempo changes;
only the probes and the alignment search widen.  Each triplet also keeps its
anchor time, anchor frequency and span, so a hit says at once where it is and
which speed and pitch shift it implies.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.fft as sfft
from scipy import sparse

from . import _kernels as K
from .config import MAX_SAMPLE_MAGNITUDE, FeatureConfig, MatchConfig
from .errors import ParameterError

_EPS = 1e-10


@lru_cache(maxsize=8)
def log_filterbank(cfg: FeatureConfig) -> np.ndarray:
    """Weights [n_fft//2+1, n_bins] mapping a power spectrum to log-spaced bins.

    Each bin is a triangle on the linear axis centred at its log-spaced
    frequency, as wide as the larger of the log spacing and the FFT spacing,
    so low bins interpolate between FFT bins and high bins average them.
    """
    n_fft_bins = cfg.n_fft // 2 + 1
    fft_freqs = np.arange(n_fft_bins) * cfg.sample_rate / cfg.n_fft
    centers = cfg.fmin * 2.0 ** (np.arange(cfg.n_bins) / cfg.bins_per_octave)
    spacing = np.maximum(centers * (2.0 ** (1.0 / cfg.bins_per_octave) - 1.0), cfg.sample_rate / cfg.n_fft)
    w = 1.0 - np.abs(fft_freqs[:, None] - centers[None, :]) / spacing[None, :]
    w = np.maximum(w, 0.0)
    w /= w.sum(axis=0, keepdims=True)
    return w.astype(np.float32)


@lru_cache(maxsize=8)
def _banded_filterbank(cfg: FeatureConfig) -> tuple[int, int, sparse.csr_matrix]:
    """The filterbank restricted to the FFT bins it uses, as a sparse matrix
    (each log bin reads 2 to 10 FFT bins: a dense product wastes 98%)."""
    w = log_filterbank(cfg)
    used = np.flatnonzero(w.any(axis=1))
    lo, hi = int(used[0]), int(used[-1]) + 1
    return lo, hi, sparse.csr_matrix(w[lo:hi].T)


def log_spectrogram(y: np.ndarray, cfg: FeatureConfig, chunk_frames: int = 4096) -> np.ndarray:
    """Power spectrogram on the log-frequency axis, in dB.

    y : float32 [n_samples] mono at cfg.sample_rate.
    Returns float32 [n_frames, n_bins]; frame k starts at sample k * hop.
    """
    if y.ndim != 1:
        raise ParameterError("y must be one-dimensional (mono)")
    y = np.ascontiguousarray(y, dtype=np.float32)
    if len(y) and not float(np.max(np.abs(y))) <= MAX_SAMPLE_MAGNITUDE:  # NaN fails too
        raise ParameterError(f"samples must be finite and within +-{MAX_SAMPLE_MAGNITUDE:g} "
                             "(past that, float32 powers overflow)")
    if len(y) < cfg.n_fft:
        y = np.pad(y, (0, cfg.n_fft - len(y)))
    frames = np.lib.stride_tricks.sliding_window_view(y, cfg.n_fft)[:: cfg.hop]
    window = np.hanning(cfg.n_fft + 1)[:-1].astype(np.float32)
    lo, hi, fbt = _banded_filterbank(cfg)
    # Scale so that a full-scale sine gives about 0 dB.
    scale = np.float32((2.0 / window.sum()) ** 2)
    out = np.empty((len(frames), cfg.n_bins), np.float32)
    for start in range(0, len(frames), chunk_frames):  # chunks bound memory, not a per-frame loop
        spec = sfft.rfft(frames[start : start + chunk_frames] * window, axis=1)[:, lo:hi]
        power = (spec.real**2 + spec.imag**2) * scale
        out[start : start + chunk_frames] = (fbt @ power.T).T
    np.maximum(out, _EPS, out=out)
    np.log10(out, out=out)
    out *= 10.0
    return out


@dataclass(frozen=True)
class Peaks:
    t: np.ndarray  # float64 [n], frames (refined)
    f: np.ndarray  # float64 [n], log-frequency bins (refined)
    v: np.ndarray  # float32 [n], dB


def spectral_peaks(S: np.ndarray, cfg: FeatureConfig, per_block: int) -> Peaks:
    """Strongest local maxima of S: at most `per_block` per density block."""
    if S.ndim != 2 or S.shape[1] != cfg.n_bins:
        raise ParameterError(f"S must have shape (n_frames, {cfg.n_bins})")
    t, f, v = K.spectral_peaks(np.ascontiguousarray(S, np.float32), cfg.peak_time_radius,
                               cfg.peak_freq_radius, np.float32(cfg.floor_db))
    rank = peak_contrast(S, t, f, cfg.contrast_bins) if cfg.contrast_bins else v
    keep = _strongest_per_block(t, rank, cfg.density_block_s / cfg.frame_seconds, per_block)
    return Peaks(t[keep], f[keep], v[keep])


def peak_contrast(S: np.ndarray, t: np.ndarray, f: np.ndarray, half_width: int) -> np.ndarray:
    """Level of each peak (at its nearest cell) less the mean of S over the
    +-`half_width` bins around it in its frame (clipped at the axis ends), dB."""
    n, m = S.shape
    if len(t) == 0:
        return np.zeros(0, np.float32)
    ti = np.clip(np.rint(t).astype(np.int64), 0, n - 1)
    fi = np.clip(np.rint(f).astype(np.int64), 0, m - 1)
    rows = S[ti].astype(np.float64)  # one row per peak: few peaks per frame, cheaper than the whole S
    cum = np.zeros((len(ti), m + 1))
    np.cumsum(rows, axis=1, out=cum[:, 1:])
    lo = np.maximum(fi - half_width, 0)
    hi = np.minimum(fi + half_width + 1, m)
    k = np.arange(len(ti))
    mean = (cum[k, hi] - cum[k, lo]) / (hi - lo)
    return (rows[k, fi] - mean).astype(np.float32)


def _strongest_per_block(t: np.ndarray, v: np.ndarray, block: float, per_block: int) -> np.ndarray:
    """Indices (in time order) of the `per_block` loudest peaks of each block."""
    if len(t) == 0:
        return np.zeros(0, np.int64)
    blk = np.floor(t / block).astype(np.int64)
    order = np.lexsort((-v, blk))
    sorted_blk = blk[order]
    first = np.searchsorted(sorted_blk, sorted_blk, side="left")
    rank = np.arange(len(order)) - first
    return np.sort(order[rank < per_block])


def dense_peaks(S: np.ndarray, cfg: FeatureConfig, time_radius: int, freq_radius: int) -> Peaks:
    """Every local maximum of S in a (2*time_radius+1) x (2*freq_radius+1)
    neighbourhood louder than cfg.floor_db, refined, in order of time (not
    only of frame: refinement may swap two peaks of neighbouring frames)."""
    if S.ndim != 2 or S.shape[1] != cfg.n_bins:
        raise ParameterError(f"S must have shape (n_frames, {cfg.n_bins})")
    if time_radius < 0 or freq_radius < 0:
        raise ParameterError("time_radius and freq_radius must be non-negative")
    t, f, v = K.spectral_peaks(np.ascontiguousarray(S, np.float32), time_radius, freq_radius,
                               np.float32(cfg.floor_db))
    order = np.argsort(t, kind="stable")
    return Peaks(t[order], f[order], v[order])


@dataclass(frozen=True)
class Triplets:
    """Triplet descriptors: the invariant fields (in quantisation steps) and
    the anchor's position."""

    xr: np.ndarray  # time ratio, in steps
    xd2: np.ndarray  # f2 - f1, in steps
    xd3: np.ndarray  # f3 - f1, in steps
    t1: np.ndarray  # anchor time, frames
    f1: np.ndarray  # anchor frequency, bins
    span: np.ndarray  # t3 - t1, frames
    dv: np.ndarray  # float32 [n, 3]: v1 - v2, v1 - v3, v2 - v3, dB

    def __len__(self) -> int:
        return len(self.t1)


def peak_triplets(p: Peaks, cfg: FeatureConfig, fanout: int) -> Triplets:
    idx = K.peak_triplets(p.t, p.f, fanout, float(cfg.min_span), float(cfg.max_span), float(cfg.max_df))
    i, a, b = idx[:, 0], idx[:, 1], idx[:, 2]
    span = p.t[b] - p.t[i]
    ratio = (p.t[a] - p.t[i]) / span
    return Triplets(
        xr=ratio * cfg.ratio_levels,
        xd2=(p.f[a] - p.f[i] + cfg.max_df) / cfg.df_step,
        xd3=(p.f[b] - p.f[i] + cfg.max_df) / cfg.df_step,
        t1=p.t[i],
        f1=p.f[i],
        span=span,
        dv=np.stack([p.v[i] - p.v[a], p.v[i] - p.v[b], p.v[a] - p.v[b]], axis=1).astype(np.float32),
    )


def reference_codes(tr: Triplets, cfg: FeatureConfig) -> np.ndarray:
    """One uint64 hash code per triplet (the value stored in the index)."""
    return K.hash_codes(tr.xr, tr.xd2, tr.xd3, tr.f1, tr.span, tr.dv, cfg.ratio_levels, cfg.df_levels,
                        float(cfg.f1_band), cfg.f1_bands, float(cfg.min_span), cfg.span_band_octaves,
                        cfg.span_bands)


def query_probes(tr: Triplets, cfg: FeatureConfig,
                 mcfg: MatchConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All codes to look up for the query's triplets: (codes, owner triplet,
    detour: how many of the probe's fields or loudness signs are not the
    query's own; see _kernels.probe_codes)."""
    # A query peak at f_q came from f_r = f_q - shift, |shift| <= max_pitch
    # semitones (plus a bin of slack for the peak's own jitter).
    hi = mcfg.max_pitch * cfg.bins_per_octave / 12.0 + 1.0
    lo = -hi
    return K.probe_codes(tr.xr, tr.xd2, tr.xd3, tr.f1, tr.span, tr.dv, cfg.ratio_levels, cfg.df_levels,
                         float(cfg.f1_band), cfg.f1_bands, float(cfg.min_span), cfg.span_band_octaves,
                         cfg.span_bands, mcfg.probe_margin, lo, hi,
                         mcfg.min_speed * 0.97, mcfg.max_speed * 1.03, mcfg.tie_db)


def reference_fingerprint(y: np.ndarray, cfg: FeatureConfig) -> tuple[np.ndarray, Triplets]:
    """Codes and triplets of a catalog track."""
    p = spectral_peaks(log_spectrogram(y, cfg), cfg, cfg.ref_peaks_per_block)
    tr = peak_triplets(p, cfg, cfg.ref_fanout)
    return reference_codes(tr, cfg), tr


def query_peaks(y: np.ndarray, cfg: FeatureConfig, mcfg: MatchConfig = MatchConfig()) -> Peaks:
    """The denser peak set of a query."""
    return spectral_peaks(log_spectrogram(y, cfg), cfg, mcfg.query_peaks_per_block)


def near_grid(maxima: Peaks, n_frames: int, cfg: FeatureConfig, mcfg: MatchConfig = MatchConfig()) -> np.ndarray:
    """bool [2 * n_frames, n_bins], rows every half frame: the cells within
    +-`verify_tol_frames` (a multiple of half a frame) and +-`verify_tol_bins`
    of one of `maxima` (the query's dense peaks, at their refined time).
    What verification looks up for each of a reference's peaks."""
    n, m = 2 * n_frames, cfg.n_bins
    grid = np.zeros((n, m), bool)
    grid[np.clip(np.rint(2 * maxima.t).astype(np.int64), 0, n - 1),
         np.clip(np.rint(maxima.f).astype(np.int64), 0, m - 1)] = True
    out = grid.copy()
    for d in range(1, int(round(2 * mcfg.verify_tol_frames)) + 1):
        out[d:] |= grid[:-d]
        out[:-d] |= grid[d:]
    grid = out.copy()
    for d in range(1, mcfg.verify_tol_bins + 1):
        out[:, d:] |= grid[:, :-d]
        out[:, :-d] |= grid[:, d:]
    return out


def query_triplets(y: np.ndarray, cfg: FeatureConfig, mcfg: MatchConfig = MatchConfig()) -> Triplets:
    """The denser triplet set of a query (the unit-speed pass's fan-out)."""
    return peak_triplets(query_peaks(y, cfg, mcfg), cfg, mcfg.query_fanout)
