"""End to end on the real clips: build, query, add, remove, reopen, damage."""

from __future__ import annotations

import hashlib
import json
import shutil

import h5py
import numpy as np
import pytest
import soxr

from audio_tools import (CATALOG, OUTSIDE, add_noise, catalog_sources, clip_path, excerpt, load_clip, resample,
                         sample_in_host, write_audio)
import simsearch.audio
import simsearch.index
from simsearch import matching, store
from simsearch.build import build
from simsearch.config import FeatureConfig, MatchConfig
from simsearch.engine import Engine
from simsearch.errors import (BadAudio, ConfigMismatch, DecoderUnavailable, IndexCorrupt, IndexNotFound,
                              ParameterError, SimsearchError, TrackExists, UnknownTrack)

# (format, sample rate, channels, gain, SNR in dB or None)
VARIANTS = [
    ("ogg", 22050, 1, 1.0, None),  # a plain cut, as the catalog clip is stored
    ("wav", 44100, 2, 1.0, None),
    ("flac", 16000, 1, 0.5, 15),
    ("ogg", 48000, 2, 0.8, 15),
    ("wav-float", 22050, 1, 0.25, None),
    ("mp3", 44100, 2, 1.0, None),
    ("m4a", 44100, 2, 1.0, 15),
    ("opus", 48000, 1, 0.7, None),
]


def _variant_file(tmp_path, name, k, variant):
    """An 8-10 s excerpt of clip `name`, transformed; returns (path, offset s)."""
    fmt, sr_out, channels, gain, snr = variant
    y, sr = load_clip(name)
    offset = 1.7 + 2.9 * (((CATALOG + OUTSIDE).index(name) * 3 + k) % 5)
    x = excerpt(y, sr, offset, 8.0 + k % 3) * gain
    if snr is not None:
        x = add_noise(x, snr, seed=k)
    ext = "wav" if fmt == "wav-float" else fmt
    return write_audio(tmp_path / f"{name}-{k}.{ext}", resample(x, sr, sr_out), sr_out, fmt, channels), offset


def _query_excerpt(eng, name, offset=5.0, duration=9.0, **kw):
    y, sr = load_clip(name)
    return eng.query_samples(resample(excerpt(y, sr, offset, duration), sr, eng.config.sample_rate), **kw)


def _answers(eng, names=CATALOG + OUTSIDE):
    """Everything a query says, but its timing."""
    out = {}
    for n in names:
        res = _query_excerpt(eng, n, offset=7.0)
        out[n] = [m.to_json(with_hits=True) for m in res.matches]
    return out


def _top(eng, name, **kw):
    res = _query_excerpt(eng, name, **kw)
    return res.matches[0].track_id if res.matches else None


