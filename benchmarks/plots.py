"""PNG plots of a suite run (matplotlib, Agg backend: no display needed).

Each function takes the results dicts and a path, draws one figure and writes
it (to name.tmp.png, then renamed).
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MB = 1e6
MEMORY_BAR_MB_PER_HOUR = 1.5  # issue 4's bar for the serving index


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _finish_axes(ax, xlabel: str, ylabel: str, title: str) -> None:
    """Labels, title, a y axis from 0, a light grid and a small legend."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _grouped_bars(ax, groups: list[str], series: dict[str, list[float | None]], ylabel: str) -> None:
    """One cluster per group, one bar per series (None drawn as a gap)."""
    width = 0.8 / max(1, len(series))
    for k, (label, values) in enumerate(series.items()):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(groups))]
        ax.bar(xs, [100 * v if v is not None else 0 for v in values], width, label=label)
    ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 105)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")


def recall(core_r: dict, deriv_r: dict | None, path: Path) -> Path:
    """Recall@1 per transform and excerpt length (core), and per derivative."""
    panels = [("core transforms", core_r["accuracy"]["recall_at_1"])]
    if deriv_r is not None:
        cells = deriv_r["accuracy"]["cells"]
        panels.append(("derivatives", {n: {L: c["recall_at_1"] for L, c in cs.items()} for n, cs in cells.items()}))
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.2), squeeze=False)
    for ax, (title, table) in zip(axes[0], panels):
        lengths = sorted({L for cs in table.values() for L in cs}, key=lambda L: float(L.rstrip("s")))
        _grouped_bars(ax, list(table), {L: [table[n].get(L) for n in table] for L in lengths}, "recall@1 (%)")
        t = core_r["accuracy"]["threshold"] if title == "core transforms" else deriv_r["accuracy"]["threshold"]
        ax.set_title(f"simsearch recall@1 at T = {t:g}: {title}")
    return _save(fig, path)


def peer_recall(peer_r: dict, path: Path) -> Path:
    """simsearch and audfprint side by side, per transform and length."""
    s, a = peer_r["simsearch"]["recall_at_1"], peer_r["audfprint"]["recall_at_1"]
    lengths = list(next(iter(s.values())))
    fig, axes = plt.subplots(1, len(lengths), figsize=(6 * len(lengths), 4.2), squeeze=False)
    for ax, L in zip(axes[0], lengths):
        _grouped_bars(ax, list(s), {"simsearch": [s[n][L] for n in s],
                                    f"audfprint ({peer_r['peer']['name']} {peer_r['peer']['version']})":
                                        [a[n][L] for n in s]}, "recall@1 (%)")
        ax.set_title(f"{L} excerpts, same query files")
    return _save(fig, path)


def latency(deriv_r: dict, path: Path) -> Path:
    """In-process query time of 10 s queries against catalog hours."""
    sc = deriv_r["scaling"]
    rows = sc["rows"]
    hours = [r["hours"] for r in rows]
    sp = f"speed_x{sc['speed']:.2f}"
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for label, key, q in (("p50, all", "all", "p50_ms"), ("p95, all", "all", "p95_ms"),
                          ("p50, clean", "none", "p50_ms"), (f"p50, sped up x{sc['speed']:g}", sp, "p50_ms")):
        ax.plot(hours, [r[key][q] for r in rows], marker="o", label=label)
    _finish_axes(ax, "catalog (hours of audio)", "ms per query (in process, decoded beforehand)",
                 f"Query time of {sc['excerpt_s']:g} s queries against catalog size")
    return _save(fig, path)


