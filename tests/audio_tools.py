"""Test audio: the real clips in tests/data and transforms made from them.

Everything is generated from numpy arrays with soundfile (and ffmpeg for the
containers libsndfile does not write), into directories the tests own.
"""

from __future__ import annotations

import functools
import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

DATA = Path(__file__).parent / "data"
CATALOG = ("flare_battle_theme", "flare_cave_theme", "flare_forest_theme", "flare_town_theme")
OUTSIDE = ("flare_dungeon_theme", "flare_boss_theme")


def clip_path(name: str) -> Path:
    return DATA / f"{name}.ogg"


def catalog_sources(names=CATALOG) -> list[tuple[str, str]]:
    """(track id, path) of clips, as build() takes them."""
    return [(name, str(clip_path(name))) for name in names]


@functools.lru_cache(maxsize=None)
def _load(name: str) -> tuple[np.ndarray, int]:
    y, sr = sf.read(clip_path(name), dtype="float32", always_2d=True)
    y = y.mean(axis=1).astype(np.float32)
    y.setflags(write=False)
    return y, sr


def load_clip(name: str) -> tuple[np.ndarray, int]:
    """(mono float32 samples, sample rate) of a test clip; read-only array."""
    return _load(name)


def excerpt(y: np.ndarray, sr: int, offset_s: float, duration_s: float) -> np.ndarray:
    a = int(round(offset_s * sr))
    return np.array(y[a : a + int(round(duration_s * sr))], dtype=np.float32)


def sample_in_host(name: str, offset_s: float, length_s: float, host: str, at_s: float,
                   host_gain: float = 0.3) -> tuple[np.ndarray, int]:
    """`length_s` of clip `name` from `offset_s`, placed at `at_s` in the whole
    of clip `host`, the host under it scaled by `host_gain`: (samples, rate)."""
    y, sr = load_clip(name)
    out, host_sr = load_clip(host)
    assert host_sr == sr
    out = np.array(out, dtype=np.float32)
    seg = excerpt(y, sr, offset_s, length_s)
    a = int(at_s * sr)
    out[a : a + len(seg)] = host_gain * out[a : a + len(seg)] + seg
    return out, sr


def pieces(names, length_s: float = 3.0, sr: int = 16000) -> list[bytes]:
    """Distinct (non-overlapping) pieces of the clips, as FLAC bytes at `sr`."""
    out = []
    for name in names:
        y, clip_sr = load_clip(name)
        for offset in range(0, int(len(y) / clip_sr - length_s), int(length_s)):
            out.append(audio_bytes(resample(excerpt(y, clip_sr, offset, length_s), clip_sr, sr), sr, "flac"))
    return out


def add_noise(y: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """y plus white noise `snr_db` below its mean power."""
    rng = np.random.default_rng(seed)
    power = float(np.mean(y.astype(np.float64) ** 2))
    noise = rng.standard_normal(len(y)) * np.sqrt(power / 10 ** (snr_db / 10))
    return (y + noise).astype(np.float32)


def resample(y: np.ndarray, sr: int, new_sr: int) -> np.ndarray:
    return y if sr == new_sr else soxr.resample(y, sr, new_sr).astype(np.float32)


def _channel_gains(channels: int) -> np.ndarray:
    return np.linspace(1.0, 0.6, channels, dtype=np.float32) if channels > 1 else np.ones(1, np.float32)


def to_channels(y: np.ndarray, channels: int) -> np.ndarray:
    """[n, channels]: the channels differ in level, so a mix-down has to average."""
    return y[:, None] * _channel_gains(channels)[None, :]


def mix_gain(channels: int) -> float:
    """The level of the mono mix-down (the channels' mean) of to_channels(y, channels), relative to y."""
    return float(np.mean(_channel_gains(channels)))


_SF_FORMATS = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"), "ogg": ("OGG", "VORBIS"),
               "mp3": ("MP3", "MPEG_LAYER_III"), "wav-float": ("WAV", "FLOAT")}
_FFMPEG_CODECS = {"m4a": ["-c:a", "aac", "-b:a", "96k"], "opus": ["-c:a", "libopus", "-b:a", "64k"]}


def write_audio(path: Path, y: np.ndarray, sr: int, fmt: str, channels: int = 1) -> Path:
    """Write mono `y` (at `sr`) as `fmt` with `channels` channels; returns the path."""
    path = Path(path)
    data = to_channels(np.clip(y, -1.0, 1.0), channels)
    if fmt in _SF_FORMATS:
        container, subtype = _SF_FORMATS[fmt]
        sf.write(path, data, sr, format=container, subtype=subtype)
        return path
    if fmt in _FFMPEG_CODECS:
        wav = path.with_suffix(".src.wav")
        sf.write(wav, data, sr, subtype="PCM_16")
        subprocess.run([ffmpeg(), "-nostdin", "-v", "error", "-y", "-i", str(wav), *_FFMPEG_CODECS[fmt], str(path)],
                       check=True, capture_output=True)
        wav.unlink()
        return path
    raise ValueError(f"unknown format {fmt}")


def audio_bytes(y: np.ndarray, sr: int, fmt: str = "flac", channels: int = 1) -> bytes:
    """The file `write_audio` would write, as bytes (libsndfile formats only)."""
    container, subtype = _SF_FORMATS[fmt]
    buf = io.BytesIO()
    sf.write(buf, to_channels(y, channels), sr, format=container, subtype=subtype)
    return buf.getvalue()


def ffmpeg() -> str:
    exe = shutil.which("ffmpeg")
    if exe is None:  # CI installs it; a machine without it cannot run these tests
        raise RuntimeError("ffmpeg is required by the test suite")
    return exe


def png_bytes() -> bytes:
    """A small valid PNG image."""
    return subprocess.run([ffmpeg(), "-nostdin", "-v", "error", "-f", "lavfi", "-i", "color=red:s=16x16",
                           "-frames:v", "1", "-f", "image2pipe", "-vcodec", "png", "pipe:1"],
                          check=True, capture_output=True).stdout


# -- synthetic signals --------------------------------------------------------

def tone(freq: float, duration_s: float, sr: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(duration_s * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def chirp(f0: float, f1: float, duration_s: float, sr: int, amp: float = 0.5) -> np.ndarray:
    """Exponential sweep from f0 to f1 Hz: a straight line on a log-frequency axis."""
    t = np.arange(int(duration_s * sr)) / sr
    k = np.log(f1 / f0) / duration_s
    phase = 2 * np.pi * f0 * (np.exp(k * t) - 1) / k
    return (amp * np.sin(phase)).astype(np.float32)


def tone_sequence(freqs, note_s: float, sr: int, amp: float = 0.4) -> np.ndarray:
    """Notes one after another, each with a short fade so onsets make peaks."""
    out = []
    fade = np.minimum(1.0, np.minimum(np.arange(int(note_s * sr)), np.arange(int(note_s * sr))[::-1]) / (0.01 * sr))
    for f in freqs:
        out.append(tone(f, note_s, sr, amp) * fade.astype(np.float32))
    return np.concatenate(out).astype(np.float32)
