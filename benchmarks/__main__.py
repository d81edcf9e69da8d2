"""The benchmark suite: one command for every benchmark, its report and its plots.

    .venv/bin/python -m benchmarks run [--quick] [--data DIR] [--jobs N] [--only PART,...]

Runs, one after the other (never two at once):
  core         benchmarks.core (recall per transform and length, false alarms,
               indexing, latency, lookup structures);
  derivatives  benchmarks.derivatives (speed, pitch, tempo, mixes; query time
               and index size against catalog size);
  stages       benchmarks.stages (indexing speed by stage, peak memory);
  load         benchmarks.load (1, 4, 16 HTTP clients; 4 while adding tracks);
  peer         benchmarks.peer (audfprint on the same corpus and query files);
  scale        benchmarks.scale (the scale ladder: catalogs of real tracks plus
               distractors up to 10,000 h; 10 and 100 h with --quick).
Everything a run writes besides results goes under DATA/suite (DATA/suite-quick
with --quick): indexes, scratch audio, checkpoints, the scale ladder's
catalogs.  Results go to benchmarks/results/suite/ (suite-quick/):
core.json/.md and derivatives.json/.md as those benchmarks write them,
suite.json (stages, load, peer, machine, headline), suite.md, and the PNG
plots; the scale ladder's to benchmarks/results/scale.json/.md
(scale-quick.*), as `python -m benchmarks.scale` writes them.  --only runs
some parts and takes the others from the results already there (to redraw
the plots and the report: --only none).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

from . import core, corpus, derivatives, load, peer, plots, report, scale, stages

PARTS = ("core", "derivatives", "stages", "load", "peer", "scale")
LOAD_SECONDS = {"quick": 8.0, "full": 20.0}
LOAD_ROUNDS = {"quick": 1, "full": 3}
STAGE_EVERY = {"quick": 4, "full": 1}  # every n-th catalog track goes through the stage timing
log = core.log


def machine() -> dict:
    """What the figures were measured on."""
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    mem_kb = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    return {"nproc": os.cpu_count(), "cpu_model": cpu, "ram_gib": round(mem_kb / 2**20, 1),
            "kernel": platform.release(), "python": platform.python_version()}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the suite")
    r.add_argument("--quick", action="store_true", help="each benchmark's quick mode (about 15 min on 2 cores)")
    r.add_argument("--data", help="data directory (default $SIMSEARCH_DATA or /work/data)")
    r.add_argument("--jobs", type=int, default=os.cpu_count(), help="processes for indexing and queries")
    r.add_argument("--only", help=f"comma-separated parts to run ({', '.join(PARTS)}; 'none' to only redraw); "
                                  "the others are read from the results folder")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    mode = "quick" if args.quick else "full"
    only = set(PARTS) if args.only is None else {p for p in args.only.split(",") if p and p != "none"}
    if only - set(PARTS):
        raise SystemExit(f"unknown parts: {sorted(only - set(PARTS))}; known: {', '.join(PARTS)}")
    data = corpus.data_dir(args.data)
    work = data / f"suite{'-quick' if args.quick else ''}"
    out_dir = core.RESULTS / f"suite{'-quick' if args.quick else ''}"
    out_dir.mkdir(parents=True, exist_ok=True)
    common = ["--data", str(data), "--work", str(work), "--jobs", str(args.jobs)] + (["--quick"] if args.quick else [])
    previous = json.loads((out_dir / "suite.json").read_text()) if (out_dir / "suite.json").exists() else {}
    t_start = time.perf_counter()
    clock = core.PhaseClock("suite")

    def part(name: str, run, stored):
        if name not in only:
            return stored()
        t0 = time.perf_counter()
        result = run()
        clock.done(name, t0)
        return result

    core_r = part("core", lambda: core.main(common + ["--out", str(out_dir / "core.json")]),
                  lambda: json.loads((out_dir / "core.json").read_text()))
    deriv_r = part("derivatives", lambda: derivatives.main(common + ["--out", str(out_dir / "derivatives.json")]),
                   lambda: json.loads((out_dir / "derivatives.json").read_text()))
    tracks = corpus.load_corpus(data)
    catalog = sorted((t for t in tracks if t.split == "catalog"), key=lambda t: t.track_id)
    index_dir = work / "indexes" / "core"
    stages_r = part("stages", lambda: stages.measure_stages(catalog[:: STAGE_EVERY[mode]], work / "tmp"),
                    lambda: previous["stages"])
    load_r = part("load", lambda: load.measure_load(index_dir, work, tracks, LOAD_SECONDS[mode], LOAD_ROUNDS[mode]),
                  lambda: previous["load"])
    peer_r = part("peer", lambda: peer.run_peer(data, work, tracks, index_dir, core_r["indexing"], args.jobs,
                                                args.quick), lambda: previous["peer"])
    scale_out = scale.RESULTS / f"scale{'-quick' if args.quick else ''}.json"
    scale_r = part("scale", lambda: scale.main(common + ["--out", str(scale_out)]),
                   lambda: json.loads(scale_out.read_text()) if scale_out.exists() else None)

    figures = {
        "recall": plots.recall(core_r, deriv_r, out_dir / "recall.png"),
        "peer_recall": plots.peer_recall(peer_r, out_dir / "peer-recall.png"),
        "latency": plots.latency(deriv_r, out_dir / "latency-vs-catalog.png"),
        "memory": plots.memory(deriv_r, out_dir / "memory-vs-catalog.png"),
        "indexing": plots.indexing(stages_r, out_dir / "indexing-stages.png", peer_r),
        "load": plots.load(load_r, out_dir / "http-load.png"),
        "scale_latency": plots.scale_latency(scale_r, out_dir / "scale-latency.png"),
        "scale_memory": plots.scale_memory(scale_r, out_dir / "scale-memory.png"),
    }
    result = {
        "benchmark": "suite", "mode": mode, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(), "environment": core.environment(),
        "parts_run": sorted(only), "timings_s": {**clock.timings, "total": round(time.perf_counter() - t_start, 1)},
        "load_average_1min": clock.loads,
        "headline": headline(core_r, deriv_r, stages_r, load_r, peer_r) | {"scale": scale_headline(scale_r)},
        "stages": stages_r, "load": load_r, "peer": peer_r,
        "plots": {k: p.name for k, p in figures.items() if p is not None},
    }
    text = markdown(result, core_r, deriv_r, scale_r)
    core.write_text(out_dir / "suite.json", json.dumps(result, indent=1) + "\n")
    core.write_text(out_dir / "suite.md", text)
    print(text)
    log(f"wrote {out_dir}/suite.json, suite.md and {len(figures)} plots", "suite")
    return result


def _per_hour(rows: list[dict], key: str) -> float | None:
    """MB per hour of audio: the slope between the smallest and the largest catalog."""
    if len(rows) < 2 or not all(key in r for r in rows):
        return None
    a, b = rows[0], rows[-1]
    return round((b[key] - a[key]) / (b["hours"] - a["hours"]) / 1e6, 2)


def headline(core_r: dict, deriv_r: dict, stages_r: dict, load_r: dict, peer_r: dict) -> dict:
    rows = deriv_r["scaling"]["rows"]
    largest = rows[-1]
    return {
        "recall_at_1_by_length": core_r["accuracy"]["recall_at_1_by_length"],
        "false_alarm_rate": core_r["accuracy"]["false_alarm_rate"],
        "derivatives_recall_at_1_all": deriv_r["accuracy"]["recall_at_1_all"],
        "query_10s_p50_ms_largest_catalog": largest["all"]["p50_ms"],
        "query_10s_p95_ms_largest_catalog": largest["all"]["p95_ms"],
        "largest_catalog_hours": largest["hours"],
        "memory_mb_per_hour": {"rss_slope": _per_hour(rows, "rss_growth_bytes"),
                               "rss_at_largest": round(largest["rss_growth_bytes"] / 1e6 / largest["hours"], 2)
                               if "rss_growth_bytes" in largest else None,
                               "estimate_slope": _per_hour(rows, "bytes_in_memory"),
                               "disk_slope": _per_hour(rows, "bytes_on_disk")},
        "indexing_x_real_time_per_core": {"build": core_r["indexing"]["x_real_time_per_core"],
                                          **{k: v["x_real_time_per_core"] for k, v in stages_r["stages"].items()}},
        "http_ratio_16_to_1": load_r.get("ratio_16_to_1"), "http_failed": load_r.get("failed_total"),
        "peer_recall_at_1_all": {"simsearch": peer_r["simsearch"]["recall_at_1_all"],
                                 "audfprint": peer_r["audfprint"]["recall_at_1_all"]},
    }


def scale_headline(scale_r: dict | None) -> dict | None:
    """The largest catalog the scale ladder measured: its hours and 10 s query
    time, recall@1, false alarms and serving index per hour."""
    if scale_r is None:
        return None
    done = [r for r in scale_r["rungs"] if r["kind"] == "ladder" and r.get("summary", {}).get("queries", {})
            .get("measured")]
    if not done:
        return {"largest_measured_hours": None}
    r = done[-1]
    s = r["summary"]
    return {"largest_measured_hours": r["hours"], "query_10s_p50_ms": s["latency"]["10s"].get("p50_ms"),
            "query_10s_p99_ms": s["latency"]["10s"].get("p99_ms"), "recall_at_1": s["recall_at_1"]["all"],
            "false_alarm_rate": s["false_alarm_rate"], "serving_mb_per_hour": r["load"]["mb_per_hour"],
            "largest_built_hours": max(x["hours"] for x in scale_r["rungs"] if "build" in x)}


# -- report ----------------------------------------------------------------------
def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f}"


def machine_line(r: dict) -> str:
    m = r["machine"]
    return (f"{r['date']}, commit {(r['environment']['git_commit'] or 'unknown')[:10]}, {m['nproc']} cores "
            f"({m['cpu_model']}), {m['ram_gib']:g} GiB RAM, Python {m['python']}, faiss "
            f"{r['environment']['faiss']}. Parts run now: {', '.join(r['parts_run']) or 'none'} (the others from "
            f"earlier results in this folder). Timings were taken on a shared machine: the 1-minute load average "
            f"after each part was {', '.join(f'{k} {v:g}' for k, v in r['load_average_1min'].items()) or '-'}.")


def headline_section(r: dict, core_r: dict, deriv_r: dict) -> str:
    h = r["headline"]
    mem = h["memory_mb_per_hour"]
    ix = h["indexing_x_real_time_per_core"]
    p = r["peer"]
    rows = [
        ["recall@1, plain copies and degradations (all core transforms)",
         ", ".join(f"{L} {report.pct(v)}" for L, v in h["recall_at_1_by_length"].items()), "-"],
        ["false alarms, out-of-catalog excerpts", report.pct(h["false_alarm_rate"], 2), "<= 0.2%"],
        ["recall@1, derivatives (speed, pitch, tempo, mixes, voice-over, embedded)",
         report.pct(h["derivatives_recall_at_1_all"]), "-"],
        [f"10 s query in process at {h['largest_catalog_hours']:.2f} h (p50 / p95)",
         f"{h['query_10s_p50_ms_largest_catalog']:g} / {h['query_10s_p95_ms_largest_catalog']:g} ms",
         "at 10,000 h: p50 <= 100 ms, p99 <= 300 ms"],
        *scale_rows(h.get("scale")),
        ["serving index, resident MB per hour of audio (slope over the subsets; at the largest)",
         f"{report.num(mem['rss_slope'], '{:g}')}; {report.num(mem['rss_at_largest'], '{:g}')}", "<= 1.5"],
        ["index on disk, MB per hour", report.num(mem["disk_slope"], "{:g}"), "-"],
        ["indexing, x real time per core (build; decode / features / insert)",
         f"{ix['build']:g}; {ix['decode']:,.0f} / {ix['features']:,.0f} / {ix['insert']:,.0f}", "-"],
        ["HTTP throughput, 16 clients / 1 client; failed requests",
         f"{report.num(h['http_ratio_16_to_1'], '{:g}')}x; {h['http_failed']}", ">= 1.6x; 0"],
        [f"recall@1 on the same query files: simsearch / audfprint ({p['queries']['n']} queries)",
         f"{report.pct(h['peer_recall_at_1_all']['simsearch'])} / {report.pct(h['peer_recall_at_1_all']['audfprint'])}",
         "-"],
    ]
    return "## Headline\n\n" + report.table(["figure", "measured", "issue 4 bar"], rows)


def scale_rows(sc: dict | None) -> list[list[str]]:
    """The scale ladder's lines of the headline table."""
    if not sc or not sc.get("largest_measured_hours"):
        return [["scale ladder", "not run" if not sc else "no catalog with distractors measured", "-"]]
    at = f"{sc['largest_measured_hours']:,.0f} h (largest measured; built up to {sc['largest_built_hours']:,.0f} h)"
    return [[f"10 s query in process at {at} (p50 / p99)",
             f"{sc['query_10s_p50_ms']:g} / {sc['query_10s_p99_ms']:g} ms", "at 10,000 h: <= 100 / <= 300 ms"],
            [f"recall@1 / false alarms at {at}",
             f"{report.pct(sc['recall_at_1'])} / {report.pct(sc['false_alarm_rate'], 2)}",
             "within 1 point of 100 h / <= 0.2%"],
            [f"serving index at {at}, MB per hour", f"{sc['serving_mb_per_hour']:g}", "<= 1.5"]]