def memory(deriv_r: dict, path: Path) -> Path:
    """Index bytes in memory (estimate and measured RSS growth) and on disk against catalog hours."""
    rows = deriv_r["scaling"]["rows"]
    hours = [r["hours"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    series = (("resident (RSS growth opening the index)", "rss_growth_bytes"),
              ("in memory (engine estimate)", "bytes_in_memory"), ("on disk (HDF5 segments)", "bytes_on_disk"))
    for label, key in series:
        if all(key in r for r in rows):
            ax.plot(hours, [r[key] / MB for r in rows], marker="o", label=label)
    ax.plot([0, max(hours)], [0, MEMORY_BAR_MB_PER_HOUR * max(hours)], ls="--", color="grey",
            label=f"bar: {MEMORY_BAR_MB_PER_HOUR:g} MB per hour")
    ax.set_xlim(left=0)
    _finish_axes(ax, "catalog (hours of audio)", "MB", "Index size against catalog size")
    return _save(fig, path)


def indexing(stages_r: dict, path: Path, peer_r: dict | None = None) -> Path:
    """x real time per core of each indexing stage (log axis), with the whole pipeline."""
    labels = {"decode": "decode + resample", "features": "features (spectrogram, peaks, triplets)",
              "insert": "index insert (FAISS add + HDF5 write)"}
    bars = [(labels[k], v["x_real_time_per_core"]) for k, v in stages_r["stages"].items()]
    bars.append(("all stages, one process", stages_r["total"]["x_real_time_per_core"]))
    if peer_r is not None:
        bars.append((f"simsearch build, {peer_r['audfprint']['indexing']['ncores']} processes",
                     peer_r["simsearch"]["indexing_x_real_time_per_core"]))
        bars.append(("audfprint new, same processes", peer_r["audfprint"]["indexing_x_real_time_per_core"]))
    fig, ax = plt.subplots(figsize=(7.5, 0.55 * len(bars) + 1.2))
    ax.barh([b[0] for b in bars][::-1], [b[1] for b in bars][::-1], color="tab:blue")
    for y, (_, v) in enumerate(bars[::-1]):
        ax.text(v, y, f" {v:,.0f}x", va="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(right=4 * max(b[1] for b in bars))
    ax.set_xlabel("x real time per core (audio seconds per wall second per process)")
    ax.set_title(f"Indexing speed by stage ({stages_r['tracks']} tracks, {stages_r['audio_seconds'] / 3600:.2f} h)")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def load(load_r: dict, path: Path) -> Path | None:
    """Throughput and latency against concurrent HTTP clients (None when the part was skipped)."""
    if "levels" not in load_r:
        return None
    lv = load_r["levels"]
    n = [x["clients"] for x in lv]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    a1.plot(n, [x["throughput_rps"] for x in lv], marker="o", label="queries only")
    wa = load_r["while_adding"]
    a1.plot([wa["clients"]], [wa["throughput_rps"]], marker="s", ls="", color="tab:red", label="while adding tracks")
    for q in ("p50_ms", "p99_ms"):
        a2.plot(n, [x[q] for x in lv], marker="o", label=q.replace("_ms", ""))
    for ax in (a1, a2):
        ax.set_xscale("log", base=2)
        ax.set_xticks(n, [str(x) for x in n])
    _finish_axes(a1, "concurrent clients", "requests / s", f"Throughput (16/1 = {load_r['ratio_16_to_1']:g}x)")
    _finish_axes(a2, "concurrent clients", "ms per request (client round trip)",
                 f"Latency, POST /v1/query, server --workers {load_r.get('server_workers', 1)} "
                 f"--threads {load_r['server_threads']}")
    return _save(fig, path)


QUERY_BARS_MS = {"p50": 100.0, "p99": 300.0}  # issue 4's bars for a 10 s query at 10,000 h


def _ladder(scale_r: dict) -> list[dict]:
    """The scale ladder's catalogs that hold the real tracks, smallest first."""
    return [r for r in scale_r["rungs"] if r["kind"] != "distractors only"]


def scale_latency(scale_r: dict | None, path: Path) -> Path | None:
    """p50 and p99 of in-process query time per query length against catalog
    hours (log axes), the 10 s bars, and where the ladder stopped measuring."""
    if scale_r is None:
        return None
    rows = _ladder(scale_r)
    done = [r for r in rows if r.get("summary", {}).get("queries", {}).get("measured")]
    fig, ax = plt.subplots(figsize=(7, 4.4))
    for k, length in enumerate(("5s", "10s", "15s")):
        pts = [(r["hours"], r["summary"]["latency"][length]) for r in done if r["summary"]["latency"][length]["n"]]
        for q, style in (("p50", "-"), ("p99", "--")):
            ax.plot([h for h, _ in pts], [x[f"{q}_ms"] for _, x in pts], style, marker="o", color=f"C{k}",
                    label=f"{length[:-1]} s, {q}")
    for q, ms in QUERY_BARS_MS.items():
        ax.axhline(ms, color="grey", ls=":" if q == "p50" else "-.", lw=1)
        ax.text(min(r["hours"] for r in rows), ms, f" bar, 10 s {q} at 10,000 h", fontsize=7, va="bottom",
                color="grey")
    for r in rows:
        if r not in done:
            ax.axvline(r["hours"], color="tab:red", ls=":", lw=1)
            ax.text(r["hours"], ax.get_ylim()[1], " not measured", rotation=90, va="top", fontsize=7, color="tab:red")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("catalog (hours of audio)")
    ax.set_ylabel("ms per query (in process, decoded beforehand)")
    ax.set_title("Query time against catalog size (real tracks + distractors)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=3)
    return _save(fig, path)


def scale_memory(scale_r: dict | None, path: Path) -> Path | None:
    """Serving index (measured, and computed from the table's layout), load
    peak and disk against catalog hours, absolute and per hour of audio."""
    if scale_r is None:
        return None
    rows = [r for r in _ladder(scale_r) if "layout" in r or "load" in r]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    series = (("serving index, resident (measured)", lambda r: r["load"]["rss_growth_bytes"] if "load" in r else None),
              ("serving index, computed (table layout + anchors per entry)",
               lambda r: r.get("computed_serving_bytes")),
              ("peak while Engine opens it (measured)", lambda r: r["load"]["peak_growth_bytes"] if "load" in r
               else None),
              ("HDF5 segments on disk", lambda r: r.get("build", {}).get("bytes_on_disk")))
    for k, (label, value) in enumerate(series):
        pts = [(r["hours"], value(r)) for r in rows if value(r)]
        style = "--" if "computed" in label else "-"
        a1.plot([h for h, _ in pts], [v / MB for _, v in pts], style, marker="o", color=f"C{k}", label=label)
        a2.plot([h for h, _ in pts], [v / MB / h for h, v in pts], style, marker="o", color=f"C{k}", label=label)
    hours = [r["hours"] for r in rows]
    a1.plot(hours, [MEMORY_BAR_MB_PER_HOUR * h for h in hours], ":", color="grey",
            label=f"bar: {MEMORY_BAR_MB_PER_HOUR:g} MB per hour")
    a2.axhline(MEMORY_BAR_MB_PER_HOUR, color="grey", ls=":", label=f"bar: {MEMORY_BAR_MB_PER_HOUR:g} MB per hour")
    for ax in (a1, a2):
        ax.set_xscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
        ax.set_xlabel("catalog (hours of audio)")
    a1.set_yscale("log")
    a1.set_ylabel("MB")
    a1.set_title("Index size against catalog size")
    a2.set_ylabel("MB per hour of audio")
    a2.set_ylim(bottom=0)
    a2.set_title("Per hour of audio")
    return _save(fig, path)
