"""Durability and concurrency on a real server (two worker processes): SIGKILL
in the middle of a stream of additions loses no acknowledged track; queries
keep their answers while tracks are added and removed and while a rebuild
switches in."""

from __future__ import annotations

import random
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import pytest
import requests

from audio_tools import CATALOG, OUTSIDE, audio_bytes, catalog_sources, excerpt, load_clip, pieces, resample
from server_tools import WRITE_KEY, free_port, kill_server, running_server, start_server, wait_healthy
from simsearch.build import build, create_empty, scan
from simsearch.engine import Engine

pytestmark = pytest.mark.slow

KILLS = 20
AUTH = {"Authorization": f"Bearer {WRITE_KEY}"}
SR = 16000


def _add(url, track_id, data, timeout=30):
    return requests.post(url + "/v1/tracks", files={"file": ("t.flac", data)}, data={"track_id": track_id},
                         headers=AUTH, timeout=timeout)


def _query_ids(url, data, top_k=50):
    resp = requests.post(url + "/v1/query", data=data, params={"top_k": top_k}, timeout=60)
    assert resp.status_code == 200, resp.text[:300]
    return [m["track_id"] for m in resp.json()["matches"]]


def test_sigkill_during_additions_loses_no_acknowledged_track(tmp_path):
    uploads = pieces(CATALOG + OUTSIDE)
    index_dir = tmp_path / "index"
    create_empty(index_dir)
    log = tmp_path / "server.log"
    acked: dict[str, int] = {}
    failures: list[str] = []
    rng = random.Random(1234)
    counter = iter(range(10**6))

    for kill in range(KILLS):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start_server(index_dir, log, port=port)
        wait_healthy(proc, url, log)
        stop = threading.Event()

        def writer():
            while not stop.is_set():
                n = next(counter)
                track_id = f"kill{kill:02d}/track{n:04d}"
                try:
                    resp = _add(url, track_id, uploads[n % len(uploads)])
                except requests.RequestException:
                    return  # the server died under this request: not acknowledged
                if resp.status_code == 201:
                    acked[track_id] = n % len(uploads)
                else:
                    failures.append(f"{track_id}: {resp.status_code} {resp.text[:200]}")
                # A pause keeps the copies of each piece (a query returns at most
                # MatchConfig.max_candidates tracks) fewer than a dozen.
                stop.wait(0.1)

        thread = threading.Thread(target=writer)
        thread.start()
        time.sleep(rng.uniform(0.3, 1.5))
        kill_server(proc)  # the parent and both workers, mid-write or not
        stop.set()
        thread.join(timeout=60)
        assert not thread.is_alive()

    assert failures == []
    assert len(acked) >= KILLS, f"only {len(acked)} additions acknowledged over {KILLS} kills"
    print(f"{len(acked)} additions acknowledged over {KILLS} SIGKILLs")  # shown with pytest -s or -rP
    # Every file of the index reads back (checksums, HDF5) and holds every acknowledged track.
    report = scan(index_dir)
    assert report.ok, report.to_json()
    assert set(Engine(index_dir).tracks) >= set(acked)
    with running_server(index_dir, log) as srv:
        for track_id in acked:
            assert srv.get("/v1/tracks/" + quote(track_id, safe="")).status_code == 200, track_id
        for k, data in enumerate(uploads):
            want = {t for t, p in acked.items() if p == k}
            if want:
                assert len(want) <= 8, "too many copies of one piece to check them all by one query"
                assert want <= set(_query_ids(srv.url, data)), f"piece {k}"


def _answers(url, queries):
    out = []
    for data in queries:
        resp = requests.post(url + "/v1/query", data=data, timeout=60)
        assert resp.status_code == 200, resp.text[:300]
        out.append([(m["track_id"], m["kind"], m["score"], m["query_start"], m["ref_start"])
                    for m in resp.json()["matches"]])
    return out


def test_queries_keep_their_answers_under_additions_removals_and_a_rebuild(catalog_dir, tmp_path):
    """Catalog queries (plain and sped-up excerpts, and out-of-catalog audio) answered
    by an idle server, then again and again while two clients add tracks in
    parallel, a third removes some, and an offline rebuild switches in."""
    index_dir = tmp_path / "index"
    shutil.copytree(catalog_dir, index_dir)
    queries = []
    for k, name in enumerate(CATALOG):
        y, sr = load_clip(name)
        queries.append(audio_bytes(resample(excerpt(y, sr, 3.0 + 2 * k, 8.0), sr, SR), SR, "flac"))
        queries.append(audio_bytes(resample(excerpt(y, sr, 6.0, 10.0), int(sr * 1.1), SR), SR, "flac"))
    queries += pieces(OUTSIDE[1:])[:2]  # out of the catalog, and unlike the additions
    additions = pieces(OUTSIDE[:1])  # other music: it must not change the queries' answers

    with running_server(index_dir, tmp_path / "server.log") as srv:
        idle = _answers(srv.url, queries)
        assert [a[0][0] if a else None for a in idle[: 2 * len(CATALOG)]] == [n for n in CATALOG for _ in (0, 1)]
        assert idle[-2:] == [[], []]

        stop = threading.Event()
        mismatches: list[str] = []
        rounds = [0]

        def querier():
            while not stop.is_set():
                got = _answers(srv.url, queries)
                rounds[0] += 1
                mismatches.extend(f"query {i}: {g} != {w}" for i, (g, w) in enumerate(zip(got, idle)) if g != w)

        def adder(prefix):
            acked = []
            for n, data in enumerate(additions):
                resp = _add(srv.url, f"{prefix}/{n:02d}", data)
                assert resp.status_code == 201, resp.text[:300]
                acked.append(f"{prefix}/{n:02d}")
            return acked

        with ThreadPoolExecutor(4) as pool:
            readers = [pool.submit(querier) for _ in range(2)]
            writers = [pool.submit(adder, p) for p in ("parallel-a", "parallel-b")]
            acked = [t for w in writers for t in w.result(timeout=300)]
            # A third client removes every other addition.
            removed = acked[::2]
            for track_id in removed:
                assert srv.delete("/v1/tracks/" + quote(track_id, safe="")).status_code == 200
            # Parallel additions lost nothing; removals took.
            for track_id in acked:
                want = 404 if track_id in removed else 200
                assert srv.get("/v1/tracks/" + quote(track_id, safe="")).status_code == want, track_id
            assert srv.get("/v1/stats").json()["tracks"] == len(CATALOG) + len(acked) - len(removed)
            # An offline rebuild of the catalog switches in under the running queries.
            before = rounds[0]
            build(index_dir, catalog_sources(), jobs=1, progress=False)
            deadline = time.monotonic() + 30
            while srv.get("/v1/stats").json()["tracks"] != len(CATALOG) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert srv.get("/v1/stats").json()["tracks"] == len(CATALOG)
            while rounds[0] < before + 4 and time.monotonic() < deadline + 30:
                time.sleep(0.2)
            stop.set()
            for r in readers:
                r.result(timeout=120)
        assert rounds[0] >= before + 4
        assert mismatches == []
        assert _answers(srv.url, queries) == idle