# -- matching real excerpts ----------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"{v[0]}-{v[1]}-{v[2]}ch-g{v[3]}-snr{v[4]}")
@pytest.mark.parametrize("name", CATALOG)
def test_excerpt_matches_its_track(engine, tmp_path, name, variant):
    k = VARIANTS.index(variant)
    path, offset = _variant_file(tmp_path, name, k, variant)
    res = engine.query(path)
    assert [m.track_id for m in res.matches] == [name]
    m = res.matches[0]
    assert m.score >= MatchConfig().min_score
    assert m.speed == pytest.approx(1.0, abs=0.01)
    assert abs(m.pitch_semitones) <= 0.25
    assert m.kind == "duplicate"
    # The aligned segment: query time t is reference time offset + t.
    assert m.ref_start - m.query_start == pytest.approx(offset, abs=0.2)
    assert m.ref_end - m.query_end == pytest.approx(offset, abs=0.2)
    assert 0.0 <= m.query_start < m.query_end <= res.duration_s + 0.05
    assert res.duration_s == pytest.approx(8.0 + k % 3, abs=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("name", OUTSIDE)
def test_out_of_catalog_audio_is_not_matched(engine, tmp_path, name):
    assert engine.query(clip_path(name)).matches == []
    for k in (0, 2, 5):
        path, _ = _variant_file(tmp_path, name, k, VARIANTS[k])
        assert engine.query(path).matches == []


@pytest.mark.slow
@pytest.mark.parametrize("name", CATALOG)
def test_sped_up_excerpt_is_a_modified_copy(engine, name):
    y, sr = load_clip(name)
    x = excerpt(y, sr, 6.0, 9.0)
    faster = soxr.resample(x, sr * 1.03, sr).astype(np.float32)  # 3% faster, and higher
    res = engine.query_samples(resample(faster, sr, engine.config.sample_rate))
    assert [m.track_id for m in res.matches] == [name]
    m = res.matches[0]
    assert m.speed == pytest.approx(1.03, abs=0.005)
    assert m.pitch_semitones == pytest.approx(12 * np.log2(1.03), abs=0.1)
    assert m.kind == "modified"
    assert m.ref_start - m.speed * m.query_start == pytest.approx(6.0, abs=0.2)


@pytest.mark.slow
def test_short_insert_is_a_partial_match(engine):
    y, sr = load_clip("flare_cave_theme")
    other, _ = load_clip("flare_boss_theme")
    mix = np.concatenate([excerpt(other, sr, 3.0, 7.0), excerpt(y, sr, 10.0, 4.0), excerpt(other, sr, 12.0, 3.0)])
    res = engine.query_samples(resample(mix, sr, engine.config.sample_rate))
    assert [m.track_id for m in res.matches] == ["flare_cave_theme"]
    m = res.matches[0]
    assert m.kind == "partial"
    assert m.query_start == pytest.approx(7.0, abs=0.5) and m.query_end == pytest.approx(11.0, abs=0.5)
    assert m.ref_start - m.query_start == pytest.approx(3.0, abs=0.2)


def test_a_query_s_lookups_stay_within_its_budget(engine, monkeypatch):
    """max_lookup_entries bounds the table entries each pass reads; a plain
    copy is still found on a budget well under what its probes would read."""
    y, sr = load_clip(CATALOG[0])
    x = resample(excerpt(y, sr, 4.0, 10.0), sr, engine.config.sample_rate)
    read = []
    lookup = engine.index.lookup

    def counting(codes, max_entries=None, weight=None):
        keep = engine.index.within_budget(codes, max_entries, weight) if max_entries is not None else slice(None)
        read.append(int(engine.index._table.cost(codes)[keep].sum()))
        return lookup(codes, max_entries, weight)

    monkeypatch.setattr(engine.index, "lookup", counting)
    full = engine.query_samples(x, MatchConfig(early_exit_score=1e9))
    unbounded = list(read)
    read.clear()
    budget = min(unbounded) // 4
    bounded = engine.query_samples(x, MatchConfig(early_exit_score=1e9, max_lookup_entries=budget))
    assert len(read) == 2 and max(read) <= budget < min(unbounded)
    assert [m.track_id for m in bounded.matches][:1] == [m.track_id for m in full.matches][:1] == [CATALOG[0]]
    assert engine.query_samples(x, MatchConfig(max_lookup_entries=0)).matches == []


def _medley(eng):
    """6 s of cave, 4 s of forest, 3 s of town: three partial matches."""
    parts = [("flare_cave_theme", 2.0, 6.0), ("flare_forest_theme", 10.0, 4.0), ("flare_town_theme", 5.0, 3.0)]
    sr = load_clip(CATALOG[0])[1]
    y = np.concatenate([excerpt(load_clip(n)[0], sr, off, dur) for n, off, dur in parts])
    return resample(y, sr, eng.config.sample_rate)


def test_list_target_sizes_the_serving_table_and_keeps_the_answers(catalog_dir, engine):
    wide = Engine(catalog_dir, list_target=4)
    got, default = wide.stats()["faiss_parameters"], engine.stats()["faiss_parameters"]
    assert got["list_target"] == 4 and default["list_target"] == simsearch.index.LIST_TARGET
    assert got["nlist"] == 4 * default["nlist"] and got["entries"] == default["entries"]
    assert got["entries_per_list_mean"] <= 4
    assert _answers(wide, CATALOG[:2] + OUTSIDE[:1]) == _answers(engine, CATALOG[:2] + OUTSIDE[:1])
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ParameterError, match="list_target"):
            Engine(catalog_dir, list_target=bad)


def test_medley_top_k_and_min_score(engine):
    y = _medley(engine)
    res = engine.query_samples(y)
    starts = {"flare_cave_theme": 0.0, "flare_forest_theme": 6.0, "flare_town_theme": 10.0}
    assert sorted(m.track_id for m in res.matches) == sorted(starts)
    assert all(m.kind == "partial" for m in res.matches)
    for m in res.matches:
        assert m.query_start == pytest.approx(starts[m.track_id], abs=0.6)
    scores = [m.score for m in res.matches]
    assert scores == sorted(scores, reverse=True)
    top = res.matches[0].track_id
    assert [m.track_id for m in engine.query_samples(y, MatchConfig(top_k=1)).matches] == [top]
    between = (scores[1] + scores[2]) / 2
    assert len(engine.query_samples(y, MatchConfig(min_score=between)).matches) == 2
    assert engine.query_samples(y, MatchConfig(min_score=scores[0] + 1)).matches == []


def test_query_result_json(engine):
    res = _query_excerpt(engine, "flare_town_theme")
    body = res.to_json(with_hits=True)
    assert set(body) == {"duration_s", "matches", "elapsed_ms"}
    m = body["matches"][0]
    assert m["track_id"] == "flare_town_theme" and m["kind"] == "duplicate"
    assert len(m["hits"]) >= m["score"] and all(len(h) == 2 for h in m["hits"])
    assert "hits" not in res.to_json()["matches"][0]
    assert all(set(r) == {"ref_start", "ref_end", "score"} for r in m["repeats"])
    json.dumps(body)  # plain JSON types only


