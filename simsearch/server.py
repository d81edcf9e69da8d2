"""The production WSGI server: waitress, in one process or in several.

waitress rejects some requests before the app sees them (a Content-Length over
the body limit, malformed or oversized headers, bad chunked encoding) with a
plain-text page; here those answers take the API's JSON error shape too.

Python runs one thread at a time in a process (the GIL), and about 30% of a
query's server time holds it (the HTTP layer, multipart parsing, decoding's
read callbacks, matching's numpy glue), so threads alone keep at most about
1.5 of 2 cores busy (benchmarks/README.md, HTTP load).  Several processes
use several: `supervise()` forks workers that inherit the parent's bound
socket and loaded index (copy-on-write) and each run waitress with their own
threads on that one socket; the kernel hands each new connection to one of
them.  Workers see each other's writes through the index's change log
(Engine.sync()).

Stopping: SIGTERM or SIGINT makes a worker stop accepting, finish the requests
it holds (answered with `Connection: close`) for up to SHUTDOWN_GRACE_S, and
exit; the parent passes the signal on to every worker and waits for them.  A
worker whose parent is gone (killed outright) stops the same way within a
second.  A worker that dies is replaced; when workers keep dying (more than
MAX_DEATHS within DEATH_WINDOW_S) the parent stops the others and exits 1.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable

from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import create_server
from waitress.task import ErrorTask, WSGITask

from .errors import upload_too_large

_CODES = {400: "bad_request", 413: "too_large", 431: "headers_too_large", 501: "not_implemented"}

SHUTDOWN_GRACE_S = 10.0  # a stopping worker finishes its requests for at most this long
MAX_DEATHS, DEATH_WINDOW_S = 5, 60.0  # more unexpected worker deaths than this in the window: give up
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
log = logging.getLogger("simsearch.server")


class _JsonErrorTask(ErrorTask):
    upload_limit_bytes: int | None = None

    def execute(self):
        e = self.request.error
        message = f"{e.reason}: {e.body}".strip()
        if e.code == 413 and self.upload_limit_bytes is not None:  # the same words as the app's own 413
            message = upload_too_large(self.upload_limit_bytes)
        body = json.dumps({"error": _CODES.get(e.code, "http_error"), "message": message}).encode()
        self.status = f"{e.code} {e.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class _DrainingTask(WSGITask):
    """Once the server is stopping, each answer closes its connection, so that
    the client's next request goes to a worker that stays."""
    draining: threading.Event

    def build_response_header(self):
        if self.draining.is_set():
            self.set_close_on_finish()
        return super().build_response_header()


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port, not yet listening (waitress listens):
    a port already taken fails here, before the index is loaded."""
    family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError:
        sock.close()
        raise
    return sock


def make_server(app, sock: socket.socket, threads: int, upload_limit_bytes: int, channel_timeout_s: int = 60):
    """waitress on `sock`.  A request whose declared body exceeds the upload
    limit (the whole body, multipart framing included, as the app counts it)
    is refused before its body is read; a connection idle for
    `channel_timeout_s` (a stalled upload) is closed without taking a worker
    thread."""
    task = type("JsonErrorTask", (_JsonErrorTask,), {"upload_limit_bytes": upload_limit_bytes})
    draining = threading.Event()
    wsgi_task = type("DrainingTask", (_DrainingTask,), {"draining": draining})
    channel = type("JsonErrorChannel", (HTTPChannel,), {"error_task_class": task, "task_class": wsgi_task})
    server = create_server(app, sockets=[sock], threads=threads, ident="simsearch",
                           max_request_body_size=upload_limit_bytes, channel_timeout=channel_timeout_s)
    server.channel_class = channel
    server.draining = draining
    return server


def run(server, parent: int | None = None, grace_s: float = SHUTDOWN_GRACE_S) -> None:
    """Serve until SIGTERM or SIGINT, or until `parent` is no longer this
    process's parent; then stop accepting and finish the requests held."""
    stop = threading.Event()
    for sig in _STOP_SIGNALS:
        signal.signal(sig, lambda *_: stop.set())
    adj = server.adj
    # One poll per turn (at most asyncore_loop_timeout, 1 s): the stop flag is
    # read between turns (a signal handler must not touch waitress's locks).
    while not stop.is_set() and (parent is None or os.getppid() == parent):
        wasyncore.loop(timeout=adj.asyncore_loop_timeout, map=server._map, use_poll=adj.asyncore_use_poll, count=1)
    server.draining.set()
    server.accepting = False  # the listening socket is left to the other workers
    deadline = time.monotonic() + grace_s
    while server.active_channels and time.monotonic() < deadline:
        # Read what has arrived first: a request sent before the stop is served.
        wasyncore.loop(timeout=0.1, map=server._map, use_poll=adj.asyncore_use_poll, count=1)
        for ch in list(server.active_channels.values()):
            if not ch.requests and ch.request is None and not ch.total_outbufs_len:
                ch.will_close = True  # an idle keep-alive connection
    if server.active_channels:
        log.warning("stopping with %d connection(s) still busy after %g s", len(server.active_channels), grace_s)
    server.task_dispatcher.shutdown(timeout=1)
    server.close()


