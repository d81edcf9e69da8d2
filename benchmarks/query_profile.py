"""Where a query's time goes on the scale ladder's 1,000 h rung, and what the
lookup bound alone buys: two versions of the engine side by side.

    nice -n 5 .venv/bin/python -m benchmarks.query_profile [--base REV] [--head REV] [--rounds 2]
        [--budgets 0.1,0.25,0.5,1,2,4] [--rung DIR] [--queries NPZ] [--limit N]

The base commit's engine (A: its `simsearch` package exported to a scratch
directory; by default where this branch leaves main) and this tree's (B; or
the commit `--head`) each query the ladder's 10 s excerpts
(benchmarks.scale's prepared queries: catalog and out-of-catalog tracks,
clean, MP3 and pink noise) at every `max_lookup_entries` of `--budgets`,
the order of the bounds rotated from query to query; A and B alternate,
A B A B (`--rounds`), each run a fresh process that opens the rung once, so
that the machine's load (other work shares it) falls on both alike.  Every
stage of the query path is timed, per pass (`Stages`).  Recall@1 and false
alarms at the default threshold (min_score), as the ladder counts them; whether A's and B's answers
differ.

Writes benchmarks/results/query_profile.json (per query: time, answer, stage
times, lookup sizes; summaries) and query_profile.md, with the 1-minute load
average of every run.

The rung is opened with `Engine`, which streams its segments into the table
(the measuring process stays under 6 GB): A and B must both have the streamed
load (main from 2eb93fa on).  Its figures in benchmarks/results/query_profile*
were measured before that merge, with a segment-by-segment layout of the same
table written by this module then.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
RUNG_NAME = "1000h"
LENGTH_S = 10.0
BUDGETS_M = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
GiB = 1 << 30
MEMORY_LIMIT = 5 * GiB  # private memory above start-up (the table's mapped file comes on top: ~1 GB)


# -- opening a rung ------------------------------------------------------------------------

def open_rung(index_dir: Path):
    """Engine of `index_dir`, without its checksums' second read.  Engine
    streams the segments into the table (index.TableBuilder): ~13 bytes per
    entry at peak, 1.6 GB at 1,000 h.  Both A and B must be commits with the
    streamed load (main from 2eb93fa on): an engine before it peaks near 99
    bytes per entry, past MEMORY_LIMIT."""
    from simsearch import engine

    return engine.Engine(index_dir, verify=False)


# -- timing the stages of the query path -------------------------------------------------

# (owner, attribute, stage): the functions of the query path timed, each
# inclusive of what it calls; an attribute a version of the engine lacks is
# skipped.  "search" is one pass (narrow, then wide when it runs).
STAGES = (
    ("simsearch.features", "log_spectrogram", "spectrogram"),
    ("simsearch.features", "spectral_peaks", "peaks"),
    ("simsearch.features", "dense_peaks", "dense_peaks"),
    ("simsearch.features", "near_grid", "near_grid"),
    ("simsearch.features", "peak_triplets", "triplets"),
    ("simsearch.features", "query_probes", "probes"),
    ("simsearch.index:HashIndex", "lookup", "lookup"),
    ("simsearch.index:HashIndex", "within_budget", "budget"),
    ("simsearch.index:_ListTable", "lookup", "faiss"),
    ("simsearch.matching", "gather_hits", "gather"),
    ("simsearch.matching", "align_hits", "align"),
    ("simsearch.matching", "_promising_tracks", "promising"),
    ("simsearch.matching", "_align_track", "align_track"),
    ("simsearch.matching", "verify", "verify"),
    ("simsearch.engine:Engine", "_search", "search"),
    ("simsearch.engine:Engine", "_located", "locate"),
)
PASS_STAGES = {"probes", "lookup", "budget", "faiss", "gather", "align", "promising", "align_track", "verify",
               "search", "triplets"}


class Stages:
    """Seconds and calls per stage of one query, keyed "pass.stage" for the
    stages inside a pass (narrow: the first search, wide: the second), and
    the sizes a pass handles (probes, hits, candidates)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.seconds: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.passes = 0

    def key(self, stage: str) -> str:
        """The wide pass's triplets are made after the narrow pass (passes == 1);
        every other pass stage runs inside a search (passes 1 or 2)."""
        if stage not in PASS_STAGES:
            return stage
        wide = self.passes >= (1 if stage == "triplets" else 2)
        return f"{'wide' if wide else 'narrow'}.{stage}"

    def count(self, name: str, n: int) -> None:
        k = f"{'wide' if self.passes >= 2 else 'narrow'}.{name}"
        self.counts[k] = self.counts.get(k, 0) + int(n)

    def wrap(self, stage: str, fn):
        def timed(*args, **kwargs):
            if stage == "search":
                self.passes += 1
            key = self.key(stage)
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - t0
            self._sizes(stage, out)
            return out
        return timed

    def _sizes(self, stage: str, out) -> None:
        if stage == "probes":
            self.count("probes", len(out[0]))
        elif stage == "budget":
            self.count("probes_kept", int(np.count_nonzero(out)))
        elif stage == "lookup":
            self.count("entries", len(out[1]))
        elif stage == "gather":
            self.count("hits", len(out))
        elif stage == "align":
            self.count("candidates", len(out))
        elif stage == "verify":
            self.count("verified", 1)

    @contextmanager
    def installed(self):
        """Every STAGES function wrapped, for as long as the context lasts."""
        import importlib

        undo = []
        for owner, attr, stage in STAGES:
            mod, _, cls = owner.partition(":")
            obj = importlib.import_module(mod)
            obj = getattr(obj, cls) if cls else obj
            if attr in vars(obj):
                undo.append((obj, attr, vars(obj)[attr]))
                setattr(obj, attr, self.wrap(stage, getattr(obj, attr)))
        try:
            yield self
        finally:
            for obj, attr, fn in undo:
                setattr(obj, attr, fn)