@pytest.mark.slow
def test_a_passage_the_track_repeats_is_reported_at_each_place(index_copy):
    """A catalog track that plays one passage twice, 20 s apart: a query of
    that passage matches one place and reports the other as a repeat, with
    its own score; a track that plays it once has no repeat, and neither
    does music that only resembles itself elsewhere (the boss theme 13.5 s
    on verifies at about a quarter of the match's score)."""
    y, sr = load_clip("flare_dungeon_theme")
    other, _ = load_clip("flare_boss_theme")
    track = np.concatenate([excerpt(y, sr, 0.0, 12.0), excerpt(other, sr, 0.0, 10.0), excerpt(y, sr, 2.0, 8.0),
                            excerpt(other, sr, 10.0, 8.0)])
    eng = Engine(index_copy)
    eng.add_samples("repeats", resample(track, sr, eng.config.sample_rate))
    query = resample(excerpt(y, sr, 3.0, 6.0), sr, eng.config.sample_rate)
    m = eng.query_samples(query).matches[0]
    assert m.track_id == "repeats", m
    assert len(m.repeats) == 1, m.repeats
    r = m.repeats[0]
    assert sorted([m.ref_start, r.ref_start]) == [pytest.approx(3.0, abs=0.5), pytest.approx(23.0, abs=0.5)]
    assert r.ref_end - r.ref_start == pytest.approx(m.ref_end - m.ref_start, abs=0.01)
    assert r.score >= MatchConfig().min_score
    eng.add_samples("once", resample(np.concatenate([excerpt(other, sr, 0.0, 10.0), excerpt(y, sr, 0.0, 12.0)]),
                                     sr, eng.config.sample_rate))
    by_id = {m.track_id: m for m in Engine(index_copy).query_samples(query).matches}
    assert by_id["once"].ref_start == pytest.approx(13.0, abs=0.5) and by_id["once"].repeats == ()
    assert len(by_id["repeats"].repeats) == 1
    assert eng.query_samples(query, MatchConfig(max_repeats=0)).matches[0].repeats == ()
    boss = resample(excerpt(other, sr, 1.0, 6.0), sr, eng.config.sample_rate)
    m = next(m for m in eng.query_samples(boss).matches if m.track_id == "repeats")
    assert m.ref_start == pytest.approx(13.0, abs=0.5) and m.repeats == (), m
    m = next(m for m in eng.query_samples(boss, MatchConfig(repeat_min_ratio=0.0)).matches if m.track_id == "repeats")
    assert m.repeats and all(r.score < 0.5 * m.score for r in m.repeats), m


# -- catalog changes -------------------------------------------------------------

@pytest.mark.slow
def test_add_then_query_finds_the_new_track(index_copy):
    eng = Engine(index_copy)
    assert _top(eng, "flare_dungeon_theme") is None
    info = eng.add("new/dungeon theme", clip_path("flare_dungeon_theme"), meta={"by": "flare"})
    assert info.track_id == "new/dungeon theme" and info.n_triplets > 100
    assert info.duration == pytest.approx(25.0, abs=0.1)
    assert _top(eng, "flare_dungeon_theme") == "new/dungeon theme"
    assert _top(eng, "flare_battle_theme") == "flare_battle_theme"
    reopened = Engine(index_copy)
    assert _top(reopened, "flare_dungeon_theme") == "new/dungeon theme"
    assert reopened.get("new/dungeon theme").meta == {"by": "flare"}
    assert reopened.stats()["tracks"] == len(CATALOG) + 1


@pytest.mark.slow
def test_remove_makes_a_track_unfindable(index_copy):
    eng = Engine(index_copy)
    removed = eng.remove("flare_battle_theme")
    assert removed.track_id == "flare_battle_theme"
    assert _top(eng, "flare_battle_theme") is None
    loose = _query_excerpt(eng, "flare_battle_theme", match_config=MatchConfig(min_score=0.0, top_k=50))
    assert all(m.track_id != "flare_battle_theme" for m in loose.matches)
    with pytest.raises(UnknownTrack):
        eng.get("flare_battle_theme")
    with pytest.raises(UnknownTrack):
        eng.remove("flare_battle_theme")
    assert _top(eng, "flare_cave_theme") == "flare_cave_theme"
    reopened = Engine(index_copy)
    assert "flare_battle_theme" not in reopened.tracks
    assert _top(reopened, "flare_battle_theme") is None


@pytest.mark.slow
def test_removed_id_can_be_added_again_with_other_audio(index_copy):
    eng = Engine(index_copy)
    eng.remove("flare_town_theme")
    eng.add("flare_town_theme", clip_path("flare_boss_theme"))
    for e in (eng, Engine(index_copy)):
        assert _top(e, "flare_boss_theme") == "flare_town_theme"
        assert _top(e, "flare_town_theme") is None


@pytest.mark.slow
def test_reopened_engine_gives_the_same_answers(index_copy):
    eng = Engine(index_copy)
    eng.add("extra/boss", clip_path("flare_boss_theme"))
    eng.remove("flare_forest_theme")
    live = _answers(eng)
    assert live["flare_boss_theme"][0]["track_id"] == "extra/boss"
    assert live["flare_forest_theme"] == []
    reopened = Engine(index_copy)
    assert _answers(reopened) == live
    assert sorted(reopened.tracks) == sorted(eng.tracks)


