"""Several server processes on one port (`serve --workers 2`): a change made
through one worker is seen by the very next request to the other; a worker
that dies is replaced (and catches up with what it missed); SIGTERM and SIGINT
stop every worker after the requests they hold; workers whose parent was
killed stop by themselves."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from audio_tools import OUTSIDE, pieces
from server_tools import WRITE_KEY, free_port, kill_server, running_server, start_server, wait_healthy, worker_pids

pytestmark = pytest.mark.slow

WORKER = "X-Simsearch-Worker"
ROUNDS = 6  # add through one worker, query, remove and query through the other; alternating


@pytest.fixture(scope="module")
def uploads():
    """Distinct 3 s pieces of out-of-catalog clips."""
    return pieces(OUTSIDE)


def _session(srv) -> requests.Session:
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {WRITE_KEY}"
    return s


def _session_to(srv, pid: int, attempts: int = 60) -> requests.Session:
    """A keep-alive connection that worker `pid` accepted (the kernel gives
    each new connection to whichever worker takes it first)."""
    for _ in range(attempts):
        s = _session(srv)
        if int(s.get(srv.url + "/v1/health", timeout=30).headers[WORKER]) == pid:
            return s
        s.close()
    pytest.fail(f"{attempts} new connections, none taken by worker {pid}")


def _one_session_per_worker(srv, attempts: int = 60) -> dict[int, requests.Session]:
    sessions: dict[int, requests.Session] = {}
    for _ in range(attempts):
        s = _session(srv)
        pid = int(s.get(srv.url + "/v1/health", timeout=30).headers[WORKER])
        if pid in sessions:
            s.close()
        else:
            sessions[pid] = s
        if len(sessions) == 2:
            assert set(sessions) == worker_pids(srv.proc)
            return sessions
    pytest.fail(f"{attempts} new connections all went to worker {sorted(sessions)}")


def _top(resp) -> str | None:
    assert resp.status_code == 200, resp.text[:300]
    matches = resp.json()["matches"]
    return matches[0]["track_id"] if matches else None


def _wait_for(condition, what: str, patience_s: float = 30.0):
    deadline = time.monotonic() + patience_s
    while not (got := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {patience_s:g} s")
        time.sleep(0.1)
    return got


@contextmanager
def _own_server(catalog_dir, tmp_path):
    """A server (two workers) on a copy of the catalog, for tests that stop it
    themselves: (process, port, log); killed at the end if still running."""
    shutil.copytree(catalog_dir, tmp_path / "index")
    log, port = tmp_path / "server.log", free_port()
    proc = start_server(tmp_path / "index", log, port=port)
    try:
        wait_healthy(proc, f"http://127.0.0.1:{port}", log)
        yield proc, port, log
    finally:
        if proc.poll() is None:
            kill_server(proc)


def _gone(pid: int) -> bool:
    """Exited (a zombie left to whoever reaps orphans counts as exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_change_through_one_worker_is_seen_by_the_next_request_to_the_other(catalog_dir, tmp_path, uploads):
    shutil.copytree(catalog_dir, tmp_path / "index")
    with running_server(tmp_path / "index", tmp_path / "server.log") as srv:
        (pid_a, a), (pid_b, b) = _one_session_per_worker(srv).items()
        for k in range(ROUNDS):
            (w_pid, writer), (r_pid, reader) = ((pid_a, a), (pid_b, b)) if k % 2 == 0 else ((pid_b, b), (pid_a, a))
            track_id, data = f"workers/round {k}", uploads[k]
            url = srv.url + "/v1/tracks/" + quote(track_id, safe="")
            added = writer.post(srv.url + "/v1/tracks", files={"file": ("t.flac", data)}, data={"track_id": track_id})
            assert added.status_code == 201 and int(added.headers[WORKER]) == w_pid, added.text[:300]
            # The other worker, at once: no waiting, no retry.
            found = reader.post(srv.url + "/v1/query", data=data)
            assert int(found.headers[WORKER]) == r_pid
            assert _top(found) == track_id
            assert reader.get(url).json()["track_id"] == track_id
            # Removed through the reader; the writer no longer finds it.
            assert reader.delete(url).status_code == 200
            assert _top(writer.post(srv.url + "/v1/query", data=data)) is None
            assert writer.get(url).status_code == 404
        assert a.get(srv.url + "/v1/stats").json() == b.get(srv.url + "/v1/stats").json()


def test_a_dead_worker_is_replaced_and_catches_up(catalog_dir, tmp_path, uploads):
    """A replacement is forked from the parent, whose index is the one loaded
    at start: its first request must still see every later change."""
    shutil.copytree(catalog_dir, tmp_path / "index")
    with running_server(tmp_path / "index", tmp_path / "server.log") as srv:
        (pid_a, a), (pid_b, b) = _one_session_per_worker(srv).items()
        added = a.post(srv.url + "/v1/tracks", files={"file": ("t.flac", uploads[0])}, data={"track_id": "late/one"})
        assert added.status_code == 201
        assert a.delete(srv.url + "/v1/tracks/flare_cave_theme").status_code == 200
        b.close()
        os.kill(pid_b, signal.SIGKILL)
        replacement = _wait_for(lambda: (worker_pids(srv.proc) - {pid_a, pid_b}), "replacement worker").pop()
        assert worker_pids(srv.proc) == {pid_a, replacement}
        c = _session_to(srv, replacement)
        assert _top(c.post(srv.url + "/v1/query", data=uploads[0])) == "late/one"
        assert c.get(srv.url + "/v1/tracks/flare_cave_theme").status_code == 404
        assert c.get(srv.url + "/v1/stats").json() == a.get(srv.url + "/v1/stats").json()
    log = srv.log.read_text()
    assert f"(pid {pid_b}) was killed by SIGKILL" in log and " replaced" in log


def _two_workers(proc):
    """The two worker pids, "exited" once the parent has, else None."""
    if proc.poll() is not None:
        return "exited"
    pids = worker_pids(proc)
    return pids if len(pids) == 2 else None


def test_workers_that_keep_dying_make_the_server_exit_loudly(catalog_dir, tmp_path):
    with _own_server(catalog_dir, tmp_path) as (proc, _, log):
        kills = 0
        while (pids := _wait_for(lambda: _two_workers(proc), "two workers")) != "exited" and kills < 12:
            victim = min(pids)
            os.kill(victim, signal.SIGKILL)
            kills += 1
            _wait_for(lambda: victim not in worker_pids(proc), "reaped worker")
        assert proc.wait(timeout=30) == 1
        assert kills == 6  # one more than MAX_DEATHS within DEATH_WINDOW_S
    assert "giving up" in log.read_text()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_stop_signal_lets_requests_in_flight_finish_then_stops_every_worker(catalog_dir, tmp_path, uploads, sig):
    with _own_server(catalog_dir, tmp_path) as (proc, port, log):
        workers = worker_pids(proc)
        assert len(workers) == 2
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", "/v1/health")  # a worker has taken this connection
        first = conn.getresponse()
        first.read()
        holder = int(first.headers[WORKER])
        # Half an upload, then the signal, then the rest: it must still be answered.
        body = uploads[1]
        conn.putrequest("POST", "/v1/query")
        conn.putheader("Content-Type", "audio/flac")
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body[: len(body) // 2])
        os.kill(proc.pid, sig)
        _wait_for(lambda: "stopping 2 worker(s)" in log.read_text(), "stop message")
        time.sleep(1.5)  # past the worker's 1 s poll: it is draining now
        assert not _gone(holder)
        conn.send(body[len(body) // 2 :])
        resp = conn.getresponse()
        assert resp.status == 200 and resp.headers[WORKER] == str(holder)
        assert resp.read().startswith(b'{"duration_s"')
        conn.close()
        assert proc.wait(timeout=30) == 0
        assert all(_gone(pid) for pid in workers)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_workers_stop_by_themselves_when_the_parent_is_killed(catalog_dir, tmp_path):
    with _own_server(catalog_dir, tmp_path) as (proc, _, _):
        workers = worker_pids(proc)
        assert len(workers) == 2
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        _wait_for(lambda: all(_gone(pid) for pid in workers), "exit of the orphaned workers")


def test_one_worker_serves_in_the_process_itself(catalog_dir, tmp_path, uploads):
    shutil.copytree(catalog_dir, tmp_path / "index")
    with running_server(tmp_path / "index", tmp_path / "server.log", "--workers", 1) as srv:
        assert worker_pids(srv.proc) == set()
        resp = srv.post("/v1/query", data=uploads[0])
        assert resp.status_code == 200 and int(resp.headers[WORKER]) == srv.proc.pid
    assert srv.proc.returncode == 0


def test_a_port_in_use_is_refused_before_the_index_loads(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "simsearch", "serve", str(tmp_path / "no index here"),
                               "--port", str(port)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr and "no index" not in proc.stderr
