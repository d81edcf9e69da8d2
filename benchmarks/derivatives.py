"""Derivatives benchmark: how well the engine finds speed-, pitch- and
tempo-changed copies, mixes, voice-overs and samples of catalog tracks, how
well it estimates the change, and how query time grows with the catalog.

    cd /work/main && .venv/bin/python -m benchmarks.derivatives [--quick] [--data DIR] [--out PATH] [--jobs N]

Steps (see benchmarks/README.md for what each figure means):
  1. corpus: DATA/corpus.json as the core benchmark writes it (same packages,
     same catalog / out-of-catalog split), plus espeak-ng;
  2. the catalog index DATA/indexes/core, reused when it holds exactly the
     catalog tracks, otherwise built with the core benchmark's code;
  3. derivatives of 5 s and 15 s excerpts at seeded offsets of every track
     (and 15 s segments embedded in 45 s of other music), made with sox and
     espeak-ng, written as 16-bit WAV and queried with `Engine.query(bytes)`
     with min_score=0, so that every candidate's score is seen;
  4. query time against catalog size: indexes of 25%, 50% and 100% of the
     catalog tracks (DATA/indexes/deriv-25, -50, -100, rebuilt on every run)
     and `Engine.query_samples` on 10 s queries decoded beforehand.
Results: --out (JSON, written to a temporary name then renamed) and the same
path with .md (markdown tables, also printed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from simsearch import audio, engine
from simsearch.config import MatchConfig

from . import core, corpus, lookups, report
from .core import Cut, Excerpt, length_key, percentile_or_none, rate
from .transforms import SPEECH_TOOLS, TOOLS, embed, mix, resample, sox_effect, speech

RESULTS = core.RESULTS
LENGTHS_S = (5.0, 15.0)
EMBED_QUERY_S = 45.0  # the embedded-segment query: 45 s of out-of-catalog music ...
EMBED_SEGMENT_S = 15.0  # ... with a 15 s catalog segment inside
EMBED_HOST_DB = -10.0  # the host under the segment, relative to the segment (brought to the host's level)
EMBED_HOST_GAIN = 0.3  # the diagnostic variant: the segment at its own level, the host under it x0.3 amplitude
MIX_DB = -6.0  # the other track's power relative to the excerpt's
VOICE_DB = -6.0  # the speech's power (looped, pauses included) relative to the music's
SOURCE_MARGIN_S = 0.5  # source audio cut beyond what a transform consumes (no sox edge effect in the query)
SWEEP_THRESHOLDS = (3, 3.5, 4, 4.5, 5, 5.5, 6, 6.5, 7, 7.5, 8, 9, 10, 11, 12, 15, 20, 25, 30)
SPEED_TOL = 0.01  # a speed estimate within 1% ...
PITCH_TOL = 0.25  # ... and a pitch estimate within 0.25 semitone count as right
LOCATE_TOL_S = 1.0
CATALOG_FRACTIONS = (0.25, 0.5, 1.0)
SUBSET_SEED = 2
LATENCY_LENGTH_S = 10.0
LATENCY_QUERIES = 20
LATENCY_SPEED = 1.10
log = partial(core.log, bench="derivatives")


@dataclass(frozen=True)
class Derivative:
    """One kind of derivative and its ground truth."""

    name: str
    speed: float  # reference seconds per query second (1.25: the copy plays 25% faster)
    pitch: float  # query pitch minus reference pitch, semitones
    kind: str  # the kind the engine should report
    how: str  # for the report
    effect: tuple[str, ...] = ()  # sox effect chain, for the sox-made ones

    @property
    def source_factor(self) -> float:
        """Seconds of source consumed per second of query."""
        return self.speed if self.effect else 1.0


def _resampled(factor: float, extra: tuple[str, ...] = ()) -> Derivative:
    suffix = "_reverb" if extra else ""
    return Derivative(f"speed_x{factor:.2f}{suffix}", factor, 12.0 * math.log2(factor), "modified",
                      f"sox `speed {factor:g}{' ' + ' '.join(extra) if extra else ''}` (resampling: pitch and tempo)",
                      ("speed", f"{factor:g}", *extra))


DERIVATIVES = (
    _resampled(1.05), _resampled(0.95), _resampled(1.10), _resampled(0.90), _resampled(1.25),
    _resampled(0.85, ("reverb", "50", "50", "100")),
    Derivative("pitch_+2st", 1.0, 2.0, "modified", "sox `pitch 200` (tempo kept)", ("pitch", "200")),
    Derivative("pitch_-2st", 1.0, -2.0, "modified", "sox `pitch -200` (tempo kept)", ("pitch", "-200")),
    Derivative("tempo_x1.08", 1.08, 0.0, "modified", "sox `tempo 1.08` (pitch kept)", ("tempo", "1.08")),
    Derivative("tempo_x0.92", 0.92, 0.0, "modified", "sox `tempo 0.92` (pitch kept)", ("tempo", "0.92")),
    Derivative("mix_-6dB", 1.0, 0.0, "duplicate",
               f"plus an excerpt of another out-of-catalog track at {MIX_DB:g} dB of the excerpt's power"),
    Derivative("voice_over_-6dB", 1.0, 0.0, "duplicate",
               f"plus espeak-ng speech (seeded sentences, rate and pitch), looped, at {VOICE_DB:g} dB "
               "of the music's power"),
)
EMBEDDED = Derivative("embedded_15s_in_45s", 1.0, 0.0, "partial",
                      f"{EMBED_SEGMENT_S:g} s catalog segment at a seeded position in {EMBED_QUERY_S:g} s of an "
                      f"out-of-catalog track, brought to the host's mean power, the host under it "
                      f"{-EMBED_HOST_DB:g} dB below it")
# Diagnostic (no bar): the segment keeps its own level, so a quiet ambient
# segment lies 20-30 dB under the host music around it.
EMBEDDED_AS_IS = Derivative("embedded_15s_in_45s_own_level", 1.0, 0.0, "partial",
                            f"as above, but the segment at its own level and the host under it at "
                            f"{EMBED_HOST_GAIN:g}x amplitude (a quiet segment is buried under the host)")
EMBEDDINGS = (EMBEDDED, EMBEDDED_AS_IS)
ALL_DERIVATIVES = (*DERIVATIVES, *EMBEDDINGS)
LENGTHS_ALL = (*LENGTHS_S, EMBED_QUERY_S)

SENTENCES = (
    "This is the morning news.",
    "Prices rose again in the markets today.",
    "The weather stays cold and wet across the north.",
    "More after the music.",
    "Welcome back to the show, you are listening to the late edition.",
    "Traffic is heavy on the bridge this evening.",
    "Our guest tonight has travelled a long way to be here.",
    "Do not forget to subscribe and leave a comment below.",
    "Scientists say the comet will be visible next week.",
    "The match ended in a draw after extra time.",
    "Tickets for the concert go on sale on Friday.",
    "And now, a word from our sponsors.",
)


def sub_seed(ex: Excerpt, tag: str) -> int:
    """A seed for one random choice about an excerpt (partner track, sentence, position)."""
    return zlib.crc32(f"{ex.track_id}|{ex.length_s:g}|{ex.k}|{tag}".encode())


def voice_text(seed: int) -> tuple[str, int, int]:
    """Three sentences in a seeded order, a speaking rate (words per minute) and a voice pitch (0-99)."""
    rng = np.random.default_rng(seed)
    text = " ".join(SENTENCES[i] for i in rng.permutation(len(SENTENCES))[:3])
    return text, int(rng.choice([140, 160, 180])), int(rng.integers(30, 71))


def choose_partner(ex: Excerpt, pool: list[corpus.Track], tag: str) -> corpus.Track:
    """A seeded out-of-catalog track other than the excerpt's own (and its group)."""
    own = next((t.group for t in pool if t.track_id == ex.track_id), None)
    candidates = [t for t in pool if t.track_id != ex.track_id and t.group != own]
    return candidates[int(np.random.default_rng(sub_seed(ex, tag)).integers(len(candidates)))]


