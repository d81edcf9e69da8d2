"""Property tests of the decoder on hostile bytes: arbitrary bytes, and real
files truncated, bit-flipped, with header fields overwritten and headers
spliced onto other formats' bodies.

The property: decode_audio returns finite float32 mono audio at the
requested rate, of a duration within the limits, or raises a
SimsearchError.  Never another exception, and never slowly.
"""

from __future__ import annotations

import functools
import struct
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audio_tools import audio_bytes, excerpt, load_clip, resample
from simsearch.audio import DecodeLimits, decode_audio
from simsearch.errors import SimsearchError

LIMITS = DecodeLimits()
RATES = (8000, 11025, 22050)
SEED_SR = 16000
SEED_FORMATS = ("wav", "wav-float", "flac", "ogg", "mp3")
# Derandomised, no database: the same examples on every run and machine.  The
# deadline is the decode bound of this test: a valid second of audio decodes
# in milliseconds, ffmpeg's fallback in about 0.15 s; slower is a stall.
FUZZ = settings(max_examples=80, deadline=timedelta(seconds=5), derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
# Arbitrary bytes nearly always end in ffmpeg (a process or two per example): fewer.
FUZZ_FFMPEG = settings(FUZZ, max_examples=30)

# Magic numbers of the containers the decoder knows, and of some it does not.
MAGIC = (b"RIFF", b"RIFX", b"RF64", b"FORM", b"fLaC", b"OggS", b"ID3\x03\x00\x00", b"\xff\xfb\x90\x64",
         b"\x1a\x45\xdf\xa3", b"\x00\x00\x00\x18ftypmp42", b".snd", b"caff", b"wvpk", b"\x89PNG\r\n\x1a\n")
# Values a lying 16- or 32-bit header field may carry.
ABSURD = (0, 1, 2, 3, 7, 255, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 384001, 1 << 30)


@functools.lru_cache(maxsize=None)
def seed_files() -> dict[str, bytes]:
    """About a second of real music in each format libsndfile decodes."""
    y, sr = load_clip("flare_cave_theme")
    y = resample(excerpt(y, sr, 3.0, 1.2), sr, SEED_SR)
    files = {fmt: audio_bytes(y, SEED_SR, fmt) for fmt in SEED_FORMATS}
    files["wav-stereo"] = audio_bytes(y, SEED_SR, "wav", channels=2)
    return files


def assert_decodes_or_refuses(data: bytes, sample_rate: int) -> np.ndarray | None:
    """The property; returns the audio, or None when refused."""
    try:
        y = decode_audio(data, sample_rate)
    except SimsearchError as exc:
        assert 400 <= exc.status < 500 and str(exc), repr(exc)
        return None
    assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.ndim == 1
    assert np.all(np.isfinite(y))
    # Within the duration limits (resampling rounds the length by a sample or so).
    assert LIMITS.min_duration_s * sample_rate - 2 <= len(y) <= (LIMITS.max_duration_s + 1) * sample_rate
    return y


def test_every_seed_decodes_at_each_rate():
    """The unmutated seeds satisfy the property by decoding: the mutations
    below start from audio, not from already refused input."""
    for fmt, data in seed_files().items():
        for rate in RATES:
            y = assert_decodes_or_refuses(data, rate)
            assert y is not None, fmt
            assert len(y) == pytest.approx(1.2 * rate, abs=0.06 * rate), fmt  # MP3 pads a little


@FUZZ_FFMPEG
@given(data=st.binary(max_size=4096), rate=st.sampled_from(RATES))
def test_arbitrary_bytes(data, rate):
    assert_decodes_or_refuses(data, rate)


@FUZZ_FFMPEG
@given(magic=st.sampled_from(MAGIC), rest=st.binary(max_size=2048), rate=st.sampled_from(RATES))
def test_arbitrary_bytes_behind_a_magic_number(magic, rest, rate):
    assert_decodes_or_refuses(magic + rest, rate)


@st.composite
def mutated_files(draw) -> bytes:
    files = seed_files()
    data = bytearray(files[draw(st.sampled_from(sorted(files)))])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["truncate", "flip", "field", "splice", "insert", "repeat"]))
        if not data:
            break
        # Headers are where parsers trust numbers: mutate there more often.
        where = draw(st.integers(0, min(len(data) - 1, 63)) | st.integers(0, len(data) - 1))
        if op == "truncate":
            del data[where:]
        elif op == "flip":
            data[where] ^= draw(st.integers(1, 255))
        elif op == "field":  # a 16- or 32-bit little- or big-endian field made absurd
            fmt = draw(st.sampled_from(["<H", ">H", "<I", ">I"]))
            value = draw(st.sampled_from(ABSURD)) & (0xFFFF if fmt.endswith("H") else 0xFFFFFFFF)
            if where + struct.calcsize(fmt) <= len(data):
                struct.pack_into(fmt, data, where, value)
        elif op == "splice":  # another format's header on this body
            other = files[draw(st.sampled_from(sorted(files)))]
            cut = draw(st.integers(1, min(len(other), 256)))
            data[:cut] = other[:cut]
        elif op == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=64))
        else:  # a chunk repeated, as a stream cut and resumed
            size = draw(st.integers(1, 512))
            data[where:where] = data[where : where + size] * draw(st.integers(1, 8))
    return bytes(data)


@FUZZ
@given(data=mutated_files(), rate=st.sampled_from(RATES))
def test_mutated_real_files(data, rate):
    assert_decodes_or_refuses(data, rate)


def _wav_fields(data: bytes) -> dict[str, tuple[int, str]]:
    """Offset and struct format of each size field of a RIFF/WAVE header."""
    fmt, dat = data.index(b"fmt "), data.index(b"data")
    return {"riff_size": (4, "<I"), "channels": (fmt + 10, "<H"), "rate": (fmt + 12, "<I"),
            "block_align": (fmt + 20, "<H"), "bits": (fmt + 22, "<H"), "data_size": (dat + 4, "<I")}


@pytest.mark.parametrize("fmt", ["wav", "wav-stereo", "wav-float"])
@pytest.mark.parametrize("field, value", [("riff_size", 0xFFFFFFFF), ("data_size", 0xFFFFFFFF),
                                          ("data_size", 0x7FFFFFFF), ("channels", 0), ("channels", 0xFFFF),
                                          ("rate", 0), ("rate", 1), ("rate", 0xFFFFFFFF), ("block_align", 0),
                                          ("bits", 0), ("bits", 0xFFFF)])
def test_wav_header_fields_claiming_absurd_sizes(fmt, field, value):
    """Each field of a real WAV header made a lie in turn (4 GB of data, no
    channels, a rate of 1 Hz, ...)."""
    data = bytearray(seed_files()[fmt])
    offset, code = _wav_fields(data)[field]
    struct.pack_into(code, data, offset, value)
    assert_decodes_or_refuses(bytes(data), 8000)


@pytest.mark.parametrize("rate", [8000, 22050])
def test_huge_finite_float_samples_decode_finite_or_are_refused(rate):
    """Found by the fuzzing: a float WAV is allowed any finite sample value."""
    y = np.zeros(SEED_SR, np.float32)
    y[5000:5100] = 1e37
    assert_decodes_or_refuses(audio_bytes(y, SEED_SR, "wav-float"), rate)
