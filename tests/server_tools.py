"""A real `simsearch serve` process on 127.0.0.1 for the API tests, with API keys."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

# Test keys, given to the server through $SIMSEARCH_API_KEYS.
WRITE_KEY = "test-write-key-0123456789abcdef"
READ_KEY = "test-read-key-0123456789abcdef"
KEYS_ENV = f"write:{WRITE_KEY},read:{READ_KEY}"


@dataclass
class Server:
    """Requests carry `key` (the write key unless told otherwise) as a bearer token."""
    url: str
    index_dir: Path
    log: Path
    proc: subprocess.Popen
    key: str | None = WRITE_KEY

    def _headers(self, kw):
        headers = dict(kw.pop("headers", None) or {})
        if self.key is not None:
            headers.setdefault("Authorization", f"Bearer {self.key}")
        return headers

    def get(self, path, **kw):
        return requests.get(self.url + path, timeout=60, headers=self._headers(kw), **kw)

    def post(self, path, **kw):
        return requests.post(self.url + path, timeout=60, headers=self._headers(kw), **kw)

    def delete(self, path, **kw):
        return requests.delete(self.url + path, timeout=60, headers=self._headers(kw), **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


WORKERS = 2  # the API tests run against a multi-process server unless they ask otherwise


def start_server(index_dir, log, *args, port: int | None = None, keys_env: str = KEYS_ENV) -> subprocess.Popen:
    """`simsearch serve INDEX_DIR` as a child process (not yet healthy), with
    --workers 2 unless `args` say otherwise, in a process group of its own
    (kill_server() ends every process of it)."""
    env = dict(os.environ, SIMSEARCH_API_KEYS=keys_env)
    workers = [] if "--workers" in map(str, args) else ["--workers", str(WORKERS)]
    with open(log, "ab") as log_fh:
        return subprocess.Popen([sys.executable, "-m", "simsearch", "serve", str(index_dir), "--host", "127.0.0.1",
                                 "--port", str(port), *workers, *map(str, args)], stdout=log_fh,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)


def kill_server(proc: subprocess.Popen) -> None:
    """SIGKILL the server's parent and its workers at once, as a crash would."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def worker_pids(proc: subprocess.Popen) -> set[int]:
    """The server's worker processes (the parent's children)."""
    path = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    return {int(p) for p in path.read_text().split()} if path.exists() else set()


def wait_healthy(proc: subprocess.Popen, url: str, log: Path, patience_s: float = 60.0) -> None:
    deadline = time.monotonic() + patience_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{Path(log).read_text()[-3000:]}")
        try:
            if requests.get(url + "/v1/health", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"server not healthy after {patience_s:.0f} s:\n{Path(log).read_text()[-3000:]}")
        time.sleep(0.1)


@contextmanager
def running_server(index_dir, log, *args, keys_env: str = KEYS_ENV):
    """`simsearch serve INDEX_DIR` on a free port, healthy, killed on exit."""
    port = free_port()
    proc = start_server(index_dir, log, *args, port=port, keys_env=keys_env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, url, log)
        yield Server(url, Path(index_dir), Path(log), proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)  # workers finish their requests first
        except subprocess.TimeoutExpired:
            kill_server(proc)


def assert_error(server, resp, status, code=None):
    """A JSON error with the exact status, and a server still in good health."""
    assert resp.status_code == status, f"{resp.status_code}: {resp.text[:300]}"
    assert resp.headers.get("Content-Type", "").startswith("application/json"), resp.text[:300]
    body = resp.json()
    assert isinstance(body.get("error"), str) and body["error"]
    assert isinstance(body.get("message"), str) and body["message"]
    if code is not None:
        assert body["error"] == code, body
    assert server.get("/v1/health").status_code == 200