# -- one measuring process -------------------------------------------------------------

def catalog_sources(eng) -> list[str]:
    """The real catalog's track ids in number order: what distractors are made from (scale.made_from)."""
    from .scale import DISTRACTOR_PREFIX

    return [eng.by_number[n] for n in sorted(eng.by_number) if not eng.by_number[n].startswith(DISTRACTOR_PREFIX)]


def measure(rung: Path, queries: Path, length_s: float, budgets: list[int], limit: int | None,
            out_path: Path, memory_limit: int = MEMORY_LIMIT) -> None:
    """Open `rung`, then query each `length_s` excerpt (0: every one) of `queries` at every
    bound in `budgets` (the order rotated from query to query); the records
    go to `out_path` (JSON)."""
    import faiss

    from simsearch import engine
    from simsearch.config import MatchConfig

    from .lookups import rss_bytes
    from .scale import load_queries, query_record

    faiss.omp_set_num_threads(1)
    samples, offsets, meta = load_queries(queries)
    picked = [i for i, m in enumerate(meta) if m["length_s"] == length_s or not length_s][:limit]
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    resource.setrlimit(resource.RLIMIT_DATA, (rss_bytes("VmData") + memory_limit, hard))
    t0 = time.perf_counter()
    eng = open_rung(rung)
    load = {"seconds": round(time.perf_counter() - t0, 1), "peak_rss_bytes": rss_bytes("VmHWM"),
            "entries": int(eng.index.ntotal), "tracks": len(eng.tracks)}
    gc.collect()
    engine.release_free_memory()
    load["rss_bytes"] = rss_bytes("VmRSS")
    print(f"[query_profile] opened {rung} in {load['seconds']} s, peak RSS {load['peak_rss_bytes'] / GiB:.2f} GiB; "
          f"{len(picked)} queries x {len(budgets)} bounds", file=sys.stderr, flush=True)
    sources = catalog_sources(eng)
    noise = np.random.default_rng(0).standard_normal(3 * eng.config.sample_rate).astype(np.float32)
    eng.query_samples(0.1 * noise)  # numba kernels compiled before the first timed query
    configs = {b: MatchConfig(min_score=0.0, max_lookup_entries=b) for b in budgets}
    for b in budgets:  # one real query per bound, untimed: warm caches alike
        eng.query_samples(samples[offsets[picked[0]]: offsets[picked[0] + 1]], configs[b])
    stages = Stages()
    records = []
    t_start = time.perf_counter()
    with stages.installed():
        for n, i in enumerate(picked):
            y = samples[offsets[i]: offsets[i + 1]]
            m = meta[i]
            source = sources.index(m["track_id"]) if m["track_id"] in sources else -1
            for b in budgets[n % len(budgets):] + budgets[: n % len(budgets)]:
                stages.reset()
                res = eng.query_samples(y, configs[b])
                r = query_record(m, res, 0, source, len(sources))
                r.pop("peak_bytes")
                records.append(r | {"query": i, "budget": b, "load_1min": round(os.getloadavg()[0], 2),
                                    "stages_ms": {k: round(v * 1e3, 3) for k, v in stages.seconds.items()},
                                    "counts": dict(stages.counts)})
            if n % 50 == 49:
                print(f"[query_profile] {n + 1} of {len(picked)} queries, {time.perf_counter() - t_start:.0f} s, "
                      f"load {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
    from simsearch import __file__ as code

    result = {"rung": str(rung), "queries": str(queries), "length_s": length_s, "budgets": budgets,
              "code": str(Path(code).parent), "load": load, "query_seconds": round(time.perf_counter() - t_start, 1),
              "records": records}
    tmp = out_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, out_path)


