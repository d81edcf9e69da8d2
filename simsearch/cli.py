"""Command line: build, add, remove, query, serve, info, check, repair."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

from .audio import DecodeLimits
from .auth import ENV_VAR, load_keys
from .config import LIST_TARGET, ApiConfig, MatchConfig
from .errors import IndexNotFound, ParameterError, SimsearchError

DEFAULT_INDEX = "indexes/default"


def _index_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("index_dir", nargs="?", default=DEFAULT_INDEX,
                   help=f"index directory (default: {DEFAULT_INDEX})")


def _list_target_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--list-target", type=int, default=LIST_TARGET, metavar="N",
                   help="mean entries per inverted list the serving table is sized for: its number of lists "
                        f"is chosen from the catalog size (default: {LIST_TARGET}; fewer lists, less memory, "
                        "more scanning per probe)")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="simsearch", description="Audio fingerprint similarity search.")
    sub = ap.add_subparsers(dest="cmd", required=True)

    b = sub.add_parser("build", help="build a new index from SOURCEs and switch to it atomically")
    b.add_argument("index_dir")
    b.add_argument("sources", nargs="+", metavar="SOURCE", help="audio file, directory or .tsv of track_id<TAB>path")
    b.add_argument("--jobs", type=int, default=os.cpu_count(), help="extraction processes (default: all cores)")
    b.add_argument("--quiet", action="store_true", help="no progress bar")

    a = sub.add_parser("add", help="add tracks to an index (created if missing)")
    a.add_argument("index_dir")
    a.add_argument("sources", nargs="+", metavar="SOURCE")

    r = sub.add_parser("remove", help="remove tracks by id")
    r.add_argument("index_dir")
    r.add_argument("track_ids", nargs="+", metavar="TRACK_ID")

    q = sub.add_parser("query", help="find the catalog tracks each SOURCE copies")
    q.add_argument("index_dir")
    q.add_argument("sources", nargs="+", metavar="SOURCE")
    q.add_argument("--json", action="store_true", help="one JSON line per query")
    q.add_argument("--top-k", type=int, default=MatchConfig.top_k)
    q.add_argument("--min-score", type=float, default=MatchConfig.min_score)
    q.add_argument("--hits", action="store_true", help="include aligned hits in the JSON")
    _list_target_arg(q)

    s = sub.add_parser("serve", help="serve the HTTP API with a production WSGI server (waitress)")
    _index_arg(s)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="server processes sharing the port, each with its own copy of the index "
                        "(default: the number of cores)")
    s.add_argument("--threads", type=int, default=max(4, os.cpu_count() or 1), help="threads per worker process")
    s.add_argument("--max-upload-mb", type=float, default=64.0, help="largest upload accepted (default: 64)")
    s.add_argument("--max-duration-s", type=float, default=DecodeLimits.max_duration_s,
                   help=f"longest audio accepted (default: {DecodeLimits.max_duration_s:g})")
    s.add_argument("--decode-timeout-s", type=float, default=DecodeLimits.timeout_s,
                   help=f"wall-clock bound on one decode (default: {DecodeLimits.timeout_s:g})")
    s.add_argument("--max-decodes", type=int, default=ApiConfig.max_concurrent_decodes,
                   help="uploads decoded at once, over all workers (each takes its share, at least one); "
                        "others wait up to --decode-wait-s, then get 503 (default: the number of cores)")
    s.add_argument("--decode-wait-s", type=float, default=ApiConfig.decode_wait_s)
    s.add_argument("--keys-file", help="API keys, one 'ROLE TOKEN' per line (ROLE: read or write); "
                                       f"also read from ${ENV_VAR} as ROLE:TOKEN,ROLE:TOKEN")
    s.add_argument("--keys-for-reads", action="store_true", help="queries and reads need a key too")
    s.add_argument("--media-root", action="append", default=[], metavar="DIR",
                   help="a directory whose audio files GET /v1/audio (and the review page) may play: a track's "
                        "recorded source file must lie inside one (repeatable; default: none, catalog audio off)")
    s.add_argument("--no-auth", action="store_true",
                   help="no key needed for anything, writes included (a trusted network only)")
    _list_target_arg(s)

    i = sub.add_parser("info", help="tracks, hours, vectors, bytes on disk and in memory, configuration")
    _index_arg(i)
    _list_target_arg(i)

    c = sub.add_parser("check", help="verify every index file (checksums, HDF5, configuration); exit 1 if damaged")
    _index_arg(c)

    rp = sub.add_parser("repair", help="switch to a new generation without the damaged segments, "
                                       "listing the tracks to re-add")
    _index_arg(rp)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.cmd](args)
    except SimsearchError as exc:
        print(f"simsearch {args.cmd}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"simsearch {args.cmd}: interrupted", file=sys.stderr)
        return 130


def _cmd_build(args) -> int:
    from .build import build
    from .sources import expand_sources

    sources = expand_sources(args.sources)
    report = build(args.index_dir, sources, jobs=args.jobs, progress=not args.quiet)
    summary = report.to_json()
    summary.pop("failures")
    print(json.dumps(summary))
    for t, p, e in report.failures:
        print(f"failed\t{t}\t{p}\t{e}", file=sys.stderr)
    return 1 if report.failures and report.tracks == 0 else 0


def _open_or_create(index_dir: str):
    from .build import create_empty
    from .engine import Engine

    try:
        return Engine(index_dir)
    except IndexNotFound:
        create_empty(Path(index_dir))
        return Engine(index_dir)


def _cmd_add(args) -> int:
    from .engine import fingerprint_source
    from .sources import expand_sources

    eng = _open_or_create(args.index_dir)
    failures = 0
    chunk, seen = [], set()
    for track_id, path in expand_sources(args.sources):
        try:
            if track_id in seen:
                raise SimsearchError(f"track id {track_id!r} is given twice among the sources; the first one is kept")
            seen.add(track_id)
            eng.check_new_id(track_id)
            d, codes, tr = fingerprint_source(path, eng.config, eng.limits)
            chunk.append((track_id, d, str(Path(path).resolve()), {}, codes, tr))
        except SimsearchError as exc:
            failures += 1
            print(f"failed\t{track_id}\t{path}\t{exc}", file=sys.stderr)
        if len(chunk) >= 100:
            eng.add_fingerprints(chunk)
            chunk = []
    if chunk:
        eng.add_fingerprints(chunk)
    print(json.dumps({"tracks": len(eng.tracks), "failed": failures}))
    return 1 if failures else 0


def _cmd_remove(args) -> int:
    from .engine import Engine

    eng = Engine(args.index_dir)
    missing = 0
    for tid in args.track_ids:
        try:
            eng.remove(tid)
        except SimsearchError as exc:
            missing += 1
            print(f"simsearch remove: {exc}", file=sys.stderr)
    print(json.dumps({"tracks": len(eng.tracks), "not_found": missing}))
    return 1 if missing else 0


def _cmd_query(args) -> int:
    from .engine import Engine
    from .sources import expand_sources

    eng = Engine(args.index_dir, list_target=args.list_target)
    mcfg = eng.match_config.replace(top_k=args.top_k, min_score=args.min_score)
    failures = 0
    for _, path in expand_sources(args.sources):
        try:
            res = eng.query(path, mcfg)
        except SimsearchError as exc:
            failures += 1
            if args.json:
                print(json.dumps({"query": path, "error": exc.code, "message": str(exc)}), flush=True)
            else:
                print(f"{path}\terror: {exc}", flush=True)
            continue
        if args.json:
            body = res.to_json(args.hits)
            print(json.dumps({"query": path, "matches": body["matches"], "elapsed_ms": body["elapsed_ms"]}), flush=True)
        else:
            if not res.matches:
                print(f"{path}\tno match\t({res.elapsed_ms:.1f} ms)", flush=True)
            for m in res.matches:
                print(f"{path}\t{m.track_id}\tscore {m.score:.1f}\t{m.kind}\tquery {m.query_start:.2f}-{m.query_end:.2f} s"
                      f"\tref {m.ref_start:.2f}-{m.ref_end:.2f} s\tspeed {m.speed:.3f}\tpitch {m.pitch_semitones:+.2f}"
                      + "".join(f"\talso ref {r.ref_start:.2f}-{r.ref_end:.2f} s" for r in m.repeats)
                      + f"\t({res.elapsed_ms:.1f} ms)", flush=True)
    return 1 if failures else 0


def _cmd_serve(args) -> int:
    from . import server
    from .api import create_app
    from .engine import Engine

    logging.basicConfig(level=logging.INFO, format="%(asctime)s [%(process)d] %(name)s %(levelname)s %(message)s")
    log = logging.getLogger("simsearch")
    keys = load_keys(args.keys_file)
    if args.keys_for_reads and not keys and not args.no_auth:
        raise ParameterError("--keys-for-reads needs API keys (--keys-file or $SIMSEARCH_API_KEYS)")
    if min(args.max_upload_mb, args.max_duration_s, args.decode_timeout_s, args.decode_wait_s) <= 0 \
            or min(args.max_decodes, args.workers, args.threads) < 1:
        raise ParameterError("limits, --workers and --threads must be positive")
    try:
        sock = server.bind(args.host, args.port)
    except OSError as exc:
        raise SimsearchError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    limits = DecodeLimits(max_duration_s=args.max_duration_s, timeout_s=args.decode_timeout_s)
    # Loaded and warmed up once, here: forked workers inherit it (copy-on-write).
    eng = Engine(args.index_dir, limits=limits, list_target=args.list_target)
    _warm_up(eng)
    api_config = ApiConfig(max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
                           max_concurrent_decodes=args.max_decodes, decode_wait_s=args.decode_wait_s,
                           keys=keys, keys_for_reads=args.keys_for_reads, open_access=args.no_auth,
                           media_roots=tuple(str(Path(d).resolve()) for d in args.media_root))
    log.info("serving %s (%d tracks) on http://%s:%d/v1 with %d worker process(es) of %d threads",
             args.index_dir, len(eng.tracks), args.host, args.port, args.workers, args.threads)
    if args.no_auth:
        log.warning("--no-auth: anyone who reaches this port may add and delete tracks")
    elif not keys:
        log.warning("no API keys: adding and deleting tracks is disabled (see --keys-file)")
    else:
        log.info("API keys: %s; reads need a key: %s", keys.roles(), args.keys_for_reads)

    def serve_worker(slot: int, parent: int | None) -> None:
        # --max-decodes is for the whole server: each worker takes its share, at least one.
        share = max(1, args.max_decodes // args.workers + (slot < args.max_decodes % args.workers))
        app = create_app(eng, dataclasses.replace(api_config, max_concurrent_decodes=share))
        srv = server.make_server(app, sock, args.threads, upload_limit_bytes=api_config.max_upload_bytes)
        if parent is not None:
            log.info("worker %d ready", slot)
        server.run(srv, parent)

    if args.workers == 1:
        serve_worker(0, None)
        return 0
    return server.supervise(args.workers, serve_worker)


def _warm_up(eng) -> None:
    """Compile the numba kernels before the first request."""
    from . import matching
    from .features import Peaks

    rng = np.random.default_rng(0)
    eng.query_samples((rng.standard_normal(eng.config.sample_rate * 3) * 0.1).astype(np.float32))
    # Locating runs only on a match, which noise does not give.
    peaks = Peaks(np.arange(3.0), np.zeros(3), np.zeros(3, np.float32))
    matching.locate_range(np.arange(3.0), np.zeros(3), 1.0, 0.0, 0.0, 1.0, 1.0, peaks, 3, eng.config,
                          eng.match_config)


def _cmd_info(args) -> int:
    from .engine import Engine

    print(json.dumps(Engine(args.index_dir, list_target=args.list_target).stats(), indent=2))
    return 0


def _cmd_check(args) -> int:
    from .build import scan

    report = scan(args.index_dir)
    print(json.dumps(report.to_json(), indent=2))
    if not report.ok:
        print(f"simsearch check: {args.index_dir} is damaged; recover with `simsearch repair {args.index_dir}`",
              file=sys.stderr)
    return 0 if report.ok else 1


def _cmd_repair(args) -> int:
    from .build import repair

    report = repair(args.index_dir)
    body = report.to_json()
    lost = [t for d in report.damaged for t in (d["track_ids"] or [])]
    body["lost_track_ids"] = lost
    body["unknown_losses"] = sum(1 for d in report.damaged if d["track_ids"] is None)
    print(json.dumps(body, indent=2))
    if report.damaged:
        print(f"simsearch repair: dropped {len(report.damaged)} damaged segment(s); re-add their tracks "
              f"({len(lost)} known ids listed above) with `simsearch add`", file=sys.stderr)
    if report.removed_damaged:
        print("simsearch repair: the list of removed tracks was damaged: removed tracks are back; "
              "remove them again", file=sys.stderr)
    return 0


_COMMANDS = {"build": _cmd_build, "add": _cmd_add, "remove": _cmd_remove, "query": _cmd_query,
             "serve": _cmd_serve, "info": _cmd_info, "check": _cmd_check, "repair": _cmd_repair}