# -- making the queries ------------------------------------------------------------
@dataclass(frozen=True)
class Query:
    y: np.ndarray
    sr: int
    ref: Cut  # the catalog audio in the query (its start is the true reference position)
    query_offset_s: float  # where that audio starts in the query
    partner: str | None  # the other track mixed in, or the host of an embedded segment


class _Ctx:
    """Per-process state of the query pool besides core's Engine."""

    out_tracks: list[corpus.Track] = []
    tmp_dir: Path = Path("/tmp")


def source_seconds(length_s: float) -> float:
    """Source audio cut for one excerpt: enough for the fastest derivative."""
    return length_s * max(d.source_factor for d in DERIVATIVES) + SOURCE_MARGIN_S


def make_query(d: Derivative, ex: Excerpt, cut: Cut, out_tracks: list[corpus.Track], tmp_dir: Path) -> Query:
    """The derivative `d` of the excerpt (cut with source_seconds of audio)."""
    sr, n = cut.sr, int(round(ex.length_s * cut.sr))
    if d.effect:
        n_src = int(round((ex.length_s * d.source_factor + SOURCE_MARGIN_S) * sr))
        y, sr = sox_effect(cut.y[:n_src], sr, tmp_dir, list(d.effect), n_out=n)
        return Query(y, sr, cut, 0.0, None)
    y = cut.y[:n]
    if d.name.startswith("mix"):
        other = choose_partner(ex, out_tracks, "mix")
        z = core.cut_audio(other.path, ex.length_s, sub_seed(ex, "mix-cut"))
        return Query(mix(y, resample(z.y, z.sr, sr, tmp_dir), MIX_DB), sr, cut, 0.0, other.track_id)
    if d.name.startswith("voice_over"):
        text, wpm, pitch = voice_text(sub_seed(ex, "voice"))
        return Query(mix(y, speech(text, sr, tmp_dir, wpm, pitch), VOICE_DB), sr, cut, 0.0, None)
    raise ValueError(f"no recipe for {d.name}")


def make_embedded(d: Derivative, ex: Excerpt, out_tracks: list[corpus.Track], tmp_dir: Path) -> Query:
    """Catalog excerpt: a 15 s segment of it at a seeded position inside 45 s of
    another out-of-catalog track.  Out-of-catalog excerpt: the 45 s host alone."""
    if not ex.in_catalog:
        host = core.cut_excerpt(ex)
        return Query(host.y, host.sr, host, 0.0, None)
    seg = core.cut_excerpt(ex, EMBED_SEGMENT_S)
    other = choose_partner(ex, out_tracks, "host")
    host = core.cut_audio(other.path, EMBED_QUERY_S, sub_seed(ex, "host-cut"))
    y = resample(seg.y, seg.sr, host.sr, tmp_dir)[: int(round(EMBED_SEGMENT_S * host.sr))]
    at = int(np.random.default_rng(sub_seed(ex, "at")).integers(0, len(host.y) - len(y) + 1))
    level = dict(host_db=None, host_gain=EMBED_HOST_GAIN) if d is EMBEDDED_AS_IS else dict(host_db=EMBED_HOST_DB)
    return Query(embed(host.y, y, at, **level), host.sr, seg, at / host.sr, other.track_id)