def _synthetic_batch(rng, cfg, numbers, ids, pool):
    """Tracks `ids` numbered `numbers`, of a few hundred triplets each whose
    codes are drawn from `pool` (so that tracks share codes), anchors in time order."""
    count = rng.integers(0, 400, len(ids))
    n = int(count.sum())
    t1 = np.concatenate([np.sort(rng.uniform(0, 3000, c)) for c in count]).astype(np.float32)
    return store.TrackBatch(list(ids), np.array(numbers, np.int64), rng.uniform(5, 60, len(ids)),
                            [""] * len(ids), ["{}"] * len(ids), count, pool[rng.integers(0, len(pool), n)],
                            t1, rng.uniform(0, cfg.n_bins - 1, n).astype(np.float32),
                            rng.uniform(cfg.min_span, cfg.max_span, n).astype(np.float32))


def test_streamed_load_gives_the_lookups_and_anchors_of_an_in_memory_build(tmp_path):
    """Engine opens an index segment by segment (index.TableBuilder); its
    table answers every probe as a HashIndex built from all the live
    entries at once, in segment order: the same hits, in the same order.
    Superseded copies (an id a later segment re-adds) and removed tracks
    are left out, from the table and from the anchors."""
    rng = np.random.default_rng(12)
    cfg = FeatureConfig()
    pool = rng.choice(cfg.hash_cardinality, 300, replace=False).astype(np.uint64)
    gen = tmp_path / "index" / store.new_generation_name()
    gen.mkdir(parents=True)
    store.write_generation_config(gen, cfg)
    batches = [_synthetic_batch(rng, cfg, range(0, 12), [f"a/{i}" for i in range(12)], pool),
               store.TrackBatch.empty(),
               _synthetic_batch(rng, cfg, range(12, 20), [f"b/{i}" for i in range(8)], pool),
               _synthetic_batch(rng, cfg, range(20, 25), ["a/3", "c/0", "a/7", "c/1", "c/2"], pool)]
    for seq, batch in enumerate(batches, 1):
        store.write_segment(gen, seq, batch, cfg)
    store.write_removed(gen, {5, 14, 23})  # a track of each segment with tracks
    store.switch_generation(tmp_path / "index", gen)
    live = {3: False, 7: False, 5: False, 14: False, 23: False}  # superseded (3, 7) or removed
    all_ = store.TrackBatch.concat(batches)
    keep = np.array([live.get(int(n), True) for n in all_.number])
    sel = np.repeat(keep, all_.count)
    numbers = all_.triplet_track_numbers()[sel]
    ids = simsearch.index.pack_ids(numbers, all_.t1[sel], all_.f1[sel], all_.span[sel])
    absent = rng.integers(0, cfg.hash_cardinality, 500, dtype=np.uint64)
    probes = rng.permutation(np.concatenate([pool, absent[~np.isin(absent, pool)]]))
    for list_target in (16, 1):  # few lists, and about one per code
        eng = Engine(tmp_path / "index", list_target=list_target)
        expected = simsearch.index.HashIndex(cfg.hash_cardinality, all_.codes[sel], ids, list_target)
        assert eng.index.table_size == int(sel.sum()) and eng.index.added_size == 0
        assert eng.index.parameters()["nlist"] == expected.parameters()["nlist"]
        got, want = eng.index.lookup(probes), expected.lookup(probes)
        assert len(want[1]) == int(sel.sum())  # every entry, once: codes shared by ~12 entries each
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        assert not np.isin(got[1] >> simsearch.index.TRACK_SHIFT, list(live)).any()
    assert sorted(eng.by_number) == [int(n) for n in all_.number if live.get(int(n), True)]
    assert eng.get("a/3").number == 20 and eng.get("a/7").number == 22 and "c/1" not in eng.tracks
    assert len(eng.anchors) == len(eng.by_number)
    reference = matching.ReferenceAnchors()
    reference.add(numbers, all_.t1[sel], all_.f1[sel])
    for n in eng.by_number:
        for a, b in zip(eng.anchors.get(n), reference.get(n)):
            np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_additions_past_the_threshold_are_folded_into_the_table(index_copy, monkeypatch):
    monkeypatch.setattr(simsearch.index, "SIDE_MIN", 1)
    monkeypatch.setattr(simsearch.index, "SIDE_FRACTION", 1 << 30)  # every addition is due
    eng = Engine(index_copy)
    cave = eng.remove("flare_cave_theme")
    before = eng.index.ntotal
    info = eng.add("new/dungeon", clip_path("flare_dungeon_theme"))
    assert eng.index.added_size == 0, "the addition was not folded into the table"
    assert eng.index.ntotal == before - cave.n_triplets + info.n_triplets  # the removed track's codes went
    assert _top(eng, "flare_dungeon_theme") == "new/dungeon"
    assert _top(eng, "flare_cave_theme") is None
    assert _answers(eng) == _answers(Engine(index_copy))


