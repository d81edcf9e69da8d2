"""The HTTP API on a real server process (`simsearch serve`, waitress)."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import numpy as np
import pytest
import soundfile as sf

from audio_tools import (CATALOG, DATA, audio_bytes, catalog_sources, clip_path, excerpt, load_clip, png_bytes,
                         resample, tone_sequence, write_audio)
from server_tools import READ_KEY, assert_error, running_server
from simsearch.build import build
from simsearch.engine import Engine

pytestmark = pytest.mark.slow

MAX_UPLOAD_MB = 1  # uploads here are FLAC/Ogg excerpts of a few hundred kB
UPLOAD_SR = 22050


@pytest.fixture(scope="module")
def server(catalog_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("api")
    shutil.copytree(catalog_dir, work / "index")
    (work / "media").mkdir()
    with running_server(work / "index", work / "server.log", "--max-upload-mb", MAX_UPLOAD_MB,
                        "--media-root", DATA, "--media-root", work / "media") as srv:
        yield srv


# -- payloads -----------------------------------------------------------------

def _excerpt(name, offset=5.0, duration=9.0, fmt="flac"):
    y, sr = load_clip(name)
    return audio_bytes(resample(excerpt(y, sr, offset, duration), sr, UPLOAD_SR), UPLOAD_SR, fmt)


def _melody(seed):
    """A few seconds of synthetic music no catalog track contains."""
    rng = np.random.default_rng(seed)
    notes = 330.0 * 2 ** (rng.integers(0, 36, 24) / 12)
    return audio_bytes(tone_sequence(notes, 0.25, UPLOAD_SR), UPLOAD_SR, "flac")


def _medley():
    parts = [("flare_cave_theme", 2.0, 6.0), ("flare_forest_theme", 10.0, 4.0), ("flare_town_theme", 5.0, 3.0)]
    y = np.concatenate([excerpt(load_clip(n)[0], load_clip(n)[1], off, dur) for n, off, dur in parts])
    return audio_bytes(resample(y, load_clip(CATALOG[0])[1], UPLOAD_SR), UPLOAD_SR, "flac")


def _track_url(track_id):
    return "/v1/tracks/" + quote(track_id, safe="")


def _ids(resp):
    assert resp.status_code == 200, resp.text[:500]
    return [m["track_id"] for m in resp.json()["matches"]]


# -- what works ----------------------------------------------------------------

def test_health(server):
    body = server.get("/v1/health").json()
    assert body["status"] == "ok" and body["tracks"] >= len(CATALOG) and body["version"]


@pytest.mark.parametrize("name", CATALOG)
def test_query_multipart(server, name):
    resp = server.post("/v1/query", files={"file": ("excerpt.flac", _excerpt(name, offset=7.5))})
    assert _ids(resp)[0] == name
    body = resp.json()
    m = body["matches"][0]
    assert m["kind"] == "duplicate" and m["speed"] == pytest.approx(1.0, abs=0.01)
    assert m["ref_start"] - m["query_start"] == pytest.approx(7.5, abs=0.2)
    assert body["duration_s"] == pytest.approx(9.0, abs=0.05) and body["elapsed_ms"] > 0
    assert "hits" not in m


@pytest.mark.parametrize("content_type", ["application/octet-stream", "audio/flac",
                                          "application/x-www-form-urlencoded"])  # curl --data-binary's
def test_query_raw_body(server, content_type):
    resp = server.post("/v1/query", data=_excerpt("flare_town_theme"), headers={"Content-Type": content_type})
    assert _ids(resp)[0] == "flare_town_theme"


def test_out_of_catalog_audio_is_not_matched(server):
    for name in ("flare_dungeon_theme", "flare_boss_theme"):
        assert _ids(server.post("/v1/query", data=clip_path(name).read_bytes())) == []


def test_top_k_and_min_score(server):
    medley = _medley()
    everything = server.post("/v1/query", data=medley, params={"min_score": 0, "top_k": 50})
    assert _ids(everything)[:3] == ["flare_cave_theme", "flare_forest_theme", "flare_town_theme"]
    scores = [m["score"] for m in everything.json()["matches"]]
    assert _ids(server.post("/v1/query", data=medley, params={"top_k": 1})) == ["flare_cave_theme"]
    # As multipart form fields too.
    two = server.post("/v1/query", files={"file": ("m.flac", medley)},
                      data={"top_k": "2", "min_score": str((scores[1] + scores[2]) / 2)})
    assert _ids(two) == ["flare_cave_theme", "flare_forest_theme"]
    assert _ids(server.post("/v1/query", data=medley, params={"min_score": scores[0] + 1})) == []


def test_hits(server):
    resp = server.post("/v1/query?hits=true", data=_excerpt("flare_cave_theme"))
    m = resp.json()["matches"][0]
    assert len(m["hits"]) >= m["score"] and all(len(h) == 2 for h in m["hits"])


def test_add_then_the_next_query_finds_it(server):
    track_id = "new/dungeon theme"
    resp = server.post("/v1/tracks", files={"file": ("d.ogg", clip_path("flare_dungeon_theme").read_bytes())},
                       data={"track_id": track_id, "metadata": '{"source": "flare", "year": 2012}'})
    assert resp.status_code == 201, resp.text
    track = resp.json()["track"]
    assert track["track_id"] == track_id and track["meta"] == {"source": "flare", "year": 2012}
    assert track["duration"] == pytest.approx(25.0, abs=0.1) and track["n_triplets"] > 100
    assert "matches" not in resp.json()
    assert _ids(server.post("/v1/query", data=_excerpt("flare_dungeon_theme")))[0] == track_id

    got = server.get(_track_url(track_id))
    assert got.status_code == 200 and got.json() == track
    gone = server.delete(_track_url(track_id))
    assert gone.status_code == 200 and gone.json() == {"removed": track_id}
    assert_error(server, server.get(_track_url(track_id)), 404, "unknown_track")
    assert _ids(server.post("/v1/query", data=_excerpt("flare_dungeon_theme"))) == []


def test_add_with_check_returns_what_the_upload_matches(server):
    track_id = "copies/forest excerpt"
    resp = server.post("/v1/tracks", files={"file": ("f.flac", _excerpt("flare_forest_theme", offset=11.0))},
                       data={"track_id": track_id, "check": "true"})
    assert resp.status_code == 201, resp.text
    matches = resp.json()["matches"]
    assert [m["track_id"] for m in matches] == ["flare_forest_theme"]
    assert matches[0]["ref_start"] - matches[0]["query_start"] == pytest.approx(11.0, abs=0.2)
    assert resp.json()["track"]["track_id"] == track_id
    assert server.delete(_track_url(track_id)).status_code == 200


@pytest.mark.parametrize("track_id", ["album/track 1", "a//b", "ends/", "/leads", "50% mix?#1", "ünïcödé/トラック"])
def test_track_ids_with_slashes_are_addressable(server, track_id):
    resp = server.post("/v1/tracks", files={"file": ("m.flac", _melody(len(track_id)))}, data={"track_id": track_id})
    if resp.status_code != 201:  # refusing an id the URL cannot carry is fine; accepting it, not
        assert_error(server, resp, 400, "bad_parameter")
        return
    got = server.get(_track_url(track_id))
    assert got.status_code == 200 and got.json()["track_id"] == track_id, got.text[:300]
    gone = server.delete(_track_url(track_id))
    assert gone.status_code == 200 and gone.json() == {"removed": track_id}, gone.text[:300]


def test_delete_never_removes_another_track(server):
    resp = server.post("/v1/tracks", files={"file": ("m.flac", _melody(7))}, data={"track_id": "decoy"})
    assert resp.status_code == 201, resp.text
    server.post("/v1/tracks", files={"file": ("m.flac", _melody(9))}, data={"track_id": "/decoy"})
    server.delete(_track_url("/decoy"))
    assert server.get(_track_url("decoy")).status_code == 200, "DELETE of '/decoy' removed 'decoy'"


def test_stats(server):
    stats = server.get("/v1/stats").json()
    assert stats["tracks"] >= len(CATALOG) and stats["vectors"] > 0
    assert stats["bytes_on_disk"] > 0 and stats["bytes_in_memory"] > 0
    assert stats["format_version"] >= 1 and stats["generation"].startswith("gen-")
    assert stats["feature_config"]["sample_rate"] > 0


def test_openapi_document(server):
    doc = server.get("/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert doc["info"]["title"] and doc["info"]["version"]
    paths = doc["paths"]
    want = {"/v1/query": {"post"}, "/v1/tracks": {"post"}, "/v1/tracks/{track_id}": {"get", "delete"},
            "/v1/audio/{track_id}": {"get"}, "/v1/health": {"get"}, "/v1/stats": {"get"}, "/v1/openapi.json": {"get"}}
    for path, methods in want.items():
        assert methods <= set(paths[path]), path
        for method in methods:
            assert paths[path][method]["responses"], (path, method)
    # Every $ref resolves inside the document.
    refs = []

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node:
                refs.append(node["$ref"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    assert refs
    for ref in refs:
        assert ref.startswith("#/")
        node = doc
        for part in ref[2:].split("/"):
            node = node[part]
    assert {"error", "message"} <= set(doc["components"]["schemas"]["Error"]["required"])


def test_concurrent_queries(server):
    payloads = [(name, _excerpt(name, offset=3.0 + k)) for k, name in enumerate(CATALOG * 2)]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda p: _ids(server.post("/v1/query", data=p[1])), payloads))
    assert [a[0] for a in answers] == [name for name, _ in payloads]


def _eventually(fetch, want, patience_s=20.0):
    """fetch() until it returns `want` (the server reloads at its own pace)."""
    deadline = time.monotonic() + patience_s
    got = fetch()
    while got != want and time.monotonic() < deadline:
        time.sleep(0.25)
        got = fetch()
    return got


def test_server_picks_up_a_rebuild_and_other_writers(tmp_path):
    index_dir = tmp_path / "index"
    build(index_dir, catalog_sources(["flare_cave_theme"]), jobs=1, progress=False)
    with running_server(index_dir, tmp_path / "server.log") as srv:
        query = _excerpt("flare_town_theme")
        assert _ids(srv.post("/v1/query", data=query)) == []
        # `simsearch build` from a shell: a new generation with another catalog.
        build(index_dir, catalog_sources(["flare_cave_theme", "flare_town_theme"]), jobs=1, progress=False)
        assert _eventually(lambda: _ids(srv.post("/v1/query", data=query)), ["flare_town_theme"]) == \
            ["flare_town_theme"]
        # `simsearch add` and `simsearch remove` from a shell.
        Engine(index_dir).add("shell/boss", clip_path("flare_boss_theme"))
        Engine(index_dir).remove("flare_town_theme")
        assert _eventually(lambda: _ids(srv.post("/v1/query", data=_excerpt("flare_boss_theme"))),
                           ["shell/boss"]) == ["shell/boss"]
        assert _ids(srv.post("/v1/query", data=query)) == []


# -- access control: bearer keys ------------------------------------------------

def _add_form(track_id):
    return dict(files={"file": ("a.flac", _excerpt("flare_boss_theme"))}, data={"track_id": track_id})


def test_writes_need_a_write_key(server):
    anon = dataclasses.replace(server, key=None)
    resp = anon.post("/v1/tracks", **_add_form("auth/anon"))
    assert_error(server, resp, 401, "missing_key")
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert_error(server, anon.post("/v1/tracks", headers={"Authorization": "Basic dXNlcjpwdw=="},
                                   **_add_form("auth/basic")), 401, "missing_key")
    wrong = dataclasses.replace(server, key="not-a-key-of-this-server-at-all")
    assert_error(server, wrong.post("/v1/tracks", **_add_form("auth/wrong")), 401, "invalid_key")
    reader = dataclasses.replace(server, key=READ_KEY)
    assert_error(server, reader.post("/v1/tracks", **_add_form("auth/reader")), 403, "forbidden")
    assert_error(server, reader.delete(_track_url(CATALOG[0])), 403, "forbidden")
    assert_error(server, anon.delete(_track_url(CATALOG[0])), 401, "missing_key")
    # Nothing was added or removed, and reads need no key on this server.
    assert anon.get(_track_url(CATALOG[0])).status_code == 200
    for tid in ("auth/anon", "auth/basic", "auth/wrong", "auth/reader"):
        assert_error(server, anon.get(_track_url(tid)), 404, "unknown_track")
    assert _ids(anon.post("/v1/query", data=_excerpt(CATALOG[0]))) == [CATALOG[0]]


def test_keys_for_reads(catalog_dir, tmp_path):
    shutil.copytree(catalog_dir, tmp_path / "index")
    with running_server(tmp_path / "index", tmp_path / "server.log", "--keys-for-reads") as srv:
        anon = dataclasses.replace(srv, key=None)
        assert anon.get("/v1/health").status_code == 200  # health and the API document stay open
        assert anon.get("/v1/openapi.json").status_code == 200
        assert_error(srv, anon.post("/v1/query", data=_excerpt(CATALOG[1])), 401, "missing_key")
        assert_error(srv, anon.get("/v1/stats"), 401, "missing_key")
        assert_error(srv, anon.get(_track_url(CATALOG[1])), 401, "missing_key")
        assert_error(srv, anon.get(_audio_url(CATALOG[1])), 401, "missing_key")
        reader = dataclasses.replace(srv, key=READ_KEY)
        assert _ids(reader.post("/v1/query", data=_excerpt(CATALOG[1]))) == [CATALOG[1]]
        # Without --media-root, catalog audio is off, even for a file the index knows.
        resp = reader.get(_audio_url(CATALOG[1]))
        assert_error(srv, resp, 404, "audio_unavailable")
        assert "--media-root" in resp.json()["message"]
        assert _ids(srv.post("/v1/query", data=_excerpt(CATALOG[1]))) == [CATALOG[1]]  # write keys read too


def test_without_keys_writes_are_disabled_unless_no_auth(catalog_dir, tmp_path):
    shutil.copytree(catalog_dir, tmp_path / "index")
    with running_server(tmp_path / "index", tmp_path / "a.log", keys_env="") as srv:
        assert_error(srv, srv.post("/v1/tracks", **_add_form("nokeys/boss")), 403, "writes_disabled")
        assert _ids(srv.post("/v1/query", data=_excerpt(CATALOG[2]))) == [CATALOG[2]]
    with running_server(tmp_path / "index", tmp_path / "b.log", "--no-auth", keys_env="") as srv:
        anon = dataclasses.replace(srv, key=None)
        assert anon.post("/v1/tracks", **_add_form("open/boss")).status_code == 201
        assert anon.delete(_track_url("open/boss")).status_code == 200


# -- catalog audio --------------------------------------------------------------

def _audio_url(track_id):
    return "/v1/audio/" + quote(track_id, safe="")


def _wav(resp):
    """(samples [n, channels], rate) of a WAV answer."""
    assert resp.status_code == 200, resp.text[:300]
    assert resp.headers["Content-Type"] == "audio/wav"
    assert resp.content[:4] == b"RIFF" and resp.content[8:12] == b"WAVE"
    y, sr = sf.read(io.BytesIO(resp.content), dtype="float32", always_2d=True)
    return y, sr


def test_catalog_audio_excerpt(server):
    y, sr = _wav(server.get(_audio_url("flare_cave_theme"), params={"start": 2.5, "end": 7.5}))
    assert len(y) == pytest.approx(5.0 * sr, abs=1)
    # The very samples of the catalog file there (to 16-bit precision).
    whole, file_sr = sf.read(clip_path("flare_cave_theme"), dtype="float32", always_2d=True)
    assert sr == file_sr and y.shape[1] == whole.shape[1]
    np.testing.assert_allclose(y, whole[int(2.5 * sr): int(2.5 * sr) + len(y)], atol=2 / 32768)


def test_catalog_audio_defaults_and_the_track_end(server):
    y, sr = _wav(server.get(_audio_url("flare_town_theme")))  # the whole 25 s clip (under 60 s)
    assert len(y) / sr == pytest.approx(25.0, abs=0.05)
    y, sr = _wav(server.get(_audio_url("flare_town_theme"), params={"start": 20}))
    assert len(y) / sr == pytest.approx(5.0, abs=0.05)
    y, sr = _wav(server.get(_audio_url("flare_town_theme"), params={"start": 22, "end": 40}))  # cut at the end
    assert len(y) / sr == pytest.approx(3.0, abs=0.05)


def test_catalog_audio_byte_ranges(server):
    """Browsers ask for ranges of media; the excerpt is one fixed file."""
    whole = server.get(_audio_url("flare_forest_theme"), params={"start": 1, "end": 2}).content
    part = server.get(_audio_url("flare_forest_theme"), params={"start": 1, "end": 2},
                      headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == whole[100:200]


def test_catalog_audio_of_a_track_added_over_http(server):
    track_id = "http/melody"
    resp = server.post("/v1/tracks", files={"file": ("m.flac", _melody(11))}, data={"track_id": track_id})
    assert resp.status_code == 201, resp.text
    assert_error(server, server.get(_audio_url(track_id)), 404, "audio_unavailable")
    assert server.delete(_track_url(track_id)).status_code == 200


def test_catalog_audio_file_gone_or_not_a_file_or_outside_the_media_roots(server, tmp_path):
    """The path comes from the index; it is served only while it is a regular
    file inside a --media-root (symbolic links resolved)."""
    media = server.index_dir.parent / "media"
    tones = tone_sequence([440.0, 550.0, 660.0] * 4, 0.3, UPLOAD_SR)
    melody = write_audio(media / "melody.flac", tones, UPLOAD_SR, "flac")
    outside = write_audio(tmp_path / "outside.flac", tones, UPLOAD_SR, "flac")
    (media / "link.flac").symlink_to(outside)
    writer = Engine(server.index_dir)  # as `simsearch add` from a shell would
    writer.add("files/melody", melody, path=str(melody))
    writer.add("files/directory", melody, path=str(media))
    writer.add("files/outside", outside, path=str(outside))
    writer.add("files/link", outside, path=str(media / "link.flac"))
    assert _eventually(lambda: server.get(_audio_url("files/melody")).status_code, 200) == 200
    for track_id in ("files/directory", "files/outside", "files/link"):
        assert_error(server, server.get(_audio_url(track_id)), 404, "audio_unavailable")
    melody.unlink()
    assert_error(server, server.get(_audio_url("files/melody")), 404, "audio_unavailable")
    for track_id in ("files/melody", "files/directory", "files/outside", "files/link"):
        assert server.delete(_track_url(track_id)).status_code == 200


def test_catalog_audio_of_an_unknown_track(server):
    assert_error(server, server.get(_audio_url("no/such track")), 404, "unknown_track")


@pytest.mark.parametrize("params", [{"start": "abc"}, {"end": "x"}, {"start": -1}, {"start": "nan"},
                                    {"end": "inf"}, {"start": 5, "end": 5}, {"start": 6, "end": 5},
                                    {"start": 25.5}, {"start": 0, "end": 60.5}, {"colour": "blue"}])
def test_catalog_audio_bad_range(server, params):
    assert_error(server, server.get(_audio_url("flare_cave_theme"), params=params), 400, "bad_parameter")


# -- bad input: an exact 4xx, a JSON error, and the server carries on ---------------

def test_empty_body(server):
    assert_error(server, server.post("/v1/query", data=b""), 400, "empty_input")


def test_empty_multipart_file(server):
    assert_error(server, server.post("/v1/query", files={"file": ("empty.wav", b"")}), 400, "empty_input")


def test_text_file(server):
    resp = server.post("/v1/query", files={"file": ("notes.txt", b"this is a shopping list\n" * 40)})
    assert_error(server, resp, 415, "bad_audio")


def test_random_bytes_named_mp3(server):
    data = np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes()
    assert_error(server, server.post("/v1/query", files={"file": ("song.mp3", data)}), 415, "bad_audio")


def test_png_image(server):
    assert_error(server, server.post("/v1/query", files={"file": ("cover.png", png_bytes())}), 415, "bad_audio")


def test_truncated_ogg(server):
    data = clip_path("flare_cave_theme").read_bytes()[:3000]
    assert_error(server, server.post("/v1/query", files={"file": ("cut.ogg", data)}), 415, "bad_audio")


def test_clip_of_a_few_milliseconds(server):
    y = np.sin(np.arange(int(0.02 * UPLOAD_SR)) * 0.1).astype(np.float32)
    resp = server.post("/v1/query", data=audio_bytes(y, UPLOAD_SR, "wav"))
    assert_error(server, resp, 422, "audio_too_short")


def test_nan_samples_in_a_float_wav(server):
    y = resample(excerpt(*load_clip("flare_town_theme"), 2.0, 3.0), load_clip("flare_town_theme")[1], UPLOAD_SR)
    y[1000:1100] = np.nan
    resp = server.post("/v1/query", files={"file": ("nan.wav", audio_bytes(y, UPLOAD_SR, "wav-float"))})
    assert_error(server, resp, 415, "bad_audio")


def test_upload_over_the_limit(server):
    data = b"\0" * int(1.5 * MAX_UPLOAD_MB * 1024 * 1024)
    assert_error(server, server.post("/v1/query", data=data), 413, "too_large")
    assert_error(server, server.post("/v1/query", files={"file": ("big.wav", data)}), 413, "too_large")


def test_upload_far_over_the_limit(server):
    data = b"\0" * int(3 * MAX_UPLOAD_MB * 1024 * 1024)
    assert_error(server, server.post("/v1/query", data=data), 413, "too_large")


@pytest.mark.parametrize("method", ["get", "delete"])
def test_unknown_track(server, method):
    assert_error(server, getattr(server, method)(_track_url("no/such track")), 404, "unknown_track")


def test_track_id_already_taken(server):
    resp = server.post("/v1/tracks", files={"file": ("m.flac", _melody(1))}, data={"track_id": "flare_cave_theme"})
    assert_error(server, resp, 409, "track_exists")


@pytest.mark.parametrize("track_id", ["bell\x07", "line\nbreak", "tab\tid", "esc\x1b[31m", "del\x7f",
                                      "n\x85el", "csi\x9b31m"],
                         ids=["BEL", "LF", "TAB", "ESC", "DEL", "C1-NEL", "C1-CSI"])
def test_track_id_with_control_characters(server, track_id):
    resp = server.post("/v1/tracks", files={"file": ("m.flac", _melody(2))}, data={"track_id": track_id})
    assert_error(server, resp, 400, "bad_parameter")


@pytest.mark.parametrize("track_id", ["x" * 257, "é" * 129], ids=["257-ascii", "258-bytes-129-chars"])
def test_track_id_over_256_bytes(server, track_id):
    resp = server.post("/v1/tracks", files={"file": ("m.flac", _melody(3))}, data={"track_id": track_id})
    assert_error(server, resp, 400, "bad_parameter")


def test_missing_track_id(server):
    assert_error(server, server.post("/v1/tracks", files={"file": ("m.flac", _melody(4))}), 400, "bad_parameter")


@pytest.mark.parametrize("metadata", ["{not json", "[1, 2]", '"text"'])
def test_bad_metadata(server, metadata):
    resp = server.post("/v1/tracks", files={"file": ("m.flac", _melody(5))},
                       data={"track_id": "meta/bad", "metadata": metadata})
    assert_error(server, resp, 400, "bad_parameter")


@pytest.mark.parametrize("where", ["form", "query string"])
@pytest.mark.parametrize("endpoint", ["/v1/query", "/v1/tracks"])
def test_unknown_field(server, endpoint, where):
    fields = {"track_id": "field/test", "colour": "blue"}
    if where == "form":
        resp = server.post(endpoint, files={"file": ("m.flac", _melody(6))}, data=fields)
    else:
        resp = server.post(endpoint, files={"file": ("m.flac", _melody(6))}, data={"track_id": "field/test"},
                           params={"colour": "blue"})
    assert_error(server, resp, 400, "bad_parameter")


def test_multipart_without_a_file_field(server):
    resp = server.post("/v1/query", files={"top_k": (None, "3")})
    assert_error(server, resp, 400, "bad_parameter")


@pytest.mark.parametrize("value", ["0", "51", "-3", "abc", "2.5", ""])
def test_bad_top_k(server, value):
    assert_error(server, server.post("/v1/query", data=_melody(8), params={"top_k": value}), 400, "bad_parameter")


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "abc", ""])
def test_bad_min_score(server, value):
    resp = server.post("/v1/query", files={"file": ("m.flac", _melody(8))}, data={"min_score": value})
    assert_error(server, resp, 400, "bad_parameter")


def test_bad_boolean(server):
    assert_error(server, server.post("/v1/query?hits=maybe", data=_melody(8)), 400, "bad_parameter")


def test_unknown_route_and_method(server):
    assert_error(server, server.get("/v1/nothing"), 404)
    assert_error(server, server.get("/v1/query"), 405)


def _raw_request(server, raw: bytes) -> tuple[int, dict]:
    """Send raw bytes; the status and JSON body of the answer (before any body is sent)."""
    host, port = server.url.rsplit("/", 1)[-1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(raw)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _content_length(data):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    assert b"content-type: application/json" in head.lower(), head
    return int(head.split()[1]), json.loads(body)


def _content_length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


@pytest.mark.parametrize("raw, status, code", [
    # A Content-Length of a terabyte: refused before any body is read.
    (b"POST /v1/query HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999\r\n\r\n", 413, "too_large"),
    (b"POST /v1/query HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc", 400, "bad_request"),
    (b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Filler: " + b"a" * 300_000 + b"\r\n\r\n", 431, "headers_too_large"),
])
def test_requests_the_wsgi_server_refuses_get_json_errors(server, raw, status, code):
    got, body = _raw_request(server, raw)
    assert (got, body["error"]) == (status, code) and body["message"]
    assert server.get("/v1/health").status_code == 200