# -- records ----------------------------------------------------------------------
# The engine's answer at a threshold T is not always the min_score=0 answer
# filtered at T: Engine.query_samples first searches near unit speed and pitch
# and stops there when its top match is a duplicate scoring >= min_score.  With
# min_score=0 a chance duplicate (score 2-4) stops the search before the full
# speed and pitch range is tried, which the engine at its real threshold would
# not do.  So when the min_score=0 answer's top is a duplicate scoring s0 (the
# "exit score"), the query is repeated with min_score just above s0: for T <= s0
# the engine answers as the first query, for T > s0 as the second (both filtered
# at T).  Records keep the first query's top match in top_* and the second's in
# above_top_*; `at_threshold` gives the records as the engine answers at T.
TOP_FIELDS = ("top_track", "top_score", "top_query_start", "top_query_end", "top_ref_start", "top_ref_end",
              "top_speed", "top_pitch", "top_kind", "top_offset", "top_repeats")
EXTRA_COLUMNS = ("true_speed", "true_pitch", "expected_kind", "query_offset_s", "partner",
                 "top_query_end", "top_ref_end", "top_pitch", "top_kind", "top_repeats", "exit_score",
                 *(f"above_{f}" for f in TOP_FIELDS), "max_score",
                 "truth_speed", "truth_pitch", "truth_query_start", "truth_ref_start", "truth_kind")
RECORD_COLUMNS = (*core.RECORD_COLUMNS, *EXTRA_COLUMNS)


def top_fields(res: engine.QueryResult | None) -> dict:
    """The TOP_FIELDS of a result's first match (None and score 0 without one)."""
    m = res.matches[0] if res is not None and res.matches else None
    if m is None:
        return {f: (0.0 if f == "top_score" else None) for f in TOP_FIELDS}
    return {"top_track": m.track_id, "top_score": core.r4(m.score), "top_query_start": core.r4(m.query_start),
            "top_query_end": core.r4(m.query_end), "top_ref_start": core.r4(m.ref_start), "top_ref_end": core.r4(m.ref_end),
            "top_speed": round(float(m.speed), 5), "top_pitch": core.r4(m.pitch_semitones), "top_kind": m.kind,
            "top_offset": core.r4(m.ref_start - m.speed * m.query_start),
            "top_repeats": [[core.r4(r.ref_start), core.r4(r.score)] for r in m.repeats]}


def query_every_threshold(eng: engine.Engine, wav: bytes, max_threshold: float
                          ) -> tuple[engine.QueryResult, engine.QueryResult | None, float | None]:
    """(answer at min_score=0, answer at min_score just above the exit score
    or None, the exit score or None); see the comment above.  The second query
    is skipped when the exit score is at least `max_threshold`."""
    res0 = eng.query(wav, core.ALL_MATCHES)
    top = res0.matches[0] if res0.matches else None
    if top is None or top.kind != "duplicate" or top.score >= max_threshold:
        return res0, None, None
    above = MatchConfig(min_score=float(np.nextafter(top.score, np.inf)))
    return res0, eng.query(wav, above), float(top.score)


def make_record(ex: Excerpt, d: Derivative, q: Query, res0: engine.QueryResult,
                res1: engine.QueryResult | None, exit_score: float | None) -> dict:
    """core's record of the min_score=0 answer, the second answer's top match,
    the ground truth, and the true track's best match over both answers."""
    rec = core.make_record(ex, d.name, q.ref, res0)
    rec.update(top_fields(res0))
    matches = res0.matches + (res1.matches if res1 is not None else [])
    truth = max((m for m in matches if m.track_id == ex.track_id), key=lambda m: m.score, default=None)
    rec.update({
        "true_speed": d.speed, "true_pitch": round(d.pitch, 4), "expected_kind": d.kind,
        "query_offset_s": round(q.query_offset_s, 4), "partner": q.partner, "exit_score": core.r4(exit_score),
        **{f"above_{k}": v for k, v in top_fields(res1).items()},
        "max_score": core.r4(max((m.score for m in matches), default=0.0)),
        "truth_score": core.r4(truth.score) if truth else 0.0,
        "best_wrong_score": core.r4(max((m.score for m in matches if m.track_id != ex.track_id), default=0.0)),
        "n_matches": len({m.track_id for m in matches}),
        "truth_speed": core.r4(truth.speed) if truth else None, "truth_pitch": core.r4(truth.pitch_semitones) if truth else None,
        "truth_query_start": core.r4(truth.query_start) if truth else None,
        "truth_ref_start": core.r4(truth.ref_start) if truth else None, "truth_kind": truth.kind if truth else None,
    })
    return rec


def at_threshold(records: list[dict], threshold: float) -> list[dict]:
    """The records with top_* as the engine answers at `threshold`."""
    return [r if r["exit_score"] is None or threshold <= r["exit_score"]
            else {**r, **{f: r[f"above_{f}"] for f in TOP_FIELDS}} for r in records]


def _init_worker(index_dir: str, tmp_dir: str, out_tracks: list[corpus.Track]) -> None:
    core.init_engine_worker(index_dir)
    _Ctx.out_tracks, _Ctx.tmp_dir = out_tracks, Path(tmp_dir)


