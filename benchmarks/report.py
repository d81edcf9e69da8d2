"""Markdown tables of a core benchmark result (the dict that core.main writes),
and the helpers the derivatives benchmark's report (derivatives.markdown) uses.

``python -m benchmarks.report RESULTS.json`` prints them again from a saved
result of the core, derivatives or scale benchmark.
"""

from __future__ import annotations

import json
import sys


def cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def num(x: float | None, fmt: str = "{:.3f}") -> str:
    return "-" if x is None else fmt.format(x)


def mb(n: int) -> str:
    return f"{n / 1e6:.1f}"


def corpus_section(r: dict) -> str:
    c, ix = r["corpus"], r["indexing"]
    return (f"Corpus: {c['all']['tracks']} tracks, {c['all']['hours']:.2f} h "
            f"(catalog {c['catalog']['tracks']} tracks / {c['catalog']['hours']:.2f} h, "
            f"out of catalog {c['out']['tracks']} tracks / {c['out']['hours']:.2f} h). "
            f"Index: {ix['vectors']:,} codes, {mb(ix['bytes_on_disk'])} MB on disk, "
            f"{mb(ix['bytes_in_memory'])} MB in memory (engine estimate), {ix['faiss_index']}.")


def accuracy_section(r: dict) -> str:
    a = r["accuracy"]
    lengths = list(next(iter(a["recall_at_1"].values())))
    header = (["transform"] + [f"recall@1 {L}" for L in lengths] + [f"wrong@1 {L}" for L in lengths]
              + [f"offset err {L} (median s)" for L in lengths])
    rows = [[name] + [pct(a["recall_at_1"][name][L]) for L in lengths]
            + [pct(a["wrong_at_1"][name][L]) for L in lengths]
            + [num(a["offset_error_median_s"][name][L]) for L in lengths]
            for name in a["recall_at_1"]]
    rows.append(["**all**"] + [pct(a["recall_at_1_by_length"][L]) for L in lengths] + [""] * (2 * len(lengths)))
    per_cell = a["queries"]["catalog"] // max(1, len(rows) - 1) // max(1, len(lengths))
    return (f"## Recall@1 at the default threshold T = {a['threshold']:g}\n\n"
            f"Catalog excerpts, {a['queries']['catalog']} queries ({per_cell} per cell). recall@1: the top match "
            f"scores >= T and is the excerpt's track; wrong@1: the top match scores >= T and is another track.\n\n"
            + table(header, rows))


def false_alarm_section(r: dict) -> str:
    a, s = r["accuracy"], r["scores"]
    d = s["out_of_catalog_top_score"]
    by_tf = ", ".join(f"{n} {pct(v)}" for n, v in a["false_alarm_rate_by_transform"].items())
    max_tf = ", ".join(f"{n} {num(v, '{:g}')}" for n, v in s["out_of_catalog_top_score_max_by_transform"].items())
    worst = s["worst_out_of_catalog"][:5]
    rows = [[w["track_id"], w["transform"], f"{w['length_s']:g} s", f"{w['start_s']:.1f}", w["top_track"],
             f"{w['top_score']:g}"] for w in worst]
    return (f"## False alarms at T = {a['threshold']:g}\n\n"
            f"Out-of-catalog excerpts: {a['queries']['out_of_catalog']} queries, "
            f"{a['false_alarms']} with a match scoring >= T ({pct(a['false_alarm_rate'], 2)}). "
            f"By transform: {by_tf}.\n\n"
            f"Top score of out-of-catalog queries: median {d['p50']:g}, p90 {d['p90']:g}, p99 {d['p99']:g}, "
            f"max {d['max']:g} (max by transform: {max_tf}). "
            f"Best wrong-track score on catalog queries: p99 {s['catalog_best_wrong_score']['p99']:g}, "
            f"max {s['catalog_best_wrong_score']['max']:g}.\n\n"
            "Highest-scoring out-of-catalog queries:\n\n"
            + table(["query track", "transform", "length", "start s", "top match", "score"], rows))


def sweep_section(r: dict, noun: str = "transform") -> str:
    """The threshold sweep: false alarms and recall@1 by length at each T, then
    per `noun` (transform, derivative) over the lengths it was measured at."""
    sweep, chosen = r["threshold_sweep"], r["chosen_threshold"]
    names = list(sweep[0]["recall_at_1"])
    lengths = list(sweep[0]["recall_at_1_by_length"])
    header = (["T", "false alarms"] + [f"recall {L}" for L in lengths] + ["wrong@1"]
              + [f"{n} ({'/'.join(sweep[0]['recall_at_1'][n])})" for n in names])
    rows = [[row["threshold"], f"{row['false_alarms']} ({pct(row['false_alarm_rate'], 2)})"]
            + [pct(row["recall_at_1_by_length"][L]) for L in lengths] + [pct(row["wrong_at_1_rate"], 2)]
            + ["/".join(f"{100 * v:.0f}" for v in row["recall_at_1"][n].values()) for n in names]
            for row in sweep]
    limit = r["parameters"]["max_false_alarm_rate"]
    if chosen is None:
        verdict = f"No threshold in the sweep keeps false alarms at or under {pct(limit)}."
    else:
        verdict = (f"Smallest T with false alarms <= {pct(limit)}: **T = {chosen['threshold']}** "
                   f"({chosen['false_alarms']} false alarms), recall@1 there: "
                   + ", ".join(f"{L} {pct(v)}" for L, v in chosen["recall_at_1_by_length"].items())
                   + f" (all {noun}s).")
    return (f"## Threshold sweep\n\nRecall@1 by query length over all {noun}s, then per {noun} (percent, "
            "per length).\n\n" + table(header, rows) + "\n\n" + verdict)


