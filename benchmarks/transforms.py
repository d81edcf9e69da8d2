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


def sox_effect(y: np.ndarray, sr: int, tmp_dir: Path, effect: list[str], seed: int = 0) -> tuple[np.ndarray, int]:
    """Run a sox effect chain; the result is cut to the input's length."""
    z, zsr = _through_files(y, sr, tmp_dir, ".wav",
                            lambda src, dst: [["sox", "-V1", str(src), str(dst), *effect]])
    return z[: len(y)], zsr


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