def test_add_refuses_bad_ids_taken_ids_and_bad_audio(index_copy, tmp_path):
    eng = Engine(index_copy)
    segments = store.list_segments(eng.gen_dir)
    with pytest.raises(TrackExists):
        eng.add("flare_cave_theme", clip_path("flare_boss_theme"))
    for bad in ["", " padded", "tab\tid", "bell\x07", "del\x7f", "x" * 257, "é" * 129]:
        with pytest.raises(ParameterError):
            eng.add(bad, clip_path("flare_boss_theme"))
    text = tmp_path / "notes.ogg"
    text.write_text("these are not audio samples\n" * 20)
    with pytest.raises(BadAudio):
        eng.add("text", text)
    assert store.list_segments(eng.gen_dir) == segments
    assert sorted(Engine(index_copy).tracks) == sorted(CATALOG)
    # 256 bytes exactly is allowed.
    assert eng.add("é" * 128, clip_path("flare_boss_theme")).track_id == "é" * 128


def _sample_under_louder_music(eng) -> np.ndarray:
    """8 s of the forest theme from 14 s at 9 s in the boss theme: the hits
    alone miss its first 5 s (tests/test_derivatives.py)."""
    y, sr = sample_in_host("flare_forest_theme", 14.0, 8.0, "flare_boss_theme", 9.0)
    return resample(y, sr, eng.config.sample_rate)


@pytest.mark.slow
def test_a_track_added_while_serving_is_located(index_copy):
    eng, reader = Engine(index_copy), Engine(index_copy)
    eng.remove("flare_forest_theme")
    eng.add("again/forest", clip_path("flare_forest_theme"))  # a segment of its own, written now
    assert reader.refresh() is True
    for e in (eng, reader, Engine(index_copy)):
        m = e.query_samples(_sample_under_louder_music(e)).matches[0]
        assert m.track_id == "again/forest"
        assert m.query_start == pytest.approx(9.0, abs=1.0) and m.ref_start == pytest.approx(14.0, abs=1.0)


def test_locating_needs_no_file_once_the_index_is_loaded(index_copy):
    """The anchors live in memory: a match is located even when its segment
    is gone (as a rebuild by another process drops an old generation)."""
    eng = Engine(index_copy)
    y = _sample_under_louder_music(eng)
    unlocated = eng.query_samples(y, MatchConfig(locate=False)).matches
    assert unlocated[0].query_start > 10.0  # what locating adds to
    located = eng.query_samples(y).matches
    for seg in store.list_segments(eng.gen_dir):
        seg.unlink()
    assert eng.query_samples(y).matches == located
    assert located[0].query_start == pytest.approx(9.0, abs=1.0)


def test_refresh_sees_another_engines_changes(index_copy):
    reader, writer = Engine(index_copy), Engine(index_copy)
    assert reader.refresh() is False
    writer.add("extra/dungeon", clip_path("flare_dungeon_theme"))
    assert reader.refresh() is True
    assert "extra/dungeon" in reader.tracks
    writer.remove("flare_cave_theme")
    assert reader.refresh() is True
    assert "flare_cave_theme" not in reader.tracks
    assert reader.refresh() is False


def test_sync_sees_another_engines_changes_at_once_and_reads_only_what_is_new(index_copy, monkeypatch):
    """What each server process does before a request: nothing is read while
    nothing changed; after another process's addition or removal, only the new
    segment and the list of removals, into the same FAISS index."""
    reader, writer = Engine(index_copy), Engine(index_copy)
    index, real_read, reads = reader.index, store.read_segment, []
    monkeypatch.setattr(store, "read_segment", lambda path, *a, **kw: reads.append(path.name) or real_read(path, *a, **kw))
    reader.sync()
    assert reads == []
    info = writer.add("extra/dungeon", clip_path("flare_dungeon_theme"))
    reader.sync()
    assert reader.get("extra/dungeon").number == info.number
    assert _top(reader, "flare_dungeon_theme") == "extra/dungeon"
    writer.remove("extra/dungeon")
    writer.remove("flare_cave_theme")
    reader.sync()
    assert "extra/dungeon" not in reader.tracks and "flare_cave_theme" not in reader.tracks
    assert _top(reader, "flare_dungeon_theme") is None and _top(reader, "flare_cave_theme") is None
    writer.add("flare_cave_theme", clip_path("flare_boss_theme"))  # a removed id again, with other audio
    reader.sync()
    assert _top(reader, "flare_boss_theme") == "flare_cave_theme"
    assert len(reads) == 2 and reader.index is index
    # The reader's own addition takes a number after the writer's, and the writer sees it.
    mine = reader.add("reader/dungeon", clip_path("flare_dungeon_theme"))
    assert mine.number > writer.get("flare_cave_theme").number
    writer.sync()
    assert _top(writer, "flare_dungeon_theme") == "reader/dungeon"
    assert _answers(reader) == _answers(writer) == _answers(Engine(index_copy))


def test_sync_sees_a_rebuild_at_once(index_copy):
    """A switch is logged in the generation it replaces; a reader of a generation
    that is gone (two rebuilds later) reloads too."""
    reader = Engine(index_copy)
    first = reader.gen_dir
    build(index_copy, catalog_sources(["flare_cave_theme"]), jobs=1, progress=False)
    assert store.change_log_size(first) > 0
    reader.sync()
    assert sorted(reader.tracks) == ["flare_cave_theme"] and reader.gen_dir != first
    stale = Engine(index_copy)
    for names in (["flare_town_theme"], ["flare_boss_theme"]):
        build(index_copy, catalog_sources(names), jobs=1, progress=False)
    assert store.change_log_size(stale.gen_dir) == -1  # kept for one rollback only, then deleted
    stale.sync()
    assert sorted(stale.tracks) == ["flare_boss_theme"]


