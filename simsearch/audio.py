"""The only module that reads media: decode, mix down to mono, resample.

WAV, FLAC, Ogg Vorbis and MP3 are decoded by libsndfile (through soundfile);
any other container (M4A/AAC, Opus, WebM, ...) goes through ffmpeg when it is
installed.  Every decoder returns float32 mono at the engine's sample rate.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
import soundfile as sf
import soxr

from .errors import AudioTooLong, AudioTooShort, BadAudio, DecoderUnavailable

Source = Union[str, os.PathLike, bytes]

# libsndfile formats we trust it with; anything else goes to ffmpeg.
_SNDFILE_FORMATS = {"WAV", "WAVEX", "FLAC", "OGG", "MP3", "AIFF", "W64", "RF64", "CAF"}


@dataclass(frozen=True)
class DecodeLimits:
    max_duration_s: float = 3600.0
    min_duration_s: float = 0.5
    ffmpeg_timeout_s: float = 60.0


def decode_audio(source: Source, sample_rate: int, limits: DecodeLimits = DecodeLimits(),
                 prefer_ffmpeg: bool = False) -> np.ndarray:
    """Decode `source` (a path or the file's bytes) to mono float32 at `sample_rate`.

    With `prefer_ffmpeg`, files go through ffmpeg when it is installed: its
    Vorbis and MP3 decoders are about 1.7x faster than libsndfile's, which
    matters for offline builds of long files; for short queries the cost of
    starting a process outweighs it.

    Raises BadAudio for anything that is not usable audio, AudioTooLong /
    AudioTooShort for durations outside `limits`, DecoderUnavailable when the
    container needs ffmpeg and it is missing.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise BadAudio("empty input: no bytes were sent")
        data = bytes(source)
        y, sr = _decode_any(lambda: io.BytesIO(data), data, limits)
    else:
        path = Path(source)
        if not path.is_file():
            raise BadAudio(f"no such file: {path}")
        if path.stat().st_size == 0:
            raise BadAudio(f"empty file: {path}")
        native = _native_format(path) if prefer_ffmpeg and ffmpeg_path() else None
        if native is not None:
            y, sr = _decode_ffmpeg(path, limits, *native)
        else:
            y, sr = _decode_any(lambda: open(path, "rb"), path, limits)
    return _finish(y, sr, sample_rate, limits)


def _decode_any(opener, raw, limits: DecodeLimits):
    try:
        with opener() as fh:
            return _decode_sndfile(fh, limits)
    except sf.LibsndfileError:
        pass
    except RuntimeError as exc:  # libsndfile decode errors mid-stream
        raise BadAudio(f"audio stream is damaged: {exc}") from None
    if not isinstance(raw, bytes):
        return _decode_ffmpeg(raw, limits, *(_probe_ffmpeg(raw) or (44100, None)))
    # Containers such as MP4 need a seekable input: give ffmpeg a file.
    with tempfile.NamedTemporaryFile(prefix="simsearch-", suffix=".bin") as tmp:
        tmp.write(raw)
        tmp.flush()
        path = Path(tmp.name)
        return _decode_ffmpeg(path, limits, *(_probe_ffmpeg(path) or (44100, None)))


def read_excerpt(path: str | os.PathLike, start_s: float, duration_s: float,
                 timeout_s: float = 60.0) -> tuple[np.ndarray, int]:
    """Samples of the file at `path` from `start_s` for at most `duration_s`
    seconds, for listening: [n, channels] float32 at the file's own rate, with
    one or two channels (more are mixed down to mono).

    Raises BadAudio when the file cannot be read, DecoderUnavailable when its
    container needs ffmpeg and ffmpeg is not installed.
    """
    path = Path(path)
    try:
        with sf.SoundFile(path) as f:
            if f.format in _SNDFILE_FORMATS and f.samplerate > 0 and f.channels > 0:
                sr = f.samplerate
                f.seek(min(int(start_s * sr), f.frames))
                y = f.read(int(duration_s * sr), dtype="float32", always_2d=True)
                return _listening_channels(y), sr
    except sf.LibsndfileError:
        pass  # not a libsndfile format: ffmpeg's turn
    except RuntimeError as exc:
        raise BadAudio(f"audio stream is damaged: {exc}") from None
    sr, channels = _probe_ffmpeg(path) or (44100, 2)
    channels = channels if channels <= 2 else 1
    y = _ffmpeg_samples(path, ["-ss", f"{start_s:.6f}", "-t", f"{duration_s:.6f}"],
                        ["-ac", str(channels), "-ar", str(sr)], timeout_s, allow_empty=True)
    return y[: len(y) // channels * channels].reshape(-1, channels), sr


def wav_bytes(y: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM WAV of `y` ([n] or [n, channels] floats in -1..1): every browser plays it."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(y, -1.0, 1.0), sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _listening_channels(y: np.ndarray) -> np.ndarray:
    return y if y.shape[1] <= 2 else _mix(y)[:, None]


def _probe_ffmpeg(path: Path) -> tuple[int, int] | None:
    """(sample rate, channels) of the first audio stream, by ffprobe."""
    exe = shutil.which("ffprobe")
    if exe is None or ffmpeg_path() is None:
        return None
    try:
        proc = subprocess.run([exe, "-v", "error", "-select_streams", "a:0", "-show_entries",
                               "stream=sample_rate,channels", "-of", "csv=p=0", "file:" + str(Path(path).resolve())],
                              capture_output=True, timeout=30)
        rate, channels = (int(x) for x in proc.stdout.decode().strip().split(",")[:2])
    except (subprocess.TimeoutExpired, ValueError):
        return None
    if 0 < rate <= 384000 and 0 < channels <= 64:
        return rate, channels
    return None


def _decode_sndfile(fh: BinaryIO, limits: DecodeLimits):
    with sf.SoundFile(fh) as f:
        if f.format not in _SNDFILE_FORMATS:
            raise sf.LibsndfileError(0, "format left to ffmpeg")
        sr = f.samplerate
        if sr <= 0 or f.channels <= 0:
            raise BadAudio("audio header gives no sample rate or no channels")
        if f.frames > 0 and f.frames / sr > limits.max_duration_s:
            raise AudioTooLong(f"audio lasts {f.frames / sr:.0f} s, over the limit of {limits.max_duration_s:.0f} s")
        if 0 < f.frames <= int(limits.max_duration_s * sr):
            y = f.read(dtype="float32", always_2d=True)
            return _mix(y), sr
        # Length unknown: read in blocks so that a header lying about its
        # length cannot make us allocate more than the duration limit allows.
        max_frames = int(limits.max_duration_s * sr) + 1
        blocks, total = [], 0
        for block in f.blocks(blocksize=1 << 18, dtype="float32", always_2d=True):
            blocks.append(_mix(block))
            total += len(block)
            if total > max_frames:
                raise AudioTooLong(f"audio lasts over the limit of {limits.max_duration_s:.0f} s")
    y = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    return y, sr


def _mix(y: np.ndarray) -> np.ndarray:
    """Mix [n, channels] down to mono."""
    if y.shape[1] == 1:
        return np.ascontiguousarray(y[:, 0])
    # A column sum beats ndarray.mean(axis=1) on interleaved data by ~10x.
    out = y[:, 0].copy()
    for c in range(1, y.shape[1]):
        out += y[:, c]
    out *= np.float32(1.0 / y.shape[1])
    return out


def ffmpeg_path() -> str | None:
    return shutil.which("ffmpeg")


def _native_format(path: Path) -> tuple[int, int] | None:
    """The file's sample rate and channels from its header, when libsndfile can read it."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError):
        return None
    if 0 < info.samplerate <= 384000 and 0 < info.channels <= 64:
        return info.samplerate, info.channels
    return None


def _decode_ffmpeg(raw: Path, limits: DecodeLimits, sr: int = 44100, channels: int | None = None):
    """Decode with ffmpeg at rate `sr`, mixed down to mono; with `channels`
    known, as the plain mean of the channels, exactly as on libsndfile's path."""
    # Mix down inside ffmpeg (4x less to pipe for stereo), as the plain mean
    # of the channels that libsndfile's path takes; ffmpeg's own -ac 1 is 3 dB louder.
    if channels and channels > 1:
        mix = ["-af", "pan=mono|c0=" + "+".join(f"{1.0 / channels:.6f}*c{i}" for i in range(channels))]
    else:
        mix = ["-ac", "1"]
    y = _ffmpeg_samples(raw, [], [*mix, "-ar", str(sr), "-t", str(limits.max_duration_s + 1)],
                        limits.ffmpeg_timeout_s)
    if len(y) > limits.max_duration_s * sr:
        raise AudioTooLong(f"audio lasts over the limit of {limits.max_duration_s:.0f} s")
    return y, sr


def _ffmpeg_samples(path: Path, input_args: list[str], output_args: list[str], timeout_s: float,
                    allow_empty: bool = False) -> np.ndarray:
    """float32 samples (interleaved) of the first audio stream of `path`, decoded by ffmpeg."""
    exe = ffmpeg_path()
    if exe is None:
        raise DecoderUnavailable(
            "not WAV, FLAC, Ogg Vorbis or MP3, and ffmpeg (needed for other containers) is not installed"
        )
    # "file:" keeps a name with a colon from being read as a protocol.
    src = "file:" + str(Path(path).resolve())
    cmd = [exe, "-nostdin", "-v", "error", *input_args, "-i", src, "-map", "0:a:0", "-vn", *output_args,
           "-f", "f32le", "pipe:1"]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise BadAudio(f"decoding took longer than {timeout_s:.0f} s") from None
    if proc.returncode != 0 or not (proc.stdout or allow_empty):
        lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        if any("matches no streams" in line for line in lines):
            why = " (it has no audio stream)"  # ffmpeg read it as some other format, text even
        else:  # ffmpeg's last word, without our temporary file's name
            why = f" ({lines[-1].replace(src + ': ', '')[:200]})" if lines else ""
        raise BadAudio("not a decodable audio file" + why)
    return np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32)


def _finish(y: np.ndarray, sr: int, sample_rate: int, limits: DecodeLimits) -> np.ndarray:
    if not np.all(np.isfinite(y)):
        raise BadAudio("audio contains NaN or infinite samples")
    duration = len(y) / sr
    if duration < limits.min_duration_s:
        raise AudioTooShort(f"audio lasts {duration:.3f} s, under the minimum of {limits.min_duration_s} s")
    if sr != sample_rate:
        y = soxr.resample(y, sr, sample_rate, quality="MQ")
    return np.ascontiguousarray(y, dtype=np.float32)