def stages_section(r: dict) -> str:
    s = r["stages"]
    rows = [[k, v["seconds"], f"{v['x_real_time_per_core']:,.0f}", report.pct(v["share"])] for k, v in s["stages"].items()]
    rows.append(["**all**", s["total"]["seconds"], f"{s['total']['x_real_time_per_core']:,.0f}", "100%"])
    parts = ", ".join(f"{k} {v['x_real_time_per_core']:,.0f}x" for k, v in s["parts"].items())
    m = s["memory"]
    return (f"## Indexing speed by stage\n\n{s['tracks']} catalog tracks ({s['audio_seconds'] / 3600:.2f} h), one "
            f"at a time in one fresh process, through simsearch's public functions (see benchmarks/stages.py). "
            f"x real time per core = audio seconds / wall seconds of the stage.\n\n"
            + report.table(["stage", "seconds", "x real time per core", "share"], rows)
            + f"\n\nParts: {parts}. Peak memory ({m['kind']}): {_mb(m['peak_bytes'])} MB, of which "
              f"{_mb(m['growth_bytes'])} MB above the {_mb(m['after_startup_bytes'])} MB after start-up "
              f"(imports, numba warm-up); all tracks' codes and triplets are held for the one segment write, as a "
              f"build holds its batch.")


def load_section(r: dict) -> str:
    ld = r["load"]
    if "skipped" in ld:
        return f"## HTTP load\n\nSkipped: {ld['skipped']}"
    def row(x: dict, label) -> list:
        return [label, x["requests"], x["failed"], x["throughput_rps"], x["p50_ms"], x["p99_ms"],
                x["server_cores_busy"], x.get("server_cpu_ms_per_request", "-"), x.get("machine_cores_busy", "-"),
                x.get("load_average_1min", "-"),
                f"{x['correct_top']}/{x['ok']}"]

    wa = ld["while_adding"]
    rows = [row(x, x["clients"]) for x in ld["levels"]] + [row(wa, f"{wa['clients']} + 1 adding tracks")]
    rounds = ld.get("rounds", 1)
    every = "; ".join(f"{x['clients']}: " + ", ".join(f"{r[i]['throughput_rps']:g}" for r in ld["all_rounds"])
                      for i, x in enumerate(ld["levels"])) if rounds > 1 else ""
    ad = wa["adds"]
    return (f"## HTTP load\n\n`python -m simsearch serve --workers {ld.get('server_workers', 1)} --threads "
            f"{ld['server_threads']}` on 127.0.0.1 ({ld['cores']} "
            f"cores, clients in the same machine), clean {ld['excerpt_s']:g} s excerpts as 44.1 kHz WAV, "
            f"{ld['seconds_per_level']:g} s per level, {rounds} round(s) of 1, 4, 16 clients, each level shown by its "
            f"best round{' (req/s of every round: ' + every + ')' if every else ''}. Throughput = successful "
            f"requests / wall seconds; latency is the client's round trip; server cores busy = the CPU seconds of "
            f"the server's processes / wall seconds; machine cores busy = all processes' (the server's, the clients', "
            f"anyone else's) CPU seconds / wall seconds; load = the machine's 1-minute load average after the level."
            f"\n\n"
            + report.table(["clients", "requests", "failed", "req/s", "p50 ms", "p99 ms", "server cores busy",
                            "server CPU ms / request", "machine cores busy", "load", "top match right"], rows)
            + f"\n\n16 clients / 1 client: **{ld['ratio_16_to_1']:g}x** (bar: 1.6x). While adding: {ad['ok']} tracks "
              f"({ad['audio_seconds']:g} s of audio) added, {ad['failed']} failed, p50 "
              f"{report.num(ad['p50_ms'], '{:g}')} ms per addition.")