# -- several writers on one index (a server's Engine and the CLI) ------------------

def test_removals_by_two_engines_are_both_kept(index_copy):
    server, cli = Engine(index_copy), Engine(index_copy)
    cli.remove("flare_battle_theme")
    server.remove("flare_cave_theme")
    tracks = set(Engine(index_copy).tracks)
    assert "flare_cave_theme" not in tracks
    assert "flare_battle_theme" not in tracks, "the first removal was overwritten by the second engine"


def test_additions_by_two_engines_get_distinct_track_numbers(index_copy):
    server, cli = Engine(index_copy), Engine(index_copy)
    cli.add("cli/dungeon", clip_path("flare_dungeon_theme"))
    server.add("server/boss", clip_path("flare_boss_theme"))
    reopened = Engine(index_copy)
    numbers = [t.number for t in reopened.tracks.values()]
    assert len(set(numbers)) == len(numbers), f"track numbers collide: {sorted(numbers)}"
    assert _top(reopened, "flare_dungeon_theme") == "cli/dungeon"
    assert _top(reopened, "flare_boss_theme") == "server/boss"


def test_add_after_a_rebuild_by_another_process_is_not_lost(index_copy):
    server = Engine(index_copy)
    build(index_copy, catalog_sources(), jobs=1, progress=False)  # e.g. `simsearch build` in a shell
    try:
        server.add("late/dungeon", clip_path("flare_dungeon_theme"))
        added = True
    except SimsearchError:  # refusing a write to a stale generation is acceptable too
        added = False
    reopened = Engine(index_copy)
    assert sorted(CATALOG) == sorted(t for t in reopened.tracks if t != "late/dungeon")
    assert ("late/dungeon" in reopened.tracks) == added, "add() returned but the track is not in the live index"


# -- on-disk configuration and damage -------------------------------------------

def _gen(index_dir):
    return store.current_generation(index_dir)


def _edit_config_json(index_dir, edit):
    path = _gen(index_dir) / "config.json"
    body = json.loads(path.read_text())
    edit(body)
    path.write_text(json.dumps(body))