def ladder_paths() -> tuple[Path, Path]:
    """The rung and the prepared queries of the ladder's last full run
    (benchmarks/results/scale.json): WORK/scale/rungs/RUNG_NAME, and the
    WORK/scale/queries-*.npz holding as many queries as that run planned."""
    p = json.loads((RESULTS / "scale.json").read_text())["parameters"]
    root = Path(p["work"]) / "scale"
    for path in sorted(root.glob("queries-*.npz")):
        with np.load(path) as z:
            planned = len(json.loads(str(z["meta"])))
        if planned == p["queries"]:
            return root / "rungs" / RUNG_NAME, path
    raise SystemExit(f"no prepared queries of {p['queries']} excerpts in {root}: run benchmarks.scale first")


# -- the runs -----------------------------------------------------------------------------------

def run_worker(out: Path, rung: Path, queries: Path, length_s: float, budgets: list[int], limit: int | None,
               code: Path | None = None, memory_gib: float | None = None) -> dict:
    """`measure` in a fresh process, with `code`'s simsearch package when given
    (else this tree's); its records, and the 1-minute load average before and after."""
    cmd = [sys.executable, "-m", "benchmarks.query_profile", "--worker", str(out), "--rung", str(rung),
           "--queries", str(queries), "--length", f"{length_s:g}", "--budgets", ",".join(f"{b / 1e6:g}" for b in budgets)]
    if limit:
        cmd += ["--limit", str(limit)]
    if memory_gib:
        cmd += ["--memory-gib", f"{memory_gib:g}"]
    # `python -m` puts its working directory first on the path: the code measured.
    env = dict(os.environ, PYTHONPATH=str(REPO))
    load0 = os.getloadavg()[0]
    subprocess.run(cmd, cwd=code or REPO, env=env, check=True)
    result = json.loads(out.read_text())
    out.unlink()
    return result | {"load_1min": [round(load0, 2), round(os.getloadavg()[0], 2)]}