def supervise(workers: int, serve_worker: Callable[[int, int], None]) -> int:
    """Fork `workers` processes running `serve_worker(slot, parent_pid)` and
    keep that many running until SIGTERM or SIGINT; then stop them all.
    Returns the exit status: 0, or 1 when workers kept dying."""
    signals = {signal.SIGCHLD, *_STOP_SIGNALS}
    # Blocked here and taken with sigtimedwait: no signal handler races the loop.
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    parent = os.getpid()
    slots: dict[int, int] = {}  # pid -> slot
    deaths: deque[float] = deque()

    def start(slot: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()  # or the child would write the parent's buffered output again
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
                serve_worker(slot, parent)
                code = 0
            except BaseException:  # noqa: BLE001 - a worker must never return into the parent's loop
                log.exception("worker %d failed", slot)
            finally:
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        slots[pid] = slot

    for slot in range(workers):
        start(slot)
    status = 0
    while True:
        info = signal.sigtimedwait(signals, 1.0)
        if info is not None and info.si_signo in _STOP_SIGNALS:
            log.info("%s: stopping %d worker(s)", signal.Signals(info.si_signo).name, len(slots))
            break
        dead = _reap(slots)
        if not dead:
            continue
        now = time.monotonic()
        deaths.extend(now for _ in dead)
        while deaths and deaths[0] < now - DEATH_WINDOW_S:
            deaths.popleft()
        for slot, how in dead:
            log.error("worker %d %s", slot, how)
        if len(deaths) > MAX_DEATHS:
            log.error("%d workers died within %g s: giving up", len(deaths), DEATH_WINDOW_S)
            status = 1
            break
        for slot, _ in dead:
            start(slot)
            log.info("worker %d replaced", slot)
    _stop_all(slots)
    return status


def _reap(slots: dict[int, int]) -> list[tuple[int, str]]:
    """Workers that exited: (slot, how)."""
    dead = []
    while slots:
        try:
            pid, wstatus = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        if pid in slots:
            how = (f"(pid {pid}) was killed by {signal.Signals(os.WTERMSIG(wstatus)).name}"
                   if os.WIFSIGNALED(wstatus) else f"(pid {pid}) exited with status {os.WEXITSTATUS(wstatus)}")
            dead.append((slots.pop(pid), how))
    return dead


def _stop_all(slots: dict[int, int]) -> None:
    """SIGTERM every worker, wait for them to finish their requests, SIGKILL the late."""
    for pid in slots:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + SHUTDOWN_GRACE_S + 5.0
    while slots and time.monotonic() < deadline:
        _reap(slots)
        if slots:
            signal.sigtimedwait({signal.SIGCHLD}, 0.2)
    for pid, slot in slots.items():
        log.error("worker %d (pid %d) did not stop: killed", slot, pid)
        _signal(pid, signal.SIGKILL)
    while slots:
        _reap(slots)
        if slots:
            time.sleep(0.05)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