def _rename_to_checksum(path):
    """Give an edited segment the name its new content checksums to."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    seq = path.name.split("-")[1]
    new = path.with_name(f"segment-{seq}-{digest}.h5")
    path.rename(new)
    return new


def test_index_with_another_format_version_is_refused(index_copy):
    _edit_config_json(index_copy, lambda b: b.update(format_version=99))
    with pytest.raises(ConfigMismatch):
        Engine(index_copy)


def test_config_json_disagreeing_with_segments_is_refused(index_copy):
    _edit_config_json(index_copy, lambda b: b["feature_config"].update(bins_per_octave=24))
    with pytest.raises(ConfigMismatch, match="feature configuration"):
        Engine(index_copy)


def test_config_json_with_an_unknown_field_is_refused(index_copy):
    # An index written by another simsearch, with a feature field this one
    # lacks: e.g. every index built before eb13d46 moved query_fanout and
    # query_peaks_per_block out of FeatureConfig.
    _edit_config_json(index_copy, lambda b: b["feature_config"].update(onset_weighting=0.5))
    with pytest.raises(ConfigMismatch):
        Engine(index_copy)


def test_segment_of_another_feature_configuration_is_refused(index_copy, tmp_path):
    other_cfg = FeatureConfig(bins_per_octave=24)
    other = tmp_path / "other"
    build(other, catalog_sources(["flare_town_theme"]), cfg=other_cfg, jobs=1, progress=False)
    # An index built with another configuration opens with its own.
    assert Engine(other).config == other_cfg
    assert _top(Engine(other), "flare_town_theme") == "flare_town_theme"
    # Mixed into the default index, its segment is refused.
    gen = _gen(index_copy)
    seq = store.next_segment_seq(gen)
    src = store.list_segments(_gen(other))[0]
    shutil.copy(src, gen / f"segment-{seq:06d}-{src.name.split('-')[2]}")
    with pytest.raises(ConfigMismatch):
        Engine(index_copy)


def test_segment_of_another_format_version_is_refused(index_copy):
    seg = store.list_segments(_gen(index_copy))[0]
    with h5py.File(seg, "r+") as h:
        h.attrs["format_version"] = 99
    _rename_to_checksum(seg)
    with pytest.raises(ConfigMismatch):
        Engine(index_copy)


def test_damaged_segment_is_reported_with_a_recovery_command(index_copy):
    seg = store.list_segments(_gen(index_copy))[0]
    data = bytearray(seg.read_bytes())
    for k in range(len(data) // 2, len(data) // 2 + 16):
        data[k] ^= 0xFF
    seg.write_bytes(bytes(data))
    with pytest.raises(IndexCorrupt) as exc:
        Engine(index_copy)
    assert seg.name in str(exc.value)
    assert "simsearch build" in str(exc.value)


def test_unreadable_segment_is_reported_with_a_recovery_command(index_copy):
    # Damage the HDF5 superblock and fix the name, so only HDF5 can notice.
    seg = store.list_segments(_gen(index_copy))[0]
    data = bytearray(seg.read_bytes())
    data[:64] = b"\0" * 64
    seg.write_bytes(bytes(data))
    _rename_to_checksum(seg)
    with pytest.raises(IndexCorrupt) as exc:
        Engine(index_copy)
    assert "simsearch build" in str(exc.value)


def test_segment_whose_track_records_disagree_with_its_triplets_is_refused(index_copy):
    seg = store.list_segments(_gen(index_copy))[0]
    with h5py.File(seg, "r+") as h:
        h["tracks/count"][0] += 1
    _rename_to_checksum(seg)
    with pytest.raises(IndexCorrupt, match="triplets"):
        Engine(index_copy)


def test_a_segment_s_triplet_arrays_are_read_as_asked(catalog_dir):
    seg = store.list_segments(_gen(catalog_dir))[0]
    cfg = store.read_generation_config(_gen(catalog_dir))
    whole = store.read_segment(seg, cfg)
    records = store.read_segment(seg, cfg, triplets=())
    codes = store.read_segment(seg, cfg, triplets=("codes",))
    assert records.track_id == whole.track_id and np.array_equal(records.count, whole.count)
    assert records.codes is None and records.t1 is None and codes.t1 is None and codes.span is None
    np.testing.assert_array_equal(codes.codes, whole.codes)
    with pytest.raises(ValueError, match="t2"):
        store.read_segment(seg, cfg, triplets=("codes", "t2"))


def test_missing_index_and_missing_generation(tmp_path, index_copy):
    with pytest.raises(IndexNotFound, match="simsearch build"):
        Engine(tmp_path / "nothing here")
    (index_copy / "CURRENT").write_text("gen-does-not-exist\n")
    with pytest.raises(IndexCorrupt):
        Engine(index_copy)


# -- offline builds -------------------------------------------------------------

@pytest.mark.slow
def test_build_reports_bad_files_and_indexes_the_rest(tmp_path):
    text = tmp_path / "not_audio.ogg"
    text.write_text("a text file with an audio name\n" * 50)
    sources = catalog_sources() + [("not_audio", str(text)), ("missing", str(tmp_path / "missing.ogg")),
                                   ("bad\x01id", str(clip_path("flare_boss_theme")))]
    report = build(tmp_path / "index", sources, jobs=2, progress=False)
    assert report.tracks == len(CATALOG)
    assert sorted(t for t, _, _ in report.failures) == sorted(["not_audio", "missing", "bad\x01id"])
    assert all(err for _, _, err in report.failures)
    assert report.to_json()["failed"] == 3
    eng = Engine(tmp_path / "index")
    assert sorted(eng.tracks) == sorted(CATALOG)
    failures_tsv = (eng.gen_dir / "failures.tsv").read_text()
    assert "not_audio" in failures_tsv and "missing" in failures_tsv
    assert _top(eng, "flare_forest_theme") == "flare_forest_theme"


def test_without_ffmpeg_other_containers_fail_clearly(tmp_path, monkeypatch, index_copy):
    y, sr = load_clip("flare_cave_theme")
    m4a = write_audio(tmp_path / "cave.m4a", excerpt(y, sr, 4.0, 9.0), sr, "m4a")
    monkeypatch.setattr(simsearch.audio, "ffmpeg_path", lambda: None)
    eng = Engine(index_copy)
    with pytest.raises(DecoderUnavailable, match="ffmpeg"):
        eng.query(m4a)
    # A build goes on with what libsndfile reads, and names the missing decoder.
    report = build(tmp_path / "index", catalog_sources(CATALOG[:1]) + [("cave_m4a", str(m4a))],
                   jobs=1, progress=False)
    assert report.tracks == 1
    assert [(t, "ffmpeg" in err) for t, _, err in report.failures] == [("cave_m4a", True)]


def test_build_refuses_duplicate_ids(tmp_path):
    with pytest.raises(ParameterError, match="duplicate"):
        build(tmp_path / "index", catalog_sources() + [("flare_cave_theme", str(clip_path("flare_boss_theme")))],
              jobs=1, progress=False)


class SimulatedCrash(Exception):
    pass


def _crash_after(monkeypatch, n_segments):
    """Make the build die while writing its (n+1)-th segment, leaving a
    temporary file as a killed process would.  Returns the ids written."""
    real_write = store.write_segment
    written = []

    def write_segment(gen_dir, seq, batch, cfg):
        if len(written) == n_segments:
            (gen_dir / f".segment-{seq:06d}.tmp99999").write_bytes(b"half a segment")
            raise SimulatedCrash()
        written.append(list(batch.track_id))
        return real_write(gen_dir, seq, batch, cfg)

    monkeypatch.setattr(store, "write_segment", write_segment)
    return written


@pytest.mark.slow
def test_interrupted_build_resumes(tmp_path, monkeypatch):
    index_dir = tmp_path / "index"
    written = _crash_after(monkeypatch, 2)
    with pytest.raises(SimulatedCrash):
        build(index_dir, catalog_sources(), jobs=1, progress=False, flush_tracks=1)
    monkeypatch.undo()
    work = index_dir / "building"
    assert not (index_dir / "CURRENT").exists(), "an interrupted build must not switch"
    first_run = {p.name for p in store.list_segments(work)}
    assert len(first_run) == 2 and len(written) == 2

    report = build(index_dir, catalog_sources(), jobs=1, progress=False)
    assert report.resumed == 2 and report.tracks == len(CATALOG) and report.failures == []
    assert not work.exists()
    gen = _gen(index_dir)
    segments = {p.name for p in store.list_segments(gen)}
    assert first_run <= segments and len(segments) == 3  # kept as written: names carry checksums
    assert not list(gen.glob(".segment-*")), "the half-written segment was left behind"
    eng = Engine(index_dir)
    assert sorted(eng.tracks) == sorted(CATALOG)
    assert len({t.number for t in eng.tracks.values()}) == len(CATALOG)
    for name in CATALOG:
        assert _top(eng, name) == name


def test_resume_with_another_configuration_starts_over(tmp_path, monkeypatch):
    index_dir = tmp_path / "index"
    sources = catalog_sources(CATALOG[:2])
    _crash_after(monkeypatch, 1)
    with pytest.raises(SimulatedCrash):
        build(index_dir, sources, jobs=1, progress=False, flush_tracks=1)
    monkeypatch.undo()
    other_cfg = FeatureConfig(bins_per_octave=24)
    report = build(index_dir, sources, cfg=other_cfg, jobs=1, progress=False)
    assert report.resumed == 0 and report.tracks == 2
    eng = Engine(index_dir)
    assert eng.config == other_cfg and sorted(eng.tracks) == sorted(CATALOG[:2])


def test_rebuild_keeps_the_previous_generation_for_rollback(tmp_path, monkeypatch):
    # Three builds within one second: their names share the timestamp and
    # differ only in the random suffix.
    names = iter(["gen-20250301-120000-c0ffee", "gen-20250301-120000-0a0a0a", "gen-20250301-120000-777777"])
    monkeypatch.setattr(store, "new_generation_name", lambda: next(names))
    index_dir = tmp_path / "index"
    for name in CATALOG[:3]:
        build(index_dir, catalog_sources([name]), jobs=1, progress=False)
    assert _gen(index_dir).name == "gen-20250301-120000-777777"
    assert sorted(Engine(index_dir).tracks) == [CATALOG[2]]
    kept = sorted(p.name for p in index_dir.iterdir() if p.name.startswith("gen-"))
    assert kept == ["gen-20250301-120000-0a0a0a", "gen-20250301-120000-777777"], \
        "the generation kept for rollback must be the one just replaced"


def test_build_reads_files_whose_relative_name_has_a_colon(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(clip_path("flare_town_theme"), tmp_path / "Nocturne: Op 27.ogg")
    report = build(tmp_path / "index", [("nocturne", "Nocturne: Op 27.ogg")], jobs=1, progress=False)
    assert report.failures == [] and report.tracks == 1


def test_a_second_concurrent_build_of_one_index_is_refused(tmp_path):
    """Two builds into one directory would interleave track numbers in the same
    building/ directory and mislabel tracks: the second one must fail fast."""
    from simsearch import store
    from simsearch.build import build
    from simsearch.errors import BuildInProgress

    index_dir = tmp_path / "index"
    with store.build_lock(index_dir):  # as a running build holds it
        with pytest.raises(BuildInProgress):
            build(index_dir, catalog_sources()[:1], jobs=1, progress=False)
    report = build(index_dir, catalog_sources()[:1], jobs=1, progress=False)
    assert report.tracks == 1


def test_check_and_repair_a_damaged_index(index_copy, capsys):
    """`simsearch check` names the damage; `simsearch repair` switches to a generation
    without it, lists the tracks lost with it, and keeps every other track."""
    from simsearch.cli import main

    eng = Engine(index_copy)
    before = set(eng.tracks)
    added = eng.add("later/addition", clip_path(OUTSIDE[0]))  # a segment of its own
    seg = store.list_segments(_gen(index_copy))[-1]
    assert main(["check", str(index_copy)]) == 0
    data = bytearray(seg.read_bytes())
    data[-200:-100] = b"\xff" * 100  # the end of the file: the triplets, not the track table
    seg.write_bytes(bytes(data))
    capsys.readouterr()
    with pytest.raises(IndexCorrupt, match=f"simsearch repair {index_copy}"):
        Engine(index_copy)
    assert main(["check", str(index_copy)]) == 1
    assert "simsearch repair" in capsys.readouterr().err
    assert main(["repair", str(index_copy)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["lost_track_ids"] == [added.track_id] and out["unknown_losses"] == 0
    assert main(["check", str(index_copy)]) == 0
    repaired = Engine(index_copy)
    assert set(repaired.tracks) == before
    assert repaired.query(clip_path(CATALOG[0])).matches[0].track_id == CATALOG[0]
