"""Drives audfprint (the audfprint2 distribution on PyPI) for benchmarks/peer.py.

Runs inside the peer's own virtual environment (python -I, with nothing of
simsearch importable), so it imports only the standard library, numpy and
audfprint2.  Parameters are audfprint's command-line defaults (its
setup_analyzer / setup_matcher): density 20 hashes/s, 5 peaks per frame,
fan-out 3, 20-bit hashes, 100 entries per bucket, 11,025 Hz, one time shift
when indexing and 4 when matching, a match needs more than 5 aligned
landmarks at its best time skew (window 2 frames).

    python -I audfprint_driver.py index DB LIST NCORES    one audio path per line of LIST
    python -I audfprint_driver.py match DB LIST NCORES    one query path per line of LIST

Prints one JSON object (index) or one JSON line per query (match) on stdout.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
import time

from audfprint2 import cli
from audfprint2.core import hash_table

_HT = None
_ANALYZER = None
_MATCHER = None


def analyzer(is_match: bool):
    return cli.setup_analyzer(density=20.0, is_match=is_match, pks_per_frame=5, fanout=3, freq_sd=30.0, shifts=0,
                              samplerate=11025, continue_on_error=False, ffmpeg_path=None)


def matcher():
    return cli.setup_matcher(match_win=2, search_depth=100, min_count=5, max_matches=1, exact_count=False,
                             find_time_range=False, time_quantile=0.05, sortbytime=False, illustrate=False,
                             illustrate_hpf=False)


def index(db: str, paths: list[str], ncores: int) -> dict:
    """audfprint's own multi-process `new`: one hash table per process, merged, saved."""
    t0 = time.perf_counter()
    ht = hash_table.HashTable(hashbits=20, depth=100, maxtime=16384)
    cli.multiproc_add(analyzer(False), ht, paths, None, ncores)
    t1 = time.perf_counter()
    ht.params["samplerate"] = 11025
    ht.save(db)
    t2 = time.perf_counter()
    return {"tracks": len(ht.names), "hashes": int(ht.totalhashes()), "wall_seconds": round(t1 - t0, 2),
            "save_seconds": round(t2 - t1, 2), "bytes_on_disk": os.path.getsize(db),
            "table_bytes_in_memory": int(ht.table.nbytes), "ncores": ncores}


def _init(db: str) -> None:
    global _HT, _ANALYZER, _MATCHER
    if _HT is None:  # forked from the parent, which loaded it already
        _HT = hash_table.HashTable(db)
    _ANALYZER, _MATCHER = analyzer(True), matcher()


def _match(path: str) -> dict:
    t0 = time.perf_counter()
    rows, dur, nhash = _MATCHER.match_file(_ANALYZER, _HT, path)
    ms = (time.perf_counter() - t0) * 1000.0
    t_hop = _ANALYZER.n_hop / _ANALYZER.target_sr
    if len(rows) == 0:
        return {"path": path, "top": None, "aligned": 0, "raw": 0, "offset_s": None, "hashes": nhash,
                "elapsed_ms": round(ms, 1)}
    tid, aligned, aligntime, raw = (int(x) for x in rows[0][:4])
    return {"path": path, "top": _HT.names[tid], "aligned": aligned, "raw": raw,
            "offset_s": round(aligntime * t_hop, 3), "hashes": nhash, "elapsed_ms": round(ms, 1)}


def match(db: str, paths: list[str], ncores: int) -> None:
    global _HT
    t0 = time.perf_counter()
    _HT = hash_table.HashTable(db)
    load_s = time.perf_counter() - t0
    with open("/proc/self/status") as fh:  # VmHWM: ru_maxrss would carry the parent's peak across exec
        rss = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:"))
    print(json.dumps({"load_seconds": round(load_s, 2), "maxrss_after_load_bytes": rss}), flush=True)
    with mp.get_context("fork").Pool(ncores, initializer=_init, initargs=(db,)) as pool:
        for rec in pool.imap(_match, paths, chunksize=4):
            print(json.dumps(rec), flush=True)


def main() -> None:
    cmd, db, listfile, ncores = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    with open(listfile) as fh:
        paths = [line.rstrip("\n") for line in fh if line.strip()]
    if cmd == "index":
        print(json.dumps(index(db, paths, ncores)))
    elif cmd == "match":
        match(db, paths, ncores)
    else:
        raise SystemExit(f"unknown command {cmd!r}")


if __name__ == "__main__":
    main()
