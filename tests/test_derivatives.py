"""Derivatives of real music: speed, pitch and tempo changes, reverb, mixes,
voice-over and samples.  Each is matched to its source with the right kind
and the estimated factors."""

from __future__ import annotations

import shutil
import subprocess

import librosa
import numpy as np
import pytest
import soxr

from audio_tools import CATALOG, OUTSIDE, excerpt, load_clip, sample_in_host
from simsearch.config import MatchConfig

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("sox") is None, reason="sox is installed by ./dev")]

SR = 8000  # the engine's rate; derivatives are made at the clips' own rate first
OFFSET, LENGTH = 6.0, 10.0


def _speed(y: np.ndarray, sr: int, factor: float) -> np.ndarray:
    """Play `factor` times faster by resampling (pitch moves with tempo)."""
    return soxr.resample(y, sr * factor, sr).astype(np.float32)


def _sox(y: np.ndarray, sr: int, *effect: str) -> np.ndarray:
    """Run a sox effect chain over y (sox is installed by ./dev)."""
    raw = subprocess.run(["sox", "-V1", "-t", "f32", "-r", str(sr), "-c", "1", "-", "-t", "f32", "-", *effect],
                         input=(0.5 * y).astype("<f4").tobytes(), capture_output=True, check=True).stdout
    return (2.0 * np.frombuffer(raw, "<f4")).astype(np.float32)


def _reverb(y: np.ndarray, sr: int) -> np.ndarray:
    """sox's reverb (Freeverb): 50% reverberance, 50% damping, a 100% room."""
    return _sox(y, sr, "reverb", "50", "50", "100")[: len(y)]


def _mix(a: np.ndarray, b: np.ndarray, gain_db: float) -> np.ndarray:
    """a plus b at `gain_db` relative to a's power."""
    b = b[: len(a)]
    g = np.sqrt(np.mean(a**2) / max(np.mean(b**2), 1e-12)) * 10 ** (gain_db / 20)
    return (a + g * b).astype(np.float32)


def _query(engine, y: np.ndarray, sr: int):
    return engine.query_samples(soxr.resample(y, sr, SR).astype(np.float32) if sr != SR else y)


def _source(name: str, length: float = LENGTH, margin: float = 1.0):
    y, sr = load_clip(name)
    return excerpt(y, sr, OFFSET, length * margin), sr


def _check(res, track: str, kind: str, speed: float, pitch: float, ref_at_query_start: float):
    assert res.matches, "no match"
    m = res.matches[0]
    assert m.track_id == track, res.matches
    assert m.kind == kind, m
    assert m.speed == pytest.approx(speed, rel=0.01), m
    assert m.pitch_semitones == pytest.approx(pitch, abs=0.25), m
    # Where the reference is at the query's start (extrapolated along the line).
    at_zero = m.ref_start - m.speed * m.query_start
    assert at_zero == pytest.approx(ref_at_query_start, abs=0.5), m


@pytest.mark.parametrize("name", CATALOG)
@pytest.mark.parametrize("factor", [1.25, 0.9])
def test_speed_change_by_resampling(engine, name, factor):
    y, sr = _source(name, margin=1.3)
    q = _speed(y, sr, factor)[: int(LENGTH * sr)]
    _check(_query(engine, q, sr), name, "modified", factor, 12 * np.log2(factor), OFFSET)


@pytest.mark.parametrize("name", CATALOG[:2])
def test_slowed_with_reverb(engine, name):
    y, sr = _source(name)
    q = _reverb(_speed(y, sr, 0.85), sr)[: int(LENGTH * sr)]
    _check(_query(engine, q, sr), name, "modified", 0.85, 12 * np.log2(0.85), OFFSET)


@pytest.mark.parametrize("name", CATALOG[:2])
@pytest.mark.parametrize("steps", [2.0, -3.0])
def test_pitch_shift_keeps_tempo(engine, name, steps):
    y, sr = _source(name)
    q = _sox(y, sr, "pitch", str(int(steps * 100)))
    _check(_query(engine, q, sr), name, "modified", 1.0, steps, OFFSET)


@pytest.mark.parametrize("name", CATALOG[:2])
@pytest.mark.parametrize("rate", [1.08, 0.9])
def test_tempo_change_keeps_pitch(engine, name, rate):
    y, sr = _source(name, margin=1.2)
    q = _sox(y, sr, "tempo", str(rate))[: int(LENGTH * sr)]
    _check(_query(engine, q, sr), name, "modified", rate, 0.0, OFFSET)


