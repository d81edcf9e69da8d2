"""The bad-input list of issue 5 that tests/test_api.py leaves out, on a real
server: each answer is its exact 4xx with a JSON error (or, for valid but odd
audio, a 200 without spurious matches), and the server answers /v1/health
afterwards.

Covered in test_api.py already: empty query body, a header-only Ogg, random
bytes named .mp3, text, PNG, a 20 ms clip, NaN samples, uploads over the
byte limit, control characters and over 256 bytes in track ids, a taken id,
unknown fields.
"""

from __future__ import annotations

import json
import shutil
import socket
import struct
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote, urlparse

import numpy as np
import pytest

from audio_tools import CATALOG, audio_bytes, excerpt, ffmpeg, load_clip, resample, tone, write_audio
from server_tools import assert_error, running_server

pytestmark = pytest.mark.slow

MAX_UPLOAD_MB = 4
MAX_DURATION_S = 20
TRACK = CATALOG[1]  # flare_cave_theme


@pytest.fixture(scope="module")
def server(catalog_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("bad-input")
    shutil.copytree(catalog_dir, work / "index")
    with running_server(work / "index", work / "server.log", "--max-upload-mb", MAX_UPLOAD_MB,
                        "--max-duration-s", MAX_DURATION_S) as srv:
        yield srv


def _clip(sr: int, offset: float = 4.0, duration: float = 6.0, name: str = TRACK) -> np.ndarray:
    y, clip_sr = load_clip(name)
    return resample(excerpt(y, clip_sr, offset, duration), clip_sr, sr)


def _matches(server, resp) -> list[str]:
    """Track ids of a 200 answer, after checking the server still answers."""
    assert resp.status_code == 200, f"{resp.status_code}: {resp.text[:300]}"
    assert server.get("/v1/health").status_code == 200
    return [m["track_id"] for m in resp.json()["matches"]]


# -- not audio, or not all of it ----------------------------------------------

def test_empty_upload_to_add_a_track(server):
    resp = server.post("/v1/tracks", files={"file": ("empty.flac", b"")}, data={"track_id": "bad/empty"})
    assert_error(server, resp, 400, "empty_input")
    resp = server.post("/v1/tracks", params={"track_id": "bad/empty"}, data=b"",
                       headers={"Content-Type": "application/octet-stream"})
    assert_error(server, resp, 400, "empty_input")


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "mp3"])
def test_file_cut_inside_its_header(server, fmt):
    data = audio_bytes(_clip(22050), 22050, fmt)[:30]
    assert_error(server, server.post("/v1/query", files={"file": (f"cut.{fmt}", data)}), 415, "bad_audio")


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "mp3"])
def test_file_cut_halfway_is_the_audio_before_the_cut(server, fmt):
    """A download cut short is still audio: its first half matches."""
    data = audio_bytes(_clip(22050), 22050, fmt)
    resp = server.post("/v1/query", files={"file": (f"cut.{fmt}", data[: len(data) // 2])})
    assert _matches(server, resp)[:1] == [TRACK]


@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_container_without_an_audio_stream(server, tmp_path, container):
    path = tmp_path / f"video.{container}"
    subprocess.run([ffmpeg(), "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc=duration=3:size=64x48:rate=10",
                    "-c:v", "mpeg4", str(path)], check=True, capture_output=True)
    resp = server.post("/v1/query", files={"file": (path.name, path.read_bytes())})
    assert_error(server, resp, 415, "bad_audio")


def test_json_sent_as_audio(server):
    resp = server.post("/v1/query", json={"audio": "please"})
    assert_error(server, resp, 415, "bad_audio")


# -- valid audio in every shape -----------------------------------------------

@pytest.mark.parametrize("sr", [8000, 11025, 16000, 22050, 32000, 44100, 48000, 96000, 192000])
def test_sample_rates_from_8_to_192_khz(server, sr):
    resp = server.post("/v1/query", files={"file": ("x.flac", audio_bytes(_clip(sr), sr, "flac"))})
    assert _matches(server, resp)[:1] == [TRACK]


@pytest.mark.parametrize("channels", range(1, 9))
def test_one_to_eight_channels(server, channels):
    data = audio_bytes(_clip(22050), 22050, "flac", channels=channels)
    assert _matches(server, server.post("/v1/query", files={"file": ("x.flac", data)}))[:1] == [TRACK]


def _signal(kind: str, sr: int = 22050, seconds: float = 6.0) -> np.ndarray:
    n = int(sr * seconds)
    rng = np.random.default_rng(0)
    if kind == "silence":
        return np.zeros(n, np.float32)
    if kind == "dc":
        return np.full(n, 0.5, np.float32)
    if kind == "full-scale-dc":
        return np.full(n, 1.0, np.float32)
    if kind == "clipped-noise":
        return np.clip(rng.standard_normal(n) * 4.0, -1.0, 1.0).astype(np.float32)
    if kind == "square-wave":
        return np.sign(tone(110.0, seconds, sr)).astype(np.float32)
    if kind == "clipped-silence":  # a recording stuck at full scale, dropping out now and then
        y = np.ones(n, np.float32)
        y[:: sr // 3] = -1.0
        return y
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["silence", "dc", "full-scale-dc", "clipped-noise", "square-wave", "clipped-silence"])
@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_signals_without_music_match_nothing(server, kind, fmt):
    """Silence, DC and clipping are valid audio with nothing to match: a 200
    with no matches (not an error: the upload is fine, there is no copy in it)."""
    data = audio_bytes(_signal(kind), 22050, fmt)
    assert _matches(server, server.post("/v1/query", files={"file": (f"x.{fmt}", data)})) == []


def test_clipped_copy_of_a_track_still_matches_it(server):
    """Hard clipping (x8 gain) is a derivative, not noise: it still points at its source."""
    y = np.clip(_clip(22050) * 8.0, -1.0, 1.0)
    assert _matches(server, server.post("/v1/query", data=audio_bytes(y, 22050, "flac")))[:1] == [TRACK]


def test_silence_can_be_added_and_matches_nothing_afterwards(server):
    """A silent upload is a valid track (nothing to fingerprint, nothing lost):
    afterwards silence still matches nothing, the track included."""
    data = audio_bytes(_signal("silence"), 22050, "flac")
    resp = server.post("/v1/tracks", files={"file": ("s.flac", data)}, data={"track_id": "odd/silence"})
    assert resp.status_code == 201, resp.text[:300]
    assert resp.json()["track"]["n_triplets"] == 0
    assert _matches(server, server.post("/v1/query", data=data)) == []
    assert server.delete("/v1/tracks/odd%2Fsilence").status_code == 200


# -- samples that are not numbers ---------------------------------------------

@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_infinite_samples_in_a_float_wav(server, value):
    y = _clip(22050)
    y[5000:5010] = value
    resp = server.post("/v1/query", files={"file": ("inf.wav", audio_bytes(y, 22050, "wav-float"))})
    assert_error(server, resp, 415, "bad_audio")


def test_huge_finite_samples_in_a_float_wav(server):
    """Float WAV allows any finite value; past full scale by 1e37 the audio is
    no more usable than NaN: a 415, or at least no match."""
    y = _clip(22050)
    y[5000:5100] = 1e37
    resp = server.post("/v1/query", files={"file": ("huge.wav", audio_bytes(y, 22050, "wav-float"))})
    assert_error(server, resp, 415, "bad_audio")


# -- lengths and sizes --------------------------------------------------------

def test_recording_over_the_duration_limit(server):
    y = np.tile(_clip(8000, duration=5.0), MAX_DURATION_S // 5 + 1)  # 25 s at 8 kHz: a small upload
    resp = server.post("/v1/query", files={"file": ("long.flac", audio_bytes(y, 8000, "flac"))})
    assert_error(server, resp, 413, "audio_too_long")
    resp = server.post("/v1/tracks", files={"file": ("long.flac", audio_bytes(y, 8000, "flac"))},
                       data={"track_id": "bad/long"})
    assert_error(server, resp, 413, "audio_too_long")


def _wav_with(field: str, value: int) -> bytes:
    data = bytearray(audio_bytes(_clip(22050), 22050, "wav"))
    offset = {"riff_size": 4, "rate": 24, "data_size": 40}[field]
    assert data[36:40] == b"data"  # the canonical 44-byte header
    struct.pack_into("<I", data, offset, value)
    return bytes(data)


@pytest.mark.parametrize("field", ["riff_size", "data_size"])
def test_wav_header_claiming_gigabytes(server, field):
    """The sizes lie; the audio after them is real: its match, quickly."""
    t0 = time.monotonic()
    resp = server.post("/v1/query", files={"file": ("big.wav", _wav_with(field, 0xFFFFFFF0))})
    assert _matches(server, resp)[:1] == [TRACK]
    assert time.monotonic() - t0 < 10


def test_wav_header_claiming_hours(server):
    """6 s of samples at a claimed 10 Hz make 3.6 hours."""
    assert_error(server, server.post("/v1/query", data=_wav_with("rate", 10)), 413, "audio_too_long")


def _raw_request(server, head: str, body: bytes = b"", timeout: float = 20.0) -> tuple[int, dict, bytes]:
    """Send a hand-made request; (status, headers, body) of the answer."""
    url = urlparse(server.url)
    with socket.create_connection((url.hostname, url.port), timeout=timeout) as s:
        s.sendall(head.encode("latin-1") + b"\r\n" + body)
        raw = b""
        while b"\r\n\r\n" not in raw:
            chunk = s.recv(65536)
            if not chunk:
                break
            raw += chunk
        head_part, _, rest = raw.partition(b"\r\n\r\n")
        lines = head_part.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        want = int(headers.get("content-length", "0"))
        while len(rest) < want:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
    return int(lines[0].split()[1]), headers, rest


@pytest.mark.parametrize("length", [MAX_UPLOAD_MB * 1024 * 1024 + 1, 20 * MAX_UPLOAD_MB * 1024 * 1024, 10**12],
                         ids=["just-over", "20x-over", "a-terabyte"])
def test_content_length_far_over_the_limit(server, length):
    """The header alone says too much: a JSON 413 at once, before any body."""
    host = urlparse(server.url).netloc
    status, headers, body = _raw_request(
        server, f"POST /v1/query HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Length: {length}\r\nConnection: close\r\n", b"RIFF", timeout=5.0)
    assert status == 413, body[:300]
    assert headers.get("content-type", "").startswith("application/json"), body[:300]
    assert json.loads(body)["error"] == "too_large"
    assert server.get("/v1/health").status_code == 200


# -- track ids ----------------------------------------------------------------

@pytest.mark.parametrize("track_id", ["..", "../x", "a/../b", "./a", "a/./b", "a\\b", "..\\..\\x", "a\x00b", " lead",
                                      "trail ", "a//b/.."])
def test_track_ids_with_path_tricks(server, track_id):
    resp = server.post("/v1/tracks", files={"file": ("m.flac", audio_bytes(_clip(22050, duration=3.0), 22050))},
                       data={"track_id": track_id})
    assert_error(server, resp, 400, "bad_parameter")


@pytest.mark.parametrize("path", ["..%2F..%2Fetc%2Fpasswd", "%2E%2E/%2E%2E/etc/passwd", "..%5C..%5Cwin.ini",
                                  "CURRENT", "%00"])
@pytest.mark.parametrize("method", ["get", "delete"])
def test_track_urls_never_reach_files(server, path, method):
    """Ids are names in the catalog, never paths on disk."""
    assert_error(server, getattr(server, method)("/v1/tracks/" + path), 404, "unknown_track")


def test_track_id_in_the_query_string_too_long(server):
    resp = server.post("/v1/tracks", params={"track_id": "y" * 300}, data=audio_bytes(_clip(22050, duration=3.0), 22050),
                       headers={"Content-Type": "application/octet-stream"})
    assert_error(server, resp, 400, "bad_parameter")


def test_id_taken_by_a_track_added_over_http(server):
    data = audio_bytes(_clip(22050, name=CATALOG[0], duration=3.0), 22050)
    first = server.post("/v1/tracks", files={"file": ("a.flac", data)}, data={"track_id": "dup/one"})
    assert first.status_code == 201, first.text[:300]
    again = server.post("/v1/tracks", files={"file": ("b.flac", data)}, data={"track_id": "dup/one"})
    assert_error(server, again, 409, "track_exists")
    assert server.delete("/v1/tracks/" + quote("dup/one", safe="")).status_code == 200


# -- decode slots and the decode time bound -------------------------------------

def test_decode_slots_and_the_decode_time_bound(catalog_dir, tmp_path):
    """--max-decodes 1 with no patience: uploads beyond the one being decoded get
    503 busy (Retry-After) while the others are answered right; --decode-timeout-s
    bounds a decode with 422 decode_timeout; the server answers afterwards."""
    shutil.copytree(catalog_dir, tmp_path / "index")
    y, sr = load_clip(TRACK)
    # M4A goes through ffmpeg (a process start and a decode): a slot stays taken a while.
    m4a = tmp_path / "long.m4a"
    write_audio(m4a, np.tile(y, 3), sr, "m4a")
    upload = m4a.read_bytes()
    with running_server(tmp_path / "index", tmp_path / "a.log", "--max-decodes", 1, "--decode-wait-s", 0.001,
                        "--threads", 8) as srv:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: srv.post("/v1/query", data=upload), range(8)))
        busy = [r for r in answers if r.status_code == 503]
        assert busy, [r.status_code for r in answers]
        for r in busy:
            assert r.json()["error"] == "busy" and r.headers["Retry-After"] == "1"
        for r in answers:
            if r.status_code != 503:
                assert r.status_code == 200 and r.json()["matches"][0]["track_id"] == TRACK, r.text[:300]
        assert srv.post("/v1/query", data=upload).status_code == 200
    with running_server(tmp_path / "index", tmp_path / "b.log", "--decode-timeout-s", 0.001) as srv:
        assert_error(srv, srv.post("/v1/query", data=upload), 422, "decode_timeout")
        assert_error(srv, srv.post("/v1/query", data=audio_bytes(_clip(22050), 22050)), 422, "decode_timeout")