def query_item(ex: Excerpt) -> list[dict]:
    """Every derivative of one excerpt (or the embedded-segment query), queried."""
    eng = core._Worker.engine
    if ex.length_s == EMBED_QUERY_S:
        made = [(d, make_embedded(d, ex, _Ctx.out_tracks, _Ctx.tmp_dir))
                for d in (EMBEDDINGS if ex.in_catalog else EMBEDDINGS[:1])]  # one host-alone query
    else:
        cut = core.cut_excerpt(ex, source_seconds(ex.length_s))
        made = [(d, make_query(d, ex, cut, _Ctx.out_tracks, _Ctx.tmp_dir)) for d in DERIVATIVES]
    top_t = max(max(SWEEP_THRESHOLDS), MatchConfig().min_score)
    return [make_record(ex, d, q, *query_every_threshold(eng, core.wav_bytes(q.y, q.sr), top_t)) for d, q in made]


def plan_items(tracks: list[corpus.Track], per_track: int) -> list[Excerpt]:
    """`per_track` excerpts of 5 s and 15 s and `per_track` embedded-segment
    queries (45 s) of every track."""
    return core.plan_excerpts(tracks, per_track, LENGTHS_ALL)


# -- figures (pure: records in, numbers out) -------------------------------------------
def true_ref_at(r: dict, q: float) -> float:
    """Where the reference truly is at query time q."""
    return r["start_s"] + r["true_speed"] * (q - r["query_offset_s"])


def speed_error(r: dict) -> float:
    return abs(r["top_speed"] / r["true_speed"] - 1.0)


def pitch_error(r: dict) -> float:
    return abs(r["top_pitch"] - r["true_pitch"])


def position_error(r: dict) -> float:
    """How far the reference position nearest the truth is from it: the
    match's, or one of its repeats' (other places of the track where the
    matched passage is found as well, reported with the match)."""
    truth = true_ref_at(r, r["top_query_start"])
    return min(abs(x - truth) for x in [r["top_ref_start"], *(x for x, _ in r.get("top_repeats") or [])])


def start_error(r: dict) -> float:
    return abs(r["top_query_start"] - r["query_offset_s"])


def end_error(r: dict) -> float:
    return abs(r["top_query_end"] - (r["query_offset_s"] + EMBED_SEGMENT_S))


def factors_right(r: dict) -> bool:
    return speed_error(r) <= SPEED_TOL and pitch_error(r) <= PITCH_TOL


def located(r: dict) -> bool:
    return start_error(r) <= LOCATE_TOL_S and position_error(r) <= LOCATE_TOL_S


def cell_figures(rs: list[dict], threshold: float) -> dict:
    """Catalog queries of one derivative and length at one threshold."""
    ok = [r for r in rs if core.is_correct(r, threshold)]
    kinds = Counter(r["top_kind"] for r in ok)
    out = {
        "queries": len(rs),
        "recall_at_1": rate(rs, lambda r: core.is_correct(r, threshold)),
        "wrong_at_1": rate(rs, lambda r: core.is_wrong(r, threshold)),
        "speed_error_median": percentile_or_none([speed_error(r) for r in ok], 50, 5),
        "speed_error_p95": percentile_or_none([speed_error(r) for r in ok], 95, 5),
        "pitch_error_median_st": percentile_or_none([pitch_error(r) for r in ok], 50, 3),
        "pitch_error_p95_st": percentile_or_none([pitch_error(r) for r in ok], 95, 3),
        "speed_within_1pct": rate(ok, lambda r: speed_error(r) <= SPEED_TOL),
        "pitch_within_0.25st": rate(ok, lambda r: pitch_error(r) <= PITCH_TOL),
        "both_within": rate(ok, factors_right),
        "position_error_median_s": percentile_or_none([position_error(r) for r in ok], 50, 3),
        "position_error_p95_s": percentile_or_none([position_error(r) for r in ok], 95, 3),
        "position_within_1s": rate(ok, lambda r: position_error(r) <= LOCATE_TOL_S),
        "kinds": {k: kinds[k] for k in ("duplicate", "modified", "partial") if kinds[k]},
        "expected_kind": rs[0]["expected_kind"],
        "expected_kind_share": rate(ok, lambda r: r["top_kind"] == r["expected_kind"]),
        "truth_score_median": percentile_or_none([r["truth_score"] for r in rs], 50, 1),
    }
    if rs[0]["transform"] in {d.name for d in EMBEDDINGS}:
        out.update({
            "query_start_error_median_s": percentile_or_none([start_error(r) for r in ok], 50, 3),
            "query_start_error_p95_s": percentile_or_none([start_error(r) for r in ok], 95, 3),
            "query_end_error_median_s": percentile_or_none([end_error(r) for r in ok], 50, 3),
            "located_within_1s": rate(ok, located),
        })
    return out


