"""Degradations applied to query excerpts, made with the real tools.

Every transform takes mono float32 samples and their sample rate and returns
(samples, sample rate); it never changes the excerpt's timing, so the true
position of the excerpt in its track still holds.  Codec and effects go
through ffmpeg and sox in subprocesses, with temporary files in a scratch
directory; the noise is numpy's, seeded.

    none               the excerpt as cut
    mp3_64k            encoded with LAME at 64 kbit/s by ffmpeg, decoded back
    gain_-12dB         12 dB quieter
    pink_noise_10dB    pink (1/f power) noise added at 10 dB SNR
    pink_noise_0dB     ... at 0 dB SNR (as loud as the music)
    bandpass_300_3400  telephone band, sox `sinc 300-3400`
    reverb             moderate room, sox `reverb 50 50 100` (wet + dry), cut to the excerpt's length

The derivatives benchmark (derivatives.py) also uses the building blocks
below: `sox_effect` with an output length of its own (a speed or tempo change
consumes more or less source than it outputs), `mix` (one signal under
another at a power ratio), `speech` (espeak-ng), `resample` (sox) and
`embed` (a segment placed inside other music).
"""

from __future__ import annotations

import subprocess
import tempfile
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf

Transform = Callable[..., tuple[np.ndarray, int]]

TOOLS = ("ffmpeg", "sox")
SPEECH_TOOLS = ("espeak-ng",)


def none(y: np.ndarray, sr: int, seed: int = 0) -> tuple[np.ndarray, int]:
    return y, sr


def gain(y: np.ndarray, sr: int, db: float, seed: int = 0) -> tuple[np.ndarray, int]:
    return (y * np.float32(10.0 ** (db / 20.0))).astype(np.float32), sr


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Pink noise of unit power: white Gaussian noise shaped to a 1/f power
    spectrum in the frequency domain (no DC).

    Returns float64 [n].
    """
    spec = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    f = np.arange(len(spec), dtype=np.float64)
    spec[0] = 0.0
    spec[1:] /= np.sqrt(f[1:])
    x = np.fft.irfft(spec, n)
    return x / np.sqrt(np.mean(x**2))


def add_pink_noise(y: np.ndarray, sr: int, snr_db: float, seed: int = 0) -> tuple[np.ndarray, int]:
    """Add pink noise `snr_db` below the excerpt's own mean power."""
    signal_power = float(np.mean(np.square(y, dtype=np.float64)))
    noise = pink_noise(len(y), np.random.default_rng(seed)) * np.sqrt(signal_power / 10.0 ** (snr_db / 10.0))
    return (y + noise).astype(np.float32), sr


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")


def _read_mono(path: Path) -> tuple[np.ndarray, int]:
    z, sr = sf.read(path, dtype="float32", always_2d=True)
    return np.ascontiguousarray(z.mean(axis=1, dtype=np.float32)), sr


def _through_files(y: np.ndarray, sr: int, tmp_dir: Path, out_suffix: str,
                   make_cmds: Callable[[Path, Path], list[list[str]]]) -> tuple[np.ndarray, int]:
    """Write `y` as a float WAV, run the commands that `make_cmds(src, dst)`
    gives, read `dst` back (as mono)."""
    tmp_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tmp_dir) as d:
        src, dst = Path(d) / "in.wav", Path(d) / f"out{out_suffix}"
        sf.write(src, y, sr, subtype="FLOAT")
        for cmd in make_cmds(src, dst):
            _run(cmd)
        return _read_mono(dst)


def mp3(y: np.ndarray, sr: int, tmp_dir: Path, bitrate: str = "64k", seed: int = 0) -> tuple[np.ndarray, int]:
    def cmds(src: Path, dst: Path) -> list[list[str]]:
        coded = dst.with_name("coded.mp3")
        return [["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(src), "-c:a", "libmp3lame",
                 "-b:a", bitrate, str(coded)],
                ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(coded), "-c:a", "pcm_f32le", str(dst)]]

    z, zsr = _through_files(y, sr, tmp_dir, ".wav", cmds)
    return z[: len(y)], zsr


def sox_effect(y: np.ndarray, sr: int, tmp_dir: Path, effect: list[str], seed: int = 0,
               n_out: int | None = None) -> tuple[np.ndarray, int]:
    """Run a sox effect chain; the result is cut to `n_out` samples (default:
    the input's length).  Raises when the chain gives fewer than `n_out`."""
    n_out = len(y) if n_out is None else n_out
    z, zsr = _through_files(y, sr, tmp_dir, ".wav",
                            lambda src, dst: [["sox", "-V1", str(src), str(dst), *effect]])
    if len(z) < n_out:
        raise RuntimeError(f"sox {' '.join(effect)} gave {len(z)} samples, {n_out} needed")
    return z[:n_out], zsr