def export_code(rev: str, into: Path) -> str:
    """The simsearch package of commit `rev`, written under `into`; the commit's hash."""
    full = subprocess.run(["git", "rev-parse", rev], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    archive = subprocess.run(["git", "archive", full, "simsearch"], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return full


def run(a) -> dict:
    """Base (A) and head (B: this tree unless a.head) alternately, A B A B ...,
    each at every bound."""
    from simsearch.config import MatchConfig

    from .core import environment

    budgets = [int(float(b) * 1e6) for b in a.budgets.split(",")]
    runs = []
    with tempfile.TemporaryDirectory(prefix="query-profile-") as tmp:
        code = {}
        for side, rev in (("A", a.base), ("B", a.head)):
            if rev:
                code[side] = Path(tmp) / side
                code[side].mkdir()
                code[side + "_commit"] = export_code(rev, code[side])
        for k in range(a.rounds):
            for side in ("B",) if a.single else ("A", "B"):
                print(f"[query_profile] round {k + 1} of {a.rounds}: {side}", file=sys.stderr, flush=True)
                r = run_worker(Path(tmp) / f"{side}{k}.json", a.rung, a.queries, a.length, budgets, a.limit,
                               code.get(side), a.memory_gib)
                # --single: B's run stands for A too (the report's columns agree).
                runs += [r | {"side": s, "round": k + 1} for s in (("A", "B") if a.single else (side,))]
    return {"benchmark": "query_profile", "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "environment": environment(),
            "parameters": {"rung": str(a.rung), "queries": str(a.queries), "length_s": a.length, "budgets": budgets,
                           "default_budget": MatchConfig().max_lookup_entries, "rounds": a.rounds, "limit": a.limit,
                           "single": a.single,
                           "threshold": MatchConfig().min_score, "base": a.base, "base_commit": code["A_commit"],
                           "head_commit": code.get("B_commit")},
            "runs": runs}


# -- figures -------------------------------------------------------------------------------------

RECORD_COLUMNS = ("query", "track_id", "in_catalog", "transform", "budget", "elapsed_ms", "top_track", "top_score",
                  "load_1min")
# The stages reported, each pass's in the order the query runs them ("other": the rest of the pass).
REPORTED = ("spectrogram", "peaks", "dense_peaks", "near_grid", "narrow.triplets", "narrow.probes", "narrow.budget",
            "narrow.faiss", "narrow.lookup", "narrow.gather", "narrow.align", "narrow.verify", "narrow.search",
            "wide.triplets", "wide.probes", "wide.budget", "wide.faiss", "wide.lookup", "wide.gather", "wide.align",
            "wide.verify", "wide.search", "locate")
COUNTED = ("narrow.entries", "narrow.hits", "narrow.candidates", "wide.entries", "wide.hits", "wide.candidates")


def percentile(values, q: float) -> float:
    return round(float(np.percentile(values, q)), 1) if len(values) else float("nan")


def _latency(rs: list[dict]) -> dict:
    ms = [r["elapsed_ms"] for r in rs]
    return {"n": len(ms), "p50_ms": percentile(ms, 50), "p90_ms": percentile(ms, 90), "p99_ms": percentile(ms, 99),
            "max_ms": round(max(ms), 1) if ms else None,
            "load_1min_mean": round(float(np.mean([r["load_1min"] for r in rs])), 2) if rs else None}


def _stages(rs: list[dict]) -> dict:
    """Mean ms of each stage (0 where it did not run) and mean sizes over `rs`."""
    out = {k: round(float(np.mean([r["stages_ms"].get(k, 0.0) for r in rs])), 1) for k in REPORTED}
    return out | {"n": len(rs), "elapsed_ms": round(float(np.mean([r["elapsed_ms"] for r in rs])), 1),
                  "wide_pass_share": round(float(np.mean(["wide.search" in r["stages_ms"] for r in rs])), 3),
                  "out_of_catalog_share": round(float(np.mean([not r["in_catalog"] for r in rs])), 3),
                  **{f"#{k}": int(np.mean([r["counts"].get(k, 0) for r in rs])) for k in COUNTED}}


def _accuracy(rs: list[dict], threshold: float) -> dict:
    cat = [r for r in rs if r["in_catalog"]]
    out = [r for r in rs if not r["in_catalog"]]
    right = sum(r["top_track"] == r["track_id"] and r["top_score"] >= threshold for r in cat)
    alarms = sum(r["top_score"] >= threshold for r in out)
    return {"recall_at_1": round(right / len(cat), 4) if cat else None, "catalog": len(cat),
            "false_alarms": alarms, "out_of_catalog": len(out),
            "false_alarm_rate": round(alarms / len(out), 4) if out else None}


def summarize(result: dict) -> dict:
    """Per side and bound: latency (pooled over the rounds, and per round),
    accuracy (of the first round: the answers do not change from round to
    round, `answers` checks), where the time goes (the queries between the
    40th and 60th percentiles of time, and those from the 97th), and which
    queries' answers differ between the sides."""
    runs = result["runs"]
    out: dict = {"by_side": {}, "answers": {}}
    for side in ("A", "B"):
        mine = [r for r in runs if r["side"] == side]
        per_budget = {}
        for b in result["parameters"]["budgets"]:
            rs = [x for r in mine for x in r["records"] if x["budget"] == b]
            lat = sorted(rs, key=lambda x: x["elapsed_ms"])
            n = len(lat)
            per_budget[str(b)] = {
                "latency": _latency(rs),
                "latency_by_round": [_latency([x for x in r["records"] if x["budget"] == b]) for r in mine],
                "accuracy": _accuracy([x for x in mine[0]["records"] if x["budget"] == b],
                                      result["parameters"]["threshold"]),
                "stages_p40_p60": _stages(lat[int(0.4 * n): int(0.6 * n)]),
                "stages_from_p97": _stages(lat[int(0.97 * n):]),
            }
        out["by_side"][side] = per_budget
    for b in result["parameters"]["budgets"]:
        seen: dict[int, set] = {}
        for r in runs:
            for x in r["records"]:
                if x["budget"] == b:
                    seen.setdefault(x["query"], set()).add((x["top_track"], x["top_score"]))
        out["answers"][str(b)] = {"queries": len(seen), "differing": sorted(q for q, v in seen.items() if len(v) > 1)}
    return out


def compact(result: dict) -> dict:
    """The result with each run's records as columns and rows (stage times and sizes flattened)."""
    runs = []
    for r in result["runs"]:
        cols = list(RECORD_COLUMNS) + [f"ms:{k}" for k in REPORTED] + [f"#{k}" for k in COUNTED]
        rows = [[x.get(c) for c in RECORD_COLUMNS] + [x["stages_ms"].get(k) for k in REPORTED]
                + [x["counts"].get(k) for k in COUNTED] for x in r["records"]]
        runs.append({k: v for k, v in r.items() if k != "records"} | {"columns": cols, "rows": rows})
    return result | {"runs": runs}


def _why_p99(p50: dict, p99: dict, name: str) -> str:
    """Where the p50 and the p99 queries of one side spend their time, in words."""
    def share(x: dict, k: str) -> str:
        return f"{x[k]:,.0f} ms ({100 * x[k] / max(x['elapsed_ms'], 1e-9):.0f}%)"

    return (f"{name}: the queries around p50 ({p50['elapsed_ms']:,.0f} ms) ran the wide pass in "
            f"{100 * p50['wide_pass_share']:.0f}% of cases; their unit-speed pass took {share(p50, 'narrow.search')}: "
            f"lookup {share(p50, 'narrow.lookup')}, gathering hits {share(p50, 'narrow.gather')} "
            f"({p50['#narrow.entries']:,} entries read, {p50['#narrow.hits']:,} hits kept), alignment "
            f"{share(p50, 'narrow.align')}, verification {share(p50, 'narrow.verify')}. The queries from p97 "
            f"({p99['elapsed_ms']:,.0f} ms; {100 * p99['out_of_catalog_share']:.0f}% of them out of the catalog) ran "
            f"the wide pass in {100 * p99['wide_pass_share']:.0f}% of cases: unit-speed pass "
            f"{share(p99, 'narrow.search')}, wide pass {share(p99, 'wide.search')}: lookup {share(p99, 'wide.lookup')}, "
            f"gathering {share(p99, 'wide.gather')} ({p99['#wide.entries']:,} entries read, {p99['#wide.hits']:,} "
            f"hits kept: the whole range of speed and pitch drops far fewer), alignment {share(p99, 'wide.align')}.")


def expand(saved: dict) -> dict:
    """A saved (compact) result with each run's records as dicts again."""
    runs = []
    for r in saved["runs"]:
        records = []
        for row in r["rows"]:
            x = dict(zip(r["columns"], row))
            records.append({k: v for k, v in x.items() if k[:3] != "ms:" and k[:1] != "#"}
                           | {"stages_ms": {k[3:]: v for k, v in x.items() if k[:3] == "ms:" and v is not None},
                              "counts": {k[1:]: v for k, v in x.items() if k[:1] == "#" and v is not None}})
        runs.append({k: v for k, v in r.items() if k not in ("columns", "rows")} | {"records": records})
    return {k: v for k, v in saved.items() if k != "summary"} | {"runs": runs}


def _lengths(p: dict) -> str:
    return f"{p['length_s']:g} s" if p["length_s"] else "5, 10 and 15 s"


def markdown(result: dict, summary: dict) -> str:
    p = result["parameters"]
    env = result["environment"]
    side = summary["by_side"]
    d = str(p["default_budget"])
    loads = ", ".join(f"{r['side']}{r['round']} {r['load_1min'][0]:.2f}-{r['load_1min'][1]:.2f}" for r in result["runs"])
    lines = [
        f"# Query profile: {_lengths(p)} queries on the {Path(p['rung']).name} rung",
        "",
        f"{result['date']}, commit {(p.get('head_commit') or str(env.get('git_commit')))[:10]} (B) against "
        f"{p['base_commit'][:10]} "
        f"(A), {env['cpu_count']} cores, faiss {env['faiss']}, numpy {env['numpy']}. 1-minute load average around "
        f"each run: {loads} (other engineers' work shared the machine: absolute times are noisy, A and B ran "
        "alternately under the same conditions).",
        "",
        "Command: `nice -n 5 .venv/bin/python -m benchmarks.query_profile` "
        f"(`--length {p['length_s']:g} --rounds {p['rounds']} --budgets {','.join(f'{b / 1e6:g}' for b in p['budgets'])} --base {p['base'][:10]}"
        + (f" --head {p['head_commit'][:10]}" if p.get("head_commit") else "")
        + (" --single`: one engine, its run reported as both A and B). " if p.get("single") else "`). ") +
        f"Queries: the scale ladder's {side['B'][d]['accuracy']['catalog'] + side['B'][d]['accuracy']['out_of_catalog']} "
        f"{_lengths(p)} excerpts (benchmarks.scale: catalog and out-of-catalog tracks; clean, MP3 64k, pink "
        "noise 10 dB), each queried at every bound in turn (the order rotated from query to query), in a fresh "
        "process per run that opens the rung once; threshold T = "
        f"{p['threshold']:g}, as the ladder's. Times in process (`QueryResult.elapsed_ms`), every stage timed by "
        "wrapping the engine's functions (`Stages`).",
        "",
        "## Recall, false alarms and time against `max_lookup_entries`",
        "",
        "| entries a pass reads | recall@1 A / B | false alarms A / B | p50 ms A / B | p99 ms A / B | wide pass run (B) "
        "| load A / B |",
        "|---|---|---|---|---|---|---|",
    ]
    for b in p["budgets"]:
        a_, b_ = side["A"][str(b)], side["B"][str(b)]
        acc, acc_a = b_["accuracy"], a_["accuracy"]
        lines.append(f"| {b / 1e6:g} M | {100 * acc_a['recall_at_1']:.1f}% / {100 * acc['recall_at_1']:.1f}% "
                     f"(of {acc['catalog']}) | {acc_a['false_alarms']} / {acc['false_alarms']} "
                     f"(of {acc['out_of_catalog']}) | {a_['latency']['p50_ms']:,.0f} / {b_['latency']['p50_ms']:,.0f} | "
                     f"{a_['latency']['p99_ms']:,.0f} / {b_['latency']['p99_ms']:,.0f} | "
                     f"{100 * b_['stages_p40_p60']['wide_pass_share']:.0f}% of p40-p60, "
                     f"{100 * b_['stages_from_p97']['wide_pass_share']:.0f}% from p97 | "
                     f"{a_['latency']['load_1min_mean']:.2f} / {b_['latency']['load_1min_mean']:.2f} |")
    same = all(not v["differing"] for v in summary["answers"].values())
    lines += ["", "Answers of A and B: " + (
        "every query's top match and score are identical in every run of both." if same else
        "queries whose top match or score differ between A and B (or between runs), of "
        f"{next(iter(summary['answers'].values()))['queries']}: " + ", ".join(
            f"{len(v['differing'])} at {int(b) / 1e6:g} M" for b, v in summary["answers"].items())
        + " (their numbers in the JSON's summary.answers)."),
        "", "Recall@1: catalog excerpts whose top match is their own track at >= T; false alarms: out-of-catalog "
        "excerpts with any match >= T (matches to a distractor made from the excerpt's own track left out, as in "
        "the ladder). A's figures are what the bound alone gives: it keeps the probes of the smallest lists."]
    lines += ["", f"## Where the time goes at the default bound ({int(d) / 1e6:g} M entries a pass)", "",
              "Mean ms per stage over the queries between the 40th and 60th percentiles of time (p50) and from "
              "the 97th (p99); A before, B after. Lookup includes the bound (`budget`) and FAISS's search or the "
              "direct read of its lists (`faiss`).", "",
              "| stage | p50 A | p50 B | p99 A | p99 B |", "|---|---|---|---|---|"]
    a50, b50, a99, b99 = (side[s][d][k] for s, k in (("A", "stages_p40_p60"), ("B", "stages_p40_p60"),
                                                     ("A", "stages_from_p97"), ("B", "stages_from_p97")))
    for k in REPORTED + ("elapsed_ms", "wide_pass_share") + tuple(f"#{c}" for c in COUNTED):
        lines.append(f"| {k} | " + " | ".join(f"{x[k]:,}" for x in (a50, b50, a99, b99)) + " |")
    lines += ["", _why_p99(a50, a99, "A"), "", _why_p99(b50, b99, "B")]
    lines += ["", "## A and B run by run", "", "| run | load | " + " | ".join(
        f"{b / 1e6:g} M p50 / p99 ms" for b in p["budgets"]) + " |", "|---|---|" + "---|" * len(p["budgets"])]
    for r in result["runs"]:
        k = r["round"] - 1
        cells = [f"{side[r['side']][str(b)]['latency_by_round'][k]['p50_ms']:,.0f} / "
                 f"{side[r['side']][str(b)]['latency_by_round'][k]['p99_ms']:,.0f}" for b in p["budgets"]]
        lines.append(f"| {r['side']}{r['round']} | {r['load_1min'][0]:.2f}-{r['load_1min'][1]:.2f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.query_profile", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rung", type=Path, help=f"index directory (default: the ladder's {RUNG_NAME} rung, "
                                              "as benchmarks/results/scale.json's run left it)")
    ap.add_argument("--queries", type=Path, help="prepared queries (default: that run's)")
    ap.add_argument("--length", type=float, default=LENGTH_S, help="the queries' length, seconds (0: all)")
    ap.add_argument("--budgets", default=",".join(f"{b:g}" for b in BUDGETS_M),
                    help="max_lookup_entries to measure, millions")
    ap.add_argument("--limit", type=int, default=None, help="only the first N queries of the length")
    ap.add_argument("--base", default=None, help="the commit measured as A (default: where this branch "
                                                "leaves main, git merge-base main HEAD)")
    ap.add_argument("--head", default=None, help="the commit measured as B (default: this tree as it is)")
    ap.add_argument("--rounds", type=int, default=2, help="A B pairs")
    ap.add_argument("--single", action="store_true", help="measure B only (this tree or --head), one run per "
                                                          "round: the bound's sweep on one engine")
    ap.add_argument("--memory-gib", type=float, default=None,
                    help=f"private memory a measuring process may take above start-up (default "
                         f"{MEMORY_LIMIT / GiB:g}; the 10,000 h rung takes ~12)")
    ap.add_argument("--out", type=Path, default=RESULTS / "query_profile.json")
    ap.add_argument("--report", type=Path, default=None, help="print (and write beside it) the markdown of a "
                                                               "saved result again, and lay its JSON out again")
    ap.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)  # one measuring process
    a = ap.parse_args(argv)
    if a.report:
        saved = json.loads(a.report.read_text())
        text = markdown(expand(saved), summarize(expand(saved)))
        write_json(a.report, saved)
        a.report.with_suffix(".md").write_text(text)
        print(text)
        return
    a.base = a.base or subprocess.run(["git", "merge-base", "main", "HEAD"], cwd=REPO, capture_output=True,
                                      text=True, check=True).stdout.strip()
    ladder_rung, ladder_queries = ladder_paths()
    a.rung, a.queries = a.rung or ladder_rung, a.queries or ladder_queries
    if a.worker:
        measure(a.rung, a.queries, a.length, [int(float(b) * 1e6) for b in a.budgets.split(",")], a.limit, a.worker,
                int(a.memory_gib * GiB) if a.memory_gib else MEMORY_LIMIT)
        return
    result = run(a)
    summary = summarize(result)
    text = markdown(result, summary)
    write_json(a.out, compact(result) | {"summary": summary})
    a.out.with_suffix(".md").write_text(text)
    print(text)


def write_json(path: Path, out: dict) -> None:
    """Indented JSON with each query's row on one line (stage times to 0.1 ms),
    through a temporary file."""
    rows = [[[round(v, 1) if c.startswith("ms:") and v is not None else v for c, v in zip(r["columns"], row)]
             for row in r["rows"]] for r in out["runs"]]
    body = out | {"runs": [r | {"rows": f"@ROWS{i}@"} for i, r in enumerate(out["runs"])]}
    text = json.dumps(body, indent=1)
    for i, rs in enumerate(rows):
        text = text.replace(f'"@ROWS{i}@"', "[\n" + ",\n".join("    " + json.dumps(row) for row in rs) + "\n   ]")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