def accuracy_at(records: list[dict], threshold: float) -> dict:
    names = [d.name for d in ALL_DERIVATIVES]
    records = at_threshold(records, threshold)
    cat = [r for r in records if r["in_catalog"]]
    out = [r for r in records if not r["in_catalog"]]
    cells = core.by_transform_and_length(cat, names, LENGTHS_ALL, lambda rs: cell_figures(rs, threshold))
    fa_cells = core.by_transform_and_length(
        out, names, LENGTHS_ALL, lambda rs: {"queries": len(rs), "rate": rate(rs, lambda r: r["top_score"] >= threshold),
                                              "max_score": max(r["top_score"] for r in rs)})
    return {
        "threshold": threshold,
        "cells": cells,
        "recall_at_1_by_length": {length_key(L): rate([r for r in cat if r["length_s"] == L],
                                                      lambda r: core.is_correct(r, threshold)) for L in LENGTHS_ALL},
        "recall_at_1_all": rate(cat, lambda r: core.is_correct(r, threshold)),
        "false_alarm_rate": rate(out, lambda r: r["top_score"] >= threshold),
        "false_alarms": sum(r["top_score"] >= threshold for r in out),
        "false_alarm_cells": fa_cells,
        "false_alarm_rate_by_transform": {n: rate([r for r in out if r["transform"] == n],
                                                  lambda r: r["top_score"] >= threshold) for n in names},
        "queries": {"catalog": len(cat), "out_of_catalog": len(out)},
    }


def score_summary(records: list[dict], top_n: int = 10) -> dict:
    """Scores over both answers of each query: an out-of-catalog query is a
    false alarm at T exactly when its max_score >= T."""
    out = [r for r in records if not r["in_catalog"]]
    cat = [r for r in records if r["in_catalog"]]
    names = [d.name for d in ALL_DERIVATIVES]

    def worst(r: dict) -> dict:
        top = r if r["top_score"] >= r["above_top_score"] else {f: r[f"above_{f}"] for f in TOP_FIELDS}
        return {**{k: r[k] for k in ("track_id", "transform", "length_s", "start_s", "partner")},
                "top_track": top["top_track"], "top_score": top["top_score"]}

    return {
        "out_of_catalog_top_score": core.score_distribution([r["max_score"] for r in out]),
        "out_of_catalog_top_score_max_by_transform": {
            n: max((r["max_score"] for r in out if r["transform"] == n), default=None) for n in names},
        "catalog_best_wrong_score": core.score_distribution([r["best_wrong_score"] for r in cat]),
        "second_queries": {"catalog": sum(r["exit_score"] is not None for r in cat),
                           "out_of_catalog": sum(r["exit_score"] is not None for r in out)},
        "worst_out_of_catalog": [worst(r) for r in sorted(out, key=lambda r: -r["max_score"])[:top_n]],
    }


def failures(records: list[dict], threshold: float, per_transform: int = 3) -> list[dict]:
    """A few catalog queries per derivative that were missed or whose
    factors were off: what the true track scored and what it was estimated at."""
    keys = ("track_id", "transform", "length_s", "start_s", "top_track", "top_score", "top_speed", "top_pitch",
            "truth_score", "truth_kind", "truth_speed", "truth_pitch", "true_speed", "true_pitch")
    out = []
    records = at_threshold(records, threshold)
    for d in ALL_DERIVATIVES:
        bad = [r for r in records if r["in_catalog"] and r["transform"] == d.name
               and not (core.is_correct(r, threshold) and factors_right(r))]
        bad.sort(key=lambda r: (core.is_correct(r, threshold), r["truth_score"]))
        out += [{k: r[k] for k in keys} for r in bad[:per_transform]]
    return out


# -- query time against catalog size ---------------------------------------------------
def catalog_subsets(catalog: list[corpus.Track]) -> dict[float, list[corpus.Track]]:
    """Nested seeded subsets: the first 25%, 50%, 100% of one permutation."""
    order = sorted(catalog, key=lambda t: t.track_id)
    perm = np.random.default_rng(SUBSET_SEED).permutation(len(order))
    return {f: [order[i] for i in perm[: max(1, round(f * len(order)))]] for f in CATALOG_FRACTIONS}