def resample(y: np.ndarray, sr: int, new_sr: int, tmp_dir: Path) -> np.ndarray:
    """y at `new_sr` (sox `rate`, its default high quality); y itself when the rates agree."""
    if sr == new_sr:
        return y
    z, _ = _through_files(y, sr, tmp_dir, ".wav",
                          lambda src, dst: [["sox", "-V1", str(src), "-r", str(new_sr), str(dst), "rate"]])
    return z


def fit_length(y: np.ndarray, n: int) -> np.ndarray:
    """y looped (or cut) to exactly n samples."""
    return np.resize(y, n) if len(y) else np.zeros(n, y.dtype)


def power(y: np.ndarray) -> float:
    return float(np.mean(np.square(y, dtype=np.float64)))


def peak_guard(y: np.ndarray, peak: float = 0.99) -> np.ndarray:
    """y scaled down to `peak` when it would clip, unchanged otherwise."""
    m = float(np.max(np.abs(y))) if len(y) else 0.0
    return (y * np.float32(peak / m)).astype(np.float32) if m > peak else y.astype(np.float32)


def mix(y: np.ndarray, other: np.ndarray, gain_db: float) -> np.ndarray:
    """y plus `other` (looped or cut to y's length) scaled so that its mean
    power is `gain_db` relative to y's; scaled down as a whole if it would clip."""
    other = fit_length(other, len(y)).astype(np.float64)
    g = np.sqrt(power(y) / max(power(other), 1e-20) * 10.0 ** (gain_db / 10.0))
    return peak_guard(y + g * other)


def speech(text: str, sr: int, tmp_dir: Path, words_per_minute: int = 160, pitch: int = 50) -> np.ndarray:
    """`text` spoken by espeak-ng (default English voice), resampled by sox to
    `sr`, mono float32."""
    tmp_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tmp_dir) as d:
        raw, out = Path(d) / "speech.wav", Path(d) / "speech_sr.wav"
        _run(["espeak-ng", "-s", str(words_per_minute), "-p", str(pitch), "-w", str(raw), text])
        _run(["sox", "-V1", str(raw), "-r", str(sr), "-c", "1", str(out), "rate"])
        return _read_mono(out)[0]


def embed(host: np.ndarray, segment: np.ndarray, at: int, host_db: float | None = -10.0,
          host_gain: float = 0.3) -> np.ndarray:
    """`segment` placed at sample `at` of `host`; scaled down as a whole if it would clip.

    With `host_db` (the default), the segment is brought to the host's mean
    power, as a producer mixes a sample in at the level of the music around
    it, and the host under it is kept `host_db` below it (never amplified).
    With `host_db=None`, the segment keeps its own level and the host under it
    is scaled by the amplitude factor `host_gain`: a quiet segment then lies
    buried under louder music.
    """
    if at < 0 or at + len(segment) > len(host):
        raise ValueError(f"a segment of {len(segment)} samples does not fit at {at} in {len(host)}")
    out = host.astype(np.float64)
    seg = segment.astype(np.float64)
    under = out[at : at + len(seg)]
    if host_db is None:
        gain = host_gain
    else:
        seg = seg * np.sqrt(power(host) / max(power(seg), 1e-20))
        gain = min(1.0, float(np.sqrt(power(seg) / max(power(under), 1e-20) * 10.0 ** (host_db / 10.0))))
    out[at : at + len(seg)] = gain * under + seg
    return peak_guard(out)


def transforms(tmp_dir: Path) -> dict[str, Transform]:
    """The benchmark's transforms by name; each is called as f(y, sr, seed=...)."""
    return {
        "none": none,
        "mp3_64k": partial(mp3, tmp_dir=tmp_dir, bitrate="64k"),
        "gain_-12dB": partial(gain, db=-12.0),
        "pink_noise_10dB": partial(add_pink_noise, snr_db=10.0),
        "pink_noise_0dB": partial(add_pink_noise, snr_db=0.0),
        "bandpass_300_3400": partial(sox_effect, tmp_dir=tmp_dir, effect=["sinc", "300-3400"]),
        "reverb": partial(sox_effect, tmp_dir=tmp_dir, effect=["reverb", "50", "50", "100"]),
    }