@pytest.mark.parametrize("name", CATALOG[:2])
def test_mixed_with_another_track(engine, name):
    y, sr = _source(name)
    other, osr = load_clip(OUTSIDE[0])
    q = _mix(y, excerpt(other, osr, 2.0, LENGTH), -6.0)
    # The whole query aligns at speed 1 and pitch 0: by definition a duplicate
    # (the mix itself is not reported as a kind).
    _check(_query(engine, q, sr), name, "duplicate", 1.0, 0.0, OFFSET)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is installed by ./dev")
def test_voice_over(engine, tmp_path):
    name = CATALOG[2]
    y, sr = _source(name)
    wav = tmp_path / "speech.wav"
    text = ("This is the morning news. Prices rose again in the markets today while the weather "
            "stays cold and wet across the north. More after the music.")
    subprocess.run(["espeak-ng", "-s", "150", "-w", str(wav), text], check=True)
    speech, ssr = librosa.load(wav, sr=sr)
    speech = np.tile(speech, int(np.ceil(len(y) / len(speech))))
    # Speech 6 dB under the music.  (With speech as loud as the music most
    # clips are lost: the speech takes the strongest peaks; a known weakness.)
    q = _mix(y, speech, -6.0)
    _check(_query(engine, q, sr), name, "duplicate", 1.0, 0.0, OFFSET)


# flare_cave_theme is a drone with a smooth spectrum; the host (boss theme) is
# rich in sharp partials.  Peaks are chosen by spectral contrast, so the host's
# partials take the quota although the host lies 10 dB under the segment: a
# measured limit of contrast ranking (README, Known limits), kept here so that
# a fix shows (strict: an unexpected pass fails).
_DRONE_UNDER_PARTIALS = pytest.mark.xfail(strict=True, reason="contrast ranking: a smooth drone loses its "
                                          "peaks to a quieter host rich in partials")


@pytest.mark.parametrize("name", [pytest.param(CATALOG[1], marks=_DRONE_UNDER_PARTIALS), CATALOG[2]])
def test_sample_inside_other_music_is_partial_and_located(engine, name):
    at = 9.0
    host, sr = sample_in_host(name, OFFSET, 8.0, OUTSIDE[1], at)  # in 25 s of other music
    res = _query(engine, host, sr)
    m = res.matches[0]
    assert m.track_id == name and m.kind == "partial", res.matches
    assert m.query_start == pytest.approx(at, abs=1.0) and m.query_end == pytest.approx(at + 8.0, abs=1.0)
    assert m.ref_start == pytest.approx(OFFSET, abs=1.0)
    assert m.speed == pytest.approx(1.0, rel=0.01) and m.pitch_semitones == pytest.approx(0.0, abs=0.25)


def test_sample_whose_first_seconds_are_under_louder_music_is_located_from_its_start(engine):
    """The host (boss theme) is loud where the sample (forest theme from 14 s)
    begins: its first 5 s make no triplet of the catalog's, so the hits
    alone start the match 5.3 s late.  The forest theme's own peaks are
    there, and locating the match finds them."""
    name = CATALOG[2]
    offset, at, length = 14.0, 9.0, 8.0
    host, sr = sample_in_host(name, offset, length, OUTSIDE[1], at)
    m = _query(engine, host, sr).matches[0]
    assert m.track_id == name and m.kind == "partial", m
    assert m.query_start == pytest.approx(at, abs=1.0), m
    assert m.query_end == pytest.approx(at + length, abs=1.0), m
    assert m.ref_start == pytest.approx(offset, abs=1.0), m
    assert m.speed == pytest.approx(1.0, rel=0.01) and m.pitch_semitones == pytest.approx(0.0, abs=0.25)


def test_plain_copy_is_a_duplicate_at_unit_speed(engine):
    name = CATALOG[3]
    y, sr = _source(name)
    _check(_query(engine, y, sr), name, "duplicate", 1.0, 0.0, OFFSET)


def test_narrow_search_range_does_not_find_a_nightcore_edit(engine):
    """The search range is a query-time setting: an engine told to look only
    near unit speed does not report a 25% speed-up."""
    y, sr = _source(CATALOG[0], margin=1.3)
    q = _speed(y, sr, 1.25)[: int(LENGTH * sr)]
    res = engine.query_samples(soxr.resample(q, sr, SR).astype(np.float32),
                               MatchConfig(min_speed=0.95, max_speed=1.05, max_pitch=1.0))
    assert all(m.track_id != CATALOG[0] for m in res.matches)