def latency_queries(smallest: list[corpus.Track], tmp_dir: Path, sample_rate: int) -> list[tuple[str, str, np.ndarray]]:
    """LATENCY_QUERIES 10 s excerpts of tracks in the smallest subset (so that
    every index holds every query's track), every other one sped up x1.10;
    written as WAV and decoded with simsearch.audio.decode_audio at the
    engine's rate.  Returns (track_id, transform, samples)."""
    order = sorted(smallest, key=lambda t: t.track_id)
    perm = np.random.default_rng(SUBSET_SEED + 1).permutation(len(order))
    speed = _resampled(LATENCY_SPEED)
    out = []
    for i in range(LATENCY_QUERIES):
        t = order[perm[i % len(order)]]
        ex = Excerpt(t.track_id, t.path, True, LATENCY_LENGTH_S, i // len(order))
        cut = core.cut_excerpt(ex, LATENCY_LENGTH_S * LATENCY_SPEED + SOURCE_MARGIN_S)
        d = speed if i % 2 else None
        y = make_query(d, ex, cut, [], tmp_dir).y if d else cut.y[: int(round(LATENCY_LENGTH_S * cut.sr))]
        path = tmp_dir / f"latency-{i}.wav"
        path.write_bytes(core.wav_bytes(y, cut.sr))
        try:
            out.append((t.track_id, d.name if d else "none", audio.decode_audio(path, sample_rate)))
        finally:
            path.unlink()
    return out


def measure_scaling(subsets: dict, index_root: Path, tmp_dir: Path, jobs: int) -> dict:
    """Build each subset's index, then time query_samples on the same queries
    against each (one warm-up query first)."""
    rows = []
    queries = None
    for f, tracks in subsets.items():
        index_dir = index_root / f"deriv-{round(100 * f)}"
        t0 = time.perf_counter()
        ix = core.build_catalog(index_dir, tracks, jobs)
        log(f"index {index_dir.name}: {ix['tracks']} tracks, {ix['vectors']:,} codes in {time.perf_counter() - t0:.0f} s")
        eng = engine.Engine(index_dir)
        if queries is None:
            queries = latency_queries(subsets[CATALOG_FRACTIONS[0]], tmp_dir, eng.config.sample_rate)
        eng.query_samples(queries[0][2])
        ms, correct = {"none": [], f"speed_x{LATENCY_SPEED:.2f}": []}, 0
        for track_id, name, y in queries:
            res = eng.query_samples(y)
            ms[name].append(res.elapsed_ms)
            correct += bool(res.matches) and res.matches[0].track_id == track_id
        st = eng.stats()
        rows.append({"fraction": f, "index_dir": str(index_dir), "tracks": st["tracks"], "hours": st["hours"],
                     "vectors": st["vectors"], "bytes_in_memory": st["bytes_in_memory"],
                     "bytes_on_disk": st["bytes_on_disk"], "rss_growth_bytes": lookups.engine_rss_growth(index_dir),
                     "build_x_real_time": ix["x_real_time"],
                     "all": core.percentiles([v for vs in ms.values() for v in vs]),
                     **{name: core.percentiles(vs) for name, vs in ms.items()},
                     "correct_at_default_threshold": int(correct)})
    return {"excerpt_s": LATENCY_LENGTH_S, "queries": LATENCY_QUERIES, "speed": LATENCY_SPEED, "rows": rows}


# -- index -----------------------------------------------------------------------------
def ensure_catalog_index(index_dir: Path, catalog: list[corpus.Track], jobs: int) -> dict:
    """Reuse the core benchmark's index when it opens and holds exactly the
    catalog tracks, each once (no codes beyond the live tracks' own);
    otherwise build it with core.build_catalog.  Do not run this while the
    core benchmark runs: both write DATA/indexes/core."""
    try:
        eng = engine.Engine(index_dir)
        st = eng.stats()
        own_codes = sum(t.n_triplets for t in eng.tracks.values())
        if set(eng.tracks) == {t.track_id for t in catalog} and st["vectors"] == own_codes:
            return {"reused": True, "tracks": st["tracks"], "hours": st["hours"], "vectors": st["vectors"],
                    "generation": st["generation"]}
        log(f"{index_dir} holds other tracks than the catalog, or dead copies ({st['vectors']:,} codes, "
            f"{own_codes:,} of live tracks): rebuilding it")
    except Exception as exc:  # missing, older format, damaged: build it anew
        log(f"{index_dir} not usable ({type(exc).__name__}: {exc}): building it")
    ix = core.build_catalog(index_dir, catalog, jobs)
    return {"reused": False, **ix, "hours": round(ix["audio_seconds"] / 3600, 3)}


# -- report ----------------------------------------------------------------------------
def _kinds(c: dict) -> str:
    total = sum(c["kinds"].values())
    if not total:
        return "-"
    return ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in sorted(c["kinds"].items(), key=lambda kv: -kv[1]))


def accuracy_section(r: dict) -> str:
    a = r["accuracy"]
    header = ["derivative", "length", "queries", "recall@1", "wrong@1", "speed err median", "pitch err median st",
              "speed <1% & pitch <0.25 st", "position err median s (share <1 s)", "kind of correct matches (expected)",
              "true track's score median"]
    rows = []
    for name, cells in a["cells"].items():
        for L, c in cells.items():
            rows.append([name, L, c["queries"], report.pct(c["recall_at_1"]), report.pct(c["wrong_at_1"]),
                         report.pct(c["speed_error_median"], 2), report.num(c["pitch_error_median_st"], "{:.2f}"),
                         report.pct(c["both_within"]),
                         f"{report.num(c['position_error_median_s'])} ({report.pct(c['position_within_1s'], 0)})",
                         f"{_kinds(c)} ({c['expected_kind']})", report.num(c["truth_score_median"], "{:g}")])
    by_len = ", ".join(f"{L} {report.pct(v)}" for L, v in a["recall_at_1_by_length"].items())
    return (f"## Recall@1 and estimates at the default threshold T = {a['threshold']:g}\n\n"
            f"Catalog queries: {a['queries']['catalog']}. recall@1: the top match scores >= T and is the excerpt's "
            f"track; wrong@1: it scores >= T and is another track. The other columns are over correct matches: "
            f"speed error |speed / true - 1|, pitch error |pitch - true| (true pitch 12 log2(speed) for resampling, "
            f"+-2 for the pitch shifts, 0 otherwise), the share with both within 1% and 0.25 semitone, and the "
            f"position error |ref_start - (offset + true speed x (query_start - segment start))|, ref_start the "
            f"match's or, where the track repeats the passage, the nearest of its reported repeats' (`repeats`). "
            f"Recall@1 by length: {by_len}; all: {report.pct(a['recall_at_1_all'])}.\n\n"
            + report.table(header, rows))


def embedded_section(r: dict) -> str:
    c = r["accuracy"]["cells"][EMBEDDED.name][length_key(EMBED_QUERY_S)]
    return (f"## Embedded segment: location\n\n"
            f"{EMBED_SEGMENT_S:g} s of a catalog track inside {EMBED_QUERY_S:g} s of out-of-catalog music "
            f"({c['queries']} queries, recall@1 {report.pct(c['recall_at_1'])}). Of the correct matches: "
            f"|query_start - true start| median {report.num(c['query_start_error_median_s'], '{:.2f}')} s, "
            f"p95 {report.num(c['query_start_error_p95_s'], '{:.2f}')} s; |query_end - true end| median "
            f"{report.num(c['query_end_error_median_s'], '{:.2f}')} s; reference position error median "
            f"{report.num(c['position_error_median_s'], '{:.2f}')} s; located within {LOCATE_TOL_S:g} s "
            f"(start in the query and position in the reference): {report.pct(c['located_within_1s'])}; "
            f"kind: {_kinds(c)}.")