def peer_section(r: dict) -> str:
    p = r["peer"]
    s, a = p["simsearch"], p["audfprint"]
    names = list(s["recall_at_1"])
    lengths = list(s["recall_at_1"][names[0]])
    rows = [[n] + [f"{report.pct(s['recall_at_1'][n][L])} / {report.pct(a['recall_at_1'][n][L])}" for L in lengths]
            for n in names]
    rows.append(["**all**"] + [f"{report.pct(s['recall_at_1_by_length'][L])} / "
                               f"{report.pct(a['recall_at_1_by_length'][L])}" for L in lengths])
    q = p["queries"]
    cost = [
        ["recall@1, all catalog queries", report.pct(s["recall_at_1_all"]), report.pct(a["recall_at_1_all"])],
        ["wrong@1", report.pct(s["wrong_at_1"], 2), report.pct(a["wrong_at_1"], 2)],
        ["false alarms (out-of-catalog queries)", f"{s['false_alarms']} ({report.pct(s['false_alarm_rate'], 2)})",
         f"{a['false_alarms']} ({report.pct(a['false_alarm_rate'], 2)})"],
        ["indexing, x real time per core", f"{s['indexing_x_real_time_per_core']:g}",
         f"{a['indexing_x_real_time_per_core']:g}"],
        ["index on disk, MB per hour", f"{s['bytes_on_disk'] / 1e6 / s['catalog_hours']:.1f}",
         f"{a['bytes_on_disk'] / 1e6 / a['catalog_hours']:.1f}"],
        ["index in memory, MB", f"{_mb(s['bytes_in_memory'])} (engine estimate)",
         f"{_mb(a['bytes_in_memory'])} (its fixed hash table; process RSS after loading "
         f"{_mb(a['maxrss_after_load_bytes'])})"],
        ["query time p50 / p95 ms (in parallel processes, decoding included)",
         f"{s['query_ms']['p50_ms']:g} / {s['query_ms']['p95_ms']:g}",
         f"{a['query_ms']['p50_ms']:g} / {a['query_ms']['p95_ms']:g}"],
    ]
    ag = p["agreement"]
    return (f"## Side by side: audfprint\n\n{p['peer']['name']} {p['peer']['version']} from PyPI, in its own venv; "
            f"{p['peer']['parameters']}. The same {q['n']} query files ({q['excerpts_per_track_and_length']} "
            f"excerpt per track and length, {q['tracks']} tracks, core's seeded offsets and transforms, and three "
            f"derivatives made with sox as the derivatives benchmark makes them) go to both. "
            f"simsearch at its default threshold T = {s['threshold']:g}; audfprint at its own default rule.\n\n"
            + report.table(["transform"] + [f"recall@1 {L}: simsearch / audfprint" for L in lengths], rows)
            + "\n\n" + report.table(["", "simsearch", "audfprint"], cost)
            + f"\n\nCatalog queries both got right: {ag['both_right']}; only simsearch: {ag['simsearch_only']}; "
              f"only audfprint: {ag['audfprint_only']}; neither: {ag['neither']}.")


