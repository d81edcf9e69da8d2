"""HTTP load: 1, 4 and 16 concurrent clients posting real audio to /v1/query.

A real `python -m simsearch serve INDEX --workers W --threads T` runs as a
subprocess on 127.0.0.1, on a copy of the catalog index (WORK/indexes/load, so that the
tracks added during the run never reach the index other benchmarks use).
Each level starts its clients together (one `requests.Session` per thread)
and lets each post clean 10 s excerpts of catalog tracks (core's latency
excerpts, as 16-bit WAV) back to back for a fixed time; a request still
running at the deadline is waited for and counted.  Then the 4-client level
again while one more client posts out-of-catalog tracks (whole files) to
/v1/tracks.  Writes need a key: the server gets SIMSEARCH_API_KEYS=write:TOKEN
and the adder sends `Authorization: Bearer TOKEN`.

Per level: requests, failures (any status but 200, or a transport error, with
the first messages kept), throughput (successful requests / wall seconds from
the common start to the last answer), client-measured p50/p99 latency, how
many top matches were the excerpt's track, and the server's CPU time over the
level (its parent's and workers', from /proc; see cpu_seconds) divided by the
wall time: the cores the server kept busy, which tells a GIL-bound server
(about 1) from one that uses both cores (about 2).
"""

from __future__ import annotations

import os
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import requests

from . import core, corpus

CLIENT_LEVELS = (1, 4, 16)
ADD_LEVEL = 4  # query clients while tracks are added
SERVER_THREADS = 4  # `simsearch serve`'s default on this machine: max(4, cores), per worker
SERVER_WORKERS = os.cpu_count() or 1  # `simsearch serve`'s default
N_EXCERPTS = 16
REQUEST_TIMEOUT_S = 120.0
MAX_ERRORS_KEPT = 5
log = partial(core.log, bench="load")


@dataclass
class ClientLog:
    latencies_ms: list[float] = field(default_factory=list)
    correct: int = 0
    failures: int = 0
    errors: list[str] = field(default_factory=list)
    last_done: float = 0.0

    def fail(self, msg: str) -> None:
        self.failures += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(msg[:300])


def _post(session: requests.Session, url: str, clog: ClientLog, files: dict, data: dict | None = None,
          headers: dict | None = None, expect: int = 200) -> dict | None:
    t = time.perf_counter()
    try:
        resp = session.post(url, files=files, data=data, headers=headers, timeout=REQUEST_TIMEOUT_S)
    except requests.RequestException as exc:
        clog.fail(f"{type(exc).__name__}: {exc}")
        return None
    done = time.perf_counter()
    clog.last_done = max(clog.last_done, done)
    if resp.status_code != expect:
        clog.fail(f"HTTP {resp.status_code}: {resp.text[:200]}")
        return None
    clog.latencies_ms.append((done - t) * 1000.0)
    return resp.json()


def query_client(base: str, wavs: list[tuple[str, bytes]], first: int, start: threading.Barrier,
                 deadline: list[float], clog: ClientLog) -> None:
    """Post the excerpts in turn (from `first` on) until the deadline."""
    with requests.Session() as s:
        start.wait()
        i = first
        while time.perf_counter() < deadline[0]:
            truth, wav = wavs[i % len(wavs)]
            body = _post(s, base + "/v1/query", clog, {"file": ("q.wav", wav, "audio/wav")})
            if body is not None:
                clog.correct += bool(body["matches"]) and body["matches"][0]["track_id"] == truth
            i += 1


def add_client(base: str, tracks: list[corpus.Track], prefix: str, token: str, start: threading.Barrier,
               deadline: list[float], clog: ClientLog) -> None:
    """Post whole out-of-catalog tracks to /v1/tracks (new ids) until the deadline."""
    with requests.Session() as s:
        start.wait()
        i = 0
        while time.perf_counter() < deadline[0] and i < len(tracks):
            t = tracks[i]
            with open(t.path, "rb") as fh:
                data = fh.read()
            _post(s, base + "/v1/tracks", clog, {"file": (Path(t.path).name, data)},
                  data={"track_id": f"{prefix}/{t.track_id}"}, headers={"Authorization": f"Bearer {token}"},
                  expect=201)
            i += 1


def cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its descendants, those still running and
    those it has waited for (the server's workers, ffmpeg): utime + stime +
    cutime + cstime of each live process in the tree, from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:  # it ended meanwhile: its parent's cutime has it
        return 0.0
    children = []
    for task in tasks:  # each thread's own children (ffmpeg is started by request threads)
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:
            pass
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK") + sum(map(cpu_seconds, children))


def machine_busy_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as fh:
        f = [int(x) for x in fh.readline().split()[1:]]
    return sum(f) - f[3] - f[4], sum(f)  # idle and iowait are not busy


def run_level(base: str, pid: int, wavs: list[tuple[str, bytes]], clients: int, seconds: float,
              adder: tuple | None = None) -> dict:
    """`clients` query clients (plus the adder's, when given) for `seconds`."""
    logs = [ClientLog() for _ in range(clients)]
    add_log = ClientLog()
    start = threading.Barrier(clients + (adder is not None) + 1)
    deadline = [float("inf")]
    threads = [threading.Thread(target=query_client, args=(base, wavs, k * len(wavs) // clients, start, deadline, c))
               for k, c in enumerate(logs)]
    if adder is not None:
        threads.append(threading.Thread(target=add_client, args=(base, *adder, start, deadline, add_log)))
    for th in threads:
        th.start()
    cpu0, client_cpu0, machine0 = cpu_seconds(pid), time.process_time(), machine_busy_jiffies()
    start.wait()
    t0 = time.perf_counter()
    deadline[0] = t0 + seconds
    for th in threads:
        th.join()
    wall = max([c.last_done for c in logs] + [add_log.last_done, t0 + 1e-9]) - t0
    server_cpu, client_cpu = cpu_seconds(pid) - cpu0, time.process_time() - client_cpu0
    machine1 = machine_busy_jiffies()
    lat = [v for c in logs for v in c.latencies_ms]
    ok = len(lat)
    out = {
        "clients": clients, "seconds": round(wall, 2), "requests": ok + sum(c.failures for c in logs),
        "ok": ok, "failed": sum(c.failures for c in logs), "errors": [e for c in logs for e in c.errors][:MAX_ERRORS_KEPT],
        "throughput_rps": round(ok / wall, 2),
        "p50_ms": round(float(np.percentile(lat, 50)), 1) if lat else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 1) if lat else None,
        "correct_top": sum(c.correct for c in logs),
        "server_cores_busy": round(server_cpu / wall, 2),
        "server_cpu_ms_per_request": round(1000 * server_cpu / max(ok, 1), 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "client_cores_busy": round(client_cpu / wall, 2),
        # Every core's busy share over the level: when it is near the core count
        # and the server's is not, other work on the machine took the rest.
        "machine_cores_busy": round((os.cpu_count() or 1) * (machine1[0] - machine0[0])
                                    / max(machine1[1] - machine0[1], 1), 2),
    }
    if adder is not None:
        out["adds"] = {"ok": len(add_log.latencies_ms), "failed": add_log.failures, "errors": add_log.errors,
                       "p50_ms": round(float(np.percentile(add_log.latencies_ms, 50)), 1) if add_log.latencies_ms else None,
                       "audio_seconds": round(sum(t.duration for t in adder[0][: len(add_log.latencies_ms)]), 1)}
    log(f"{clients} clients{' + adder' if adder else ''}: {out['throughput_rps']} req/s, p50 {out['p50_ms']} ms, "
        f"p99 {out['p99_ms']} ms, {out['failed']} failed, server {out['server_cores_busy']} cores "
        f"(machine {out['machine_cores_busy']})")
    return out


def measure_load(index_src: Path, work: Path, tracks: list[corpus.Track], seconds: float, rounds: int = 1,
                 threads: int = SERVER_THREADS, workers: int = SERVER_WORKERS) -> dict:
    """Every level against one server on a copy of `index_src`, `rounds`
    times in turn (1, 4, 16, 1, 4, 16, ...); each level is reported by its
    round of highest throughput, the least disturbed by other work on a
    shared machine (every round is kept in the results)."""
    index_dir = work / "indexes" / "load"
    if index_dir.exists():
        shutil.rmtree(index_dir)
    shutil.copytree(index_src, index_dir)
    plan = core.latency_excerpts(tracks, N_EXCERPTS)
    wavs = [(ex.track_id, core.wav_bytes(c.y, c.sr)) for ex, c in zip(plan, map(core.cut_excerpt, plan))]
    out_tracks = sorted((t for t in tracks if t.split == "out"), key=lambda t: t.track_id)
    token = secrets.token_hex(16)
    port = core.free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = work / "tmp" / "load-serve.log"
    proc = core.start_server(index_dir, port, log_path, threads, {"SIMSEARCH_API_KEYS": f"write:{token}"}, workers)
    try:
        why_not = core.wait_ready(proc, base + "/v1/health", log_path, core.SERVER_START_TIMEOUT_S)
        if why_not is not None:
            log(f"skipped: {why_not}")
            return {"skipped": why_not}
        with requests.Session() as s:  # warm-up: the first query pays for anything lazy
            s.post(base + "/v1/query", files={"file": ("q.wav", wavs[0][1], "audio/wav")}, timeout=REQUEST_TIMEOUT_S)
        all_rounds = [[run_level(base, proc.pid, wavs, n, seconds) for n in CLIENT_LEVELS] for _ in range(rounds)]
        adding = run_level(base, proc.pid, wavs, ADD_LEVEL, seconds, (out_tracks, f"load-{int(time.time())}", token))
    finally:
        core.stop_server(proc)
    levels = [max(same, key=lambda lv: lv["throughput_rps"]) for same in zip(*all_rounds)]
    by_n = {lv["clients"]: lv for lv in levels}
    return {
        "server_workers": workers, "server_threads": threads, "seconds_per_level": seconds, "rounds": rounds, "excerpt_s": core.LATENCY_LENGTH_S,
        "excerpts": len(wavs), "cores": os.cpu_count(), "levels": levels, "all_rounds": all_rounds,
        "while_adding": adding,
        "ratio_16_to_1": round(by_n[16]["throughput_rps"] / by_n[1]["throughput_rps"], 2),
        "failed_total": sum(lv["failed"] for r in all_rounds for lv in r) + adding["failed"] + adding["adds"]["failed"],
    }