def false_alarm_section(r: dict) -> str:
    a, s = r["accuracy"], r["scores"]
    d = s["out_of_catalog_top_score"]
    rows = [[name, L, c["queries"], report.pct(c["rate"]), f"{c['max_score']:g}"]
            for name, cells in a["false_alarm_cells"].items() for L, c in cells.items()]
    worst = [[w["track_id"], w["transform"], f"{w['length_s']:g} s", f"{w['start_s']:.1f}", w["partner"] or "-",
              w["top_track"], f"{w['top_score']:g}"] for w in s["worst_out_of_catalog"][:5]]
    return (f"## False alarms at T = {a['threshold']:g}\n\n"
            f"The same derivatives of out-of-catalog excerpts (mixed with, or speech over, other out-of-catalog "
            f"audio; for the embedded segment, the 45 s host alone): {a['queries']['out_of_catalog']} queries, "
            f"{a['false_alarms']} with a match scoring >= T ({report.pct(a['false_alarm_rate'], 2)}). "
            f"Top score of out-of-catalog queries: median {d['p50']:g}, p90 {d['p90']:g}, p99 {d['p99']:g}, "
            f"max {d['max']:g}. Best wrong-track score on catalog queries: p99 "
            f"{s['catalog_best_wrong_score']['p99']:g}, max {s['catalog_best_wrong_score']['max']:g}.\n\n"
            + report.table(["derivative", "length", "queries", "false alarms", "max score"], rows)
            + "\n\nHighest-scoring out-of-catalog queries:\n\n"
            + report.table(["query track", "derivative", "length", "start s", "mixed with / host", "top match",
                            "score"], worst))


def scaling_section(r: dict) -> str:
    sc = r["scaling"]
    sp = f"speed_x{sc['speed']:.2f}"
    rows = [[f"{100 * x['fraction']:.0f}%", x["tracks"], f"{x['hours']:.2f}", f"{x['vectors']:,}",
             x["all"]["p50_ms"], x["all"]["p95_ms"], x["none"]["p50_ms"], x[sp]["p50_ms"],
             f"{x['correct_at_default_threshold']}/{x['all']['n']}"] for x in sc["rows"]]
    return (f"## Query time against catalog size\n\n"
            f"{sc['queries']} queries of {sc['excerpt_s']:g} s (half clean, half sox `speed {sc['speed']:g}`) from "
            f"tracks of the smallest subset, decoded beforehand to 8 kHz; in-process `Engine.query_samples`, "
            f"default MatchConfig, one at a time after a warm-up query. Subsets are nested and seeded.\n\n"
            + report.table(["catalog", "tracks", "hours", "vectors", "p50 ms", "p95 ms", "p50 ms clean",
                            f"p50 ms x{sc['speed']:g}", "top match right"], rows))


def failures_section(r: dict) -> str:
    rows = [[f["track_id"], f["transform"], f"{f['length_s']:g} s", f["top_track"] or "-", f"{f['top_score']:g}",
             report.num(f["top_speed"], "{:.3f}"), report.num(f["top_pitch"], "{:+.2f}"), f"{f['truth_score']:g}",
             f["truth_kind"] or "-", report.num(f["truth_speed"], "{:.3f}"), report.num(f["truth_pitch"], "{:+.2f}"),
             f"{f['true_speed']:.3f} / {f['true_pitch']:+.2f}"] for f in r["failures"]]
    return ("## Examples of failures\n\nUp to 3 catalog queries per derivative that were missed (lowest true-track "
            "score first) or matched with a speed or pitch off by more than the tolerance.\n\n"
            + report.table(["track", "derivative", "length", "top match", "score", "speed", "pitch",
                            "true track's score", "its kind", "its speed", "its pitch", "true speed / pitch"], rows))


def method_section(r: dict) -> str:
    p, sq = r["parameters"], r["scores"]["second_queries"]
    rows = [[d.name, d.how, f"{d.speed:g}", f"{d.pitch:+.2f}", d.kind] for d in ALL_DERIVATIVES]
    return ("## Derivatives\n\n"
            f"{p['excerpts_per_track']} excerpt(s) of 5 s and 15 s per track at seeded offsets (plus as many "
            f"embedded-segment queries), {p['catalog_tracks']} catalog and {p['out_tracks']} out-of-catalog tracks; "
            f"source audio is cut long enough that a speed or tempo change still fills the query. Queries are "
            f"16-bit WAV through `Engine.query(bytes, MatchConfig(min_score=0))`; when that answer's top match is a "
            f"duplicate scoring s0 below {max(p['sweep_thresholds'])}, the query is repeated with min_score just "
            f"above s0, because the engine stops after its unit-speed pass on a duplicate scoring >= min_score: "
            f"figures at a threshold T use the first answer for T <= s0 and the second above "
            f"({sq['catalog']} catalog and {sq['out_of_catalog']} out-of-catalog queries were repeated).\n\n"
            + report.table(["derivative", "how", "true speed", "true pitch st", "expected kind"], rows))