def memory_section(deriv_r: dict) -> str:
    rows = [[f"{100 * x['fraction']:.0f}%", x["tracks"], f"{x['hours']:.2f}", f"{x['vectors']:,}",
             _mb(x["rss_growth_bytes"]) if "rss_growth_bytes" in x else "-", _mb(x["bytes_in_memory"]),
             _mb(x["bytes_on_disk"]) if "bytes_on_disk" in x else "-", x["all"]["p50_ms"], x["all"]["p95_ms"]]
            for x in deriv_r["scaling"]["rows"]]
    return ("## Memory and query time against catalog size\n\nThe derivatives benchmark's nested catalog subsets. "
            "Resident: growth of a fresh process's RSS while `Engine(index)` opens it (libraries imported "
            "first). Estimate: the engine's own `bytes_in_memory`.\n\n"
            + report.table(["catalog", "tracks", "hours", "codes", "resident MB", "estimate MB", "disk MB",
                            "10 s query p50 ms", "p95 ms"], rows))


def scale_section(scale_r: dict | None) -> str:
    if scale_r is None:
        return "## Scale ladder\n\nNot run yet (`--only scale`)."
    return (f"## Scale ladder\n\nThe real catalog plus distractors up to "
            f"{max(r['hours'] for r in scale_r['rungs']):,.0f} h ({scale_r['mode']} run of {scale_r['date']}; "
            f"everything measured: [scale.md](../scale{'-quick' if scale_r['mode'] == 'quick' else ''}.md)).\n\n"
            + scale.bars_section(scale_r).replace("## Bars", "Bars:", 1) + "\n\n" + scale.ladder_table(scale_r))


def markdown(r: dict, core_r: dict, deriv_r: dict, scale_r: dict | None = None) -> str:
    plots_md = "\n".join(f"![{k}]({name})" for k, name in r["plots"].items())
    head = (f"# simsearch benchmark suite ({r['mode']})\n\n{machine_line(r)}\n\n"
            f"Command: `.venv/bin/python -m benchmarks run{' --quick' if r['mode'] == 'quick' else ''}`. "
            f"Full tables: [core.md](core.md), [derivatives.md](derivatives.md).")
    sections = [head, headline_section(r, core_r, deriv_r), "## Plots\n\n" + plots_md, stages_section(r),
                memory_section(deriv_r), scale_section(scale_r), load_section(r), peer_section(r)]
    return "\n\n".join(sections) + "\n"


if __name__ == "__main__":
    main()
