"""The only module that reads media: decode, mix down to mono, resample.

WAV, FLAC, Ogg Vorbis and MP3 are decoded by libsndfile (through soundfile);
any other container (M4A/AAC, Opus, WebM, ...) goes through ffmpeg when it is
installed.  Every decoder returns float32 mono at the engine's sample rate.
"""

from __future__ import annotations

import io
import os
import resource
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
import soundfile as sf
import soxr

from .config import MAX_SAMPLE_MAGNITUDE
from .errors import AudioTooLong, AudioTooShort, BadAudio, DecoderUnavailable, DecodeTimeout

Source = Union[str, os.PathLike, bytes]

# libsndfile formats we trust it with; anything else goes to ffmpeg.
_SNDFILE_FORMATS = {"WAV", "WAVEX", "FLAC", "OGG", "MP3", "AIFF", "W64", "RF64", "CAF"}


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds on one decode, so that no file can stall or exhaust a worker.

    Decoding streams: blocks are mixed to mono and resampled to the engine's
    rate as they come, so memory grows with the output (4 bytes per sample at
    8 kHz: 115 MB for an hour) whatever the file's rate and channel count.
    """
    max_duration_s: float = 3600.0
    min_duration_s: float = 0.5
    # Wall-clock bound on one decode (both decoders).
    timeout_s: float = 60.0
    # Address-space bound on an ffmpeg process.
    ffmpeg_memory_mb: int = 2048


_BLOCK_FRAMES = 1 << 16
_MP3_WHOLE_READ_S = 600.0


def decode_audio(source: Source, sample_rate: int, limits: DecodeLimits = DecodeLimits(),
                 prefer_ffmpeg: bool = False) -> np.ndarray:
    """Decode `source` (a path or the file's bytes) to mono float32 at `sample_rate`.

    With `prefer_ffmpeg`, files go through ffmpeg when it is installed: with
    the mix-down and resampling inside it, it takes about 15% less CPU than
    libsndfile's path on Ogg Vorbis (455 against 395 times real time per CPU
    second, 12 corpus tracks), which matters for offline builds of long
    files; for short queries the 75 ms of CPU that starting ffmpeg costs
    outweighs it.

    Raises BadAudio for anything that is not usable audio, AudioTooLong /
    AudioTooShort for durations outside `limits`, DecodeTimeout past
    `limits.timeout_s`, DecoderUnavailable when the container needs ffmpeg and
    it is missing.
    """
    deadline = time.monotonic() + limits.timeout_s
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise BadAudio("empty input: no bytes were sent")
        data = bytes(source)
        return _decode_any(lambda: io.BytesIO(data), data, sample_rate, limits, deadline)
    path = Path(source)
    if not path.is_file():
        raise BadAudio(f"no such file: {path}")
    if path.stat().st_size == 0:
        raise BadAudio(f"empty file: {path}")
    native = _native_format(path) if prefer_ffmpeg and ffmpeg_path() else None
    if native is not None:
        return _decode_ffmpeg(path, sample_rate, limits, deadline, *native)
    return _decode_any(lambda: open(path, "rb"), path, sample_rate, limits, deadline)


def _decode_any(opener, raw, sample_rate: int, limits: DecodeLimits, deadline: float) -> np.ndarray:
    try:
        with opener() as fh:
            return _decode_sndfile(fh, sample_rate, limits, deadline)
    except sf.LibsndfileError:
        pass
    except RuntimeError as exc:  # libsndfile decode errors mid-stream
        raise BadAudio(f"audio stream is damaged: {exc}") from None
    if not isinstance(raw, bytes):
        return _decode_ffmpeg(raw, sample_rate, limits, deadline, *(_probe_ffmpeg(raw) or (44100, None)))
    # Containers such as MP4 need a seekable input: give ffmpeg a file.
    with tempfile.NamedTemporaryFile(prefix="simsearch-", suffix=".bin") as tmp:
        tmp.write(raw)
        tmp.flush()
        path = Path(tmp.name)
        return _decode_ffmpeg(path, sample_rate, limits, deadline, *(_probe_ffmpeg(path) or (44100, None)))


def read_excerpt(path: str | os.PathLike, start_s: float, duration_s: float,
                 limits: DecodeLimits = DecodeLimits()) -> tuple[np.ndarray, int]:
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
    parts: list[np.ndarray] = []
    _run_ffmpeg(path, ["-ss", f"{start_s:.6f}", "-t", f"{duration_s:.6f}"], ["-ac", str(channels), "-ar", str(sr)],
                parts.append, time.monotonic() + limits.timeout_s, limits, allow_empty=True)
    y = np.concatenate(parts) if parts else np.zeros(0, np.float32)
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


class _Collector:
    """Takes mono blocks at the source rate; checks them; resamples as they come."""

    def __init__(self, sr: int, sample_rate: int, limits: DecodeLimits, deadline: float):
        if not 0 < sr <= 384000:
            raise BadAudio(f"unusable sample rate: {sr} Hz")
        self.sr, self.limits, self.deadline = sr, limits, deadline
        self.max_frames = int(limits.max_duration_s * sr)
        self.frames = 0
        self.out: list[np.ndarray] = []
        self._stream = (soxr.ResampleStream(sr, sample_rate, 1, dtype="float32", quality="MQ")
                        if sr != sample_rate else None)

    def add(self, y: np.ndarray, last: bool = False) -> None:
        self.frames += len(y)
        if self.frames > self.max_frames:
            raise AudioTooLong(f"audio lasts over the limit of {self.limits.max_duration_s:.0f} s")
        if time.monotonic() > self.deadline:
            raise DecodeTimeout(f"decoding took longer than {self.limits.timeout_s:.0f} s")
        peak = float(np.max(np.abs(y))) if len(y) else 0.0  # NaN or inf when any sample is
        if not np.isfinite(peak):
            raise BadAudio("audio contains NaN or infinite samples")
        if peak > MAX_SAMPLE_MAGNITUDE:
            raise BadAudio(f"sample values reach {peak:.3g}, far outside audio's range "
                           f"(full scale is 1; at most {MAX_SAMPLE_MAGNITUDE:g} is accepted)")
        if self._stream is not None:
            y = self._stream.resample_chunk(y, last=last)
        if len(y):
            self.out.append(np.asarray(y, dtype=np.float32))

    def finish(self) -> np.ndarray:
        self.add(np.zeros(0, np.float32), last=True)
        duration = self.frames / self.sr
        if duration < self.limits.min_duration_s:
            raise AudioTooShort(f"audio lasts {duration:.3f} s, under the minimum of {self.limits.min_duration_s} s")
        return np.concatenate(self.out) if self.out else np.zeros(0, np.float32)


def _decode_sndfile(fh: BinaryIO, sample_rate: int, limits: DecodeLimits, deadline: float) -> np.ndarray:
    with sf.SoundFile(fh) as f:
        if f.format not in _SNDFILE_FORMATS:
            raise sf.LibsndfileError(0, "format left to ffmpeg")
        sr = f.samplerate
        if sr <= 0 or f.channels <= 0:
            raise BadAudio("audio header gives no sample rate or no channels")
        if f.frames > 0 and f.frames / sr > limits.max_duration_s:
            raise AudioTooLong(f"audio lasts {f.frames / sr:.0f} s, over the limit of {limits.max_duration_s:.0f} s")
        out = _Collector(sr, sample_rate, limits, deadline)
        if f.format == "MP3":
            # libsndfile 1.2.2 returns garbage after the first of several
            # reads of an MP3 stream: read it whole (its length is known and
            # within the limit), or let ffmpeg stream a long one.
            if f.frames <= 0 or (f.frames > _MP3_WHOLE_READ_S * sr and ffmpeg_path()):
                raise sf.LibsndfileError(0, "long MP3 left to ffmpeg")
            out.add(_mix(f.read(dtype="float32", always_2d=True)))
            return out.finish()
        # Blocks, whatever the header claims: a header lying about its length
        # cannot make us allocate more than the duration limit allows.
        for block in f.blocks(blocksize=_BLOCK_FRAMES, dtype="float32", always_2d=True):
            out.add(_mix(block))
    return out.finish()


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


def _decode_ffmpeg(raw: Path, sample_rate: int, limits: DecodeLimits, deadline: float,
                   sr: int = 44100, channels: int | None = None) -> np.ndarray:
    """Decode with ffmpeg, mixed down to mono; with `channels` known, as the
    plain mean of the channels, exactly as on libsndfile's path.  Resampled to
    `sample_rate` inside ffmpeg by the same soxr library and quality as the
    other path when ffmpeg has it (else here, from the file's rate `sr`)."""
    # Mix down and resample inside ffmpeg: 11x less to pipe for stereo at
    # 44.1 kHz, which was a third of the decoder's CPU time.  The mix is the
    # plain mean of the channels; ffmpeg's own -ac 1 is 3 dB louder.
    filters = []
    if channels and channels > 1:
        filters.append("pan=mono|c0=" + "+".join(f"{1.0 / channels:.6f}*c{i}" for i in range(channels)))
    rate = sr
    if _ffmpeg_has_soxr(ffmpeg_path()):
        filters.append(f"aresample={sample_rate}:resampler=soxr:precision={_SOXR_MQ_BITS}")
        rate = sample_rate
    args = ["-ac", "1", *(["-af", ",".join(filters)] if filters else []), "-ar", str(rate)]
    out = _Collector(rate, sample_rate, limits, deadline)
    _run_ffmpeg(raw, [], [*args, "-t", str(limits.max_duration_s + 1)], out.add, deadline, limits)
    return out.finish()


# soxr's "MQ" recipe, which the Python path asks for, is its 16-bit precision.
_SOXR_MQ_BITS = 16


@lru_cache(maxsize=4)
def _ffmpeg_has_soxr(exe: str | None) -> bool:
    """Whether this ffmpeg was built with libsoxr (Debian's is)."""
    if exe is None:
        return False
    try:
        proc = subprocess.run([exe, "-hide_banner", "-version"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return b"--enable-libsoxr" in proc.stdout


def _run_ffmpeg(path: Path, input_args: list[str], output_args: list[str], sink, deadline: float,
                limits: DecodeLimits, allow_empty: bool = False) -> int:
    """Stream the first audio stream of `path`, decoded by ffmpeg to float32
    (interleaved), into `sink` block by block; returns the number of samples.

    The process runs under an address-space and CPU-time limit and is killed
    past `deadline` or when `sink` raises (a duration limit, say)."""
    exe = ffmpeg_path()
    if exe is None:
        raise DecoderUnavailable(
            "not WAV, FLAC, Ogg Vorbis or MP3, and ffmpeg (needed for other containers) is not installed"
        )
    # "file:" keeps a name with a colon from being read as a protocol.
    src = "file:" + str(Path(path).resolve())
    cmd = [exe, "-nostdin", "-v", "error", "-threads", "1", *input_args, "-i", src, "-map", "0:a:0", "-vn",
           *output_args, "-f", "f32le", "pipe:1"]
    with tempfile.TemporaryFile() as err, subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                                           stderr=err) as proc:
        try:
            _limit_process(proc.pid, limits)
            n = _pump(proc, sink, deadline, limits)
            returncode = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            raise DecodeTimeout(f"decoding took longer than {limits.timeout_s:.0f} s") from None
        except BaseException:
            proc.kill()
            raise
        if returncode != 0 or not (n or allow_empty):
            err.seek(0)
            lines = err.read(1 << 16).decode("utf-8", "replace").strip().splitlines()
            if any("matches no streams" in line for line in lines):
                why = " (it has no audio stream)"  # ffmpeg read it as some other format, text even
            else:  # ffmpeg's last word, without our temporary file's name
                why = f" ({lines[-1].replace(src + ': ', '')[:200]})" if lines else ""
            raise BadAudio("not a decodable audio file" + why)
    return n


def _pump(proc: subprocess.Popen, sink, deadline: float, limits: DecodeLimits) -> int:
    """Feed ffmpeg's output to `sink` block by block, never waiting past `deadline`."""
    fd = proc.stdout.fileno()
    pending = b""
    block_bytes = 4 * _BLOCK_FRAMES
    total = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise DecodeTimeout(f"decoding took longer than {limits.timeout_s:.0f} s")
        chunk = os.read(fd, block_bytes)
        final = not chunk
        pending += chunk
        usable = len(pending) - len(pending) % 4
        if usable and (final or usable >= block_bytes):
            sink(np.frombuffer(pending[:usable], dtype="<f4").astype(np.float32))
            total += usable // 4
            pending = pending[usable:]
        if final:
            return total


def _limit_process(pid: int, limits: DecodeLimits) -> None:
    """Bound the decoder's address space and CPU time (Linux; best effort elsewhere)."""
    try:
        mem = limits.ffmpeg_memory_mb * 1024 * 1024
        resource.prlimit(pid, resource.RLIMIT_AS, (mem, mem))
        cpu = int(limits.timeout_s) + 1
        resource.prlimit(pid, resource.RLIMIT_CPU, (cpu, cpu))
    except (AttributeError, OSError, ValueError):  # no prlimit, or the process already ended
        pass