def indexing_section(r: dict) -> str:
    ix = r["indexing"]
    return ("## Indexing (catalog, decoding included)\n\n"
            + table(["tracks", "audio h", "wall s", "jobs", "x real time", "x real time per core"],
                    [[ix["tracks"], f"{ix['audio_seconds'] / 3600:.2f}", ix["wall_seconds"], ix["jobs"],
                      ix["x_real_time"], ix["x_real_time_per_core"]]]))


def latency_section(r: dict) -> str:
    lat = r["latency"]
    ip, http = lat["in_process"], lat["http"]
    rows = [["in process: Engine.query(WAV bytes), decoding included", ip["query_bytes"]["n"],
             ip["query_bytes"]["p50_ms"], ip["query_bytes"]["p95_ms"]],
            ["in process: Engine.query_samples (decoded beforehand)", ip["query_samples"]["n"],
             ip["query_samples"]["p50_ms"], ip["query_samples"]["p95_ms"]]]
    if "skipped" in http or "failed" in http:
        rows.append(["HTTP POST /v1/query round trip", "-", "skipped" if "skipped" in http else "failed",
                     http.get("skipped") or http["failed"]])
    else:
        rows.append([f"HTTP POST /v1/query round trip (client, server with {http['threads']} threads)",
                     http["round_trip"]["n"], http["round_trip"]["p50_ms"], http["round_trip"]["p95_ms"]])
    return (f"## Latency ({lat['excerpt_s']:g} s clean excerpts, one query at a time)\n\n"
            + table(["path", "queries", "p50 ms", "p95 ms"], rows))


def lookups_section(r: dict) -> str:
    lk = r["lookups"]
    st = lk["setup"]
    rows = [[s["name"], s["parameters"], s["lookup_ms_median"], f"{mb(s['memory_bytes'])} ({s['memory_kind']})",
             mb(s["rss_growth_bytes"]), "yes" if s["same_hits"] else "NO"] for s in lk["structures"]]
    return (f"## Exact code lookup: FAISS alternatives\n\n"
            f"{st['vectors']:,} catalog codes ({st['bits']} bits used); the probes of {st['queries']} "
            f"10 s queries (median {st['probes_per_query_median']:,} probes and {st['hits_per_query_median']:,} "
            f"hits per query); {st['threads']} thread, fastest of up to {st['repeats'] + 1} calls per query, "
            f"median over queries.\n\n"
            + table(["structure", "parameters", "lookup ms / query", "memory MB", "RSS growth MB",
                     "same hits as IndexBinaryHash"], rows))


def run_line(r: dict) -> str:
    """When, on what, and how long each phase took."""
    env = r["environment"]
    dirty = env.get("simsearch_uncommitted")
    commit = (env["git_commit"] or "unknown")[:10] + (f" plus uncommitted {', '.join(dirty)}" if dirty else "")
    return (f"{r['date']}, commit {commit}, {env['cpu_count']} cores, "
            f"faiss {env['faiss']}, numpy {env['numpy']}; ran {r['timings_s']['total']:.0f} s "
            f"({', '.join(f'{k} {v:g} s' for k, v in r['timings_s'].items() if k != 'total')}; "
            f"1-min load average after each: {', '.join(f'{v:g}' for v in r['load_average_1min'].values())}).")


def markdown(r: dict) -> str:
    if r.get("benchmark") == "derivatives":
        from .derivatives import markdown as derivatives_markdown

        return derivatives_markdown(r)
    if r.get("benchmark") == "scale":
        from .scale import markdown as scale_markdown

        return scale_markdown(r)
    head = f"# simsearch core benchmark ({r['mode']})\n\n" + run_line(r) + "\n\n" + corpus_section(r)
    sections = [head, accuracy_section(r), false_alarm_section(r), sweep_section(r), indexing_section(r),
                latency_section(r), lookups_section(r)]
    return "\n\n".join(sections) + "\n"


if __name__ == "__main__":
    with open(sys.argv[1]) as fh:
        print(markdown(json.load(fh)), end="")