def markdown(r: dict) -> str:
    ix = r["index"]
    head = (f"# simsearch derivatives benchmark ({r['mode']})\n\n" + report.run_line(r) + "\n\n"
            f"Catalog index {r['parameters']['index_dir']} ({'reused' if ix['reused'] else 'built'}): "
            f"{ix['tracks']} tracks, {ix['hours']:.2f} h, {ix['vectors']:,} codes.")
    sections = [head, method_section(r), accuracy_section(r), embedded_section(r), false_alarm_section(r),
                report.sweep_section(r, "derivative"), scaling_section(r), failures_section(r)]
    return "\n\n".join(sections) + "\n"


# -- orchestration -----------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.derivatives", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="1 excerpt per track and length (instead of 2), half of the catalog tracks")
    ap.add_argument("--data", help="data directory for corpus, indexes and temporary audio "
                                   "(default $SIMSEARCH_DATA or /work/data)")
    ap.add_argument("--out", help="JSON results (default benchmarks/results/derivatives.json, derivatives-quick.json "
                                  "with --quick); the markdown goes beside it with .md")
    ap.add_argument("--jobs", type=int, default=os.cpu_count(), help="processes for indexing and queries")
    core.add_work_arg(ap)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    t_start = time.perf_counter()
    env = core.environment()  # now: the engine measured is the one imported at the start
    data = corpus.data_dir(args.data)
    out = Path(args.out) if args.out else RESULTS / ("derivatives-quick.json" if args.quick else "derivatives.json")
    work = core.work_dir(args, data)
    tmp_dir = work / "tmp"
    per_track = 1 if args.quick else 2
    clock = core.PhaseClock("derivatives")
    timings, loads, phase = clock.timings, clock.loads, clock.done

    t0 = time.perf_counter()
    corpus.ensure_packages([*TOOLS, *SPEECH_TOOLS])
    tracks = corpus.build_corpus(data)
    catalog = [t for t in tracks if t.split == "catalog"]
    out_tracks = [t for t in tracks if t.split == "out"]
    phase("corpus", t0)

    t0 = time.perf_counter()
    index_dir = work / "indexes" / "core"
    index = ensure_catalog_index(index_dir, catalog, args.jobs)
    phase("catalog_index", t0)

    t0 = time.perf_counter()
    queried = sorted(catalog, key=lambda t: t.track_id)[:: 2 if args.quick else 1] + out_tracks
    plan = plan_items(queried, per_track)
    records = core.run_queries(plan, query_item, _init_worker, (str(index_dir), str(tmp_dir), out_tracks),
                               args.jobs, log)
    core.write_text(work / f"{out.stem}-records.json", json.dumps(records))  # checkpoint: the costly part
    phase("queries", t0)

    threshold = MatchConfig().min_score
    names = [d.name for d in ALL_DERIVATIVES]
    accuracy = accuracy_at(records, threshold)
    sweep = [core.threshold_sweep(at_threshold(records, t), (t,), names, LENGTHS_ALL)[0] for t in SWEEP_THRESHOLDS]
    chosen = core.choose_threshold(sweep, core.MAX_FALSE_ALARM_RATE)

    t0 = time.perf_counter()
    scaling = measure_scaling(catalog_subsets(catalog), work / "indexes", tmp_dir, args.jobs)
    phase("scaling", t0)

    timings["total"] = round(time.perf_counter() - t_start, 1)
    result = {
        "benchmark": "derivatives",
        "mode": "quick" if args.quick else "full",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": env,
        "parameters": {"data": str(data), "index_dir": str(index_dir), "excerpts_per_track": per_track,
                       "catalog_tracks": sum(t.split == "catalog" for t in queried), "out_tracks": len(out_tracks),
                       "lengths_s": list(LENGTHS_S), "embed_query_s": EMBED_QUERY_S,
                       "embed_segment_s": EMBED_SEGMENT_S, "embed_host_db": EMBED_HOST_DB,
                       "embed_own_level_host_gain": EMBED_HOST_GAIN,
                       "mix_db": MIX_DB, "voice_db": VOICE_DB, "source_margin_s": SOURCE_MARGIN_S,
                       "derivatives": {d.name: {"how": d.how, "speed": d.speed, "pitch": round(d.pitch, 4),
                                                "kind": d.kind, "sox": list(d.effect)} for d in ALL_DERIVATIVES},
                       "jobs": args.jobs, "silence_db": core.SILENCE_DB, "default_threshold": threshold,
                       "sweep_thresholds": list(SWEEP_THRESHOLDS), "max_false_alarm_rate": core.MAX_FALSE_ALARM_RATE,
                       "speed_tolerance": SPEED_TOL, "pitch_tolerance_st": PITCH_TOL, "locate_tolerance_s": LOCATE_TOL_S,
                       "catalog_fractions": list(CATALOG_FRACTIONS), "subset_seed": SUBSET_SEED},
        "timings_s": timings,
        "load_average_1min": loads,
        "corpus": corpus.summary(tracks),
        "index": index,
        "accuracy": accuracy,
        "threshold_sweep": sweep,
        "chosen_threshold": chosen,
        "scores": score_summary(records),
        "failures": failures(records, threshold),
        "scaling": scaling,
        "queries": {"columns": list(RECORD_COLUMNS), "rows": [[r[c] for c in RECORD_COLUMNS] for r in records]},
    }
    text = markdown(result)
    core.write_json(out, result)
    core.write_text(out.with_suffix(".md"), text)
    print(text)
    log(f"wrote {out} and {out.with_suffix('.md')} in {timings['total']} s")
    return result


if __name__ == "__main__":
    main()
