"""The FAISS index against an exact numpy oracle, its on-memory layout against
FAISS's own writer, additions, compaction, and the hit-id layout."""

from __future__ import annotations

import subprocess
import sys
import threading

import faiss
import numpy as np
import pytest

from audio_tools import load_clip, resample
from simsearch import features, index as index_module, store
from simsearch.config import FeatureConfig, MatchConfig
from simsearch.index import (MAX_HALF_FRAMES, MAX_TRACKS, TRACK_SHIFT, HashIndex, TableBuilder, marked,
                             pack_ids, unpack_ids)

CARD = FeatureConfig().hash_cardinality
BITS = HashIndex(CARD).bits


def _oracle(stored_codes, stored_ids, probes):
    """(probe, ids) by brute force: probe by probe, each probe's ids in the
    order they were stored (the order IndexBinaryHash gives them)."""
    eq = probes[:, None] == stored_codes[None, :]
    p, s = np.nonzero(eq)  # row-major: by probe, then by storage position
    return p.astype(np.int64), stored_ids[s]


def _assert_same(found, expected):
    (p, ids), (ep, eids) = found, expected
    assert len(p) == len(ids)
    np.testing.assert_array_equal(p, ep)
    np.testing.assert_array_equal(ids, eids)


def _random_entries(rng, n, distinct):
    """n codes drawn from `distinct` random codes below the cardinality, so
    many share a code; ids unique."""
    pool = rng.integers(0, CARD, distinct, dtype=np.uint64)
    codes = pool[rng.integers(0, distinct, n)]
    ids = rng.permutation(np.arange(n, dtype=np.int64) * 7 + 3)
    return pool, codes, ids


def _probes(rng, pool, n_absent=300):
    """Stored codes (some repeated), codes never stored, and the ends of the range."""
    absent = rng.integers(0, CARD, n_absent, dtype=np.uint64)
    probes = np.concatenate([pool[:200], pool[:3], absent, np.array([0, CARD - 1], np.uint64)])
    return probes[rng.permutation(len(probes))]


# -- hit ids ------------------------------------------------------------------

def test_pack_unpack_round_trip():
    rng = np.random.default_rng(0)
    n = 10_000
    track = rng.integers(0, MAX_TRACKS, n)
    t1 = rng.integers(0, MAX_HALF_FRAMES, n) * 0.5
    f1 = rng.integers(0, 512, n) * 0.5
    span = rng.integers(0, 256, n) * 0.5
    ids = pack_ids(track, t1, f1, span)
    assert ids.dtype == np.int64 and np.all(ids >= 0)  # FAISS keeps -1 for "none"
    got = unpack_ids(ids)
    for a, b in zip(got, (track, t1, f1, span)):
        np.testing.assert_array_equal(a, b)


def test_pack_rounds_to_half_units_and_clips():
    ids = pack_ids(np.array([5, 5]), np.array([10.26, -3.0]), np.array([40.74, 1000.0]), np.array([12.1, 500.0]))
    track, t1, f1, span = unpack_ids(ids)
    assert track.tolist() == [5, 5]
    assert t1.tolist() == [10.5, 0.0]
    assert f1.tolist() == [40.5, 255.5]
    assert span.tolist() == [12.0, 127.5]


def test_feature_ranges_fit_the_hit_id():
    cfg = FeatureConfig()
    assert cfg.n_bins * 2 <= 512 and cfg.max_span * 2 < 256


# -- the table ----------------------------------------------------------------

@pytest.mark.parametrize("n, distinct", [(1, 1), (500, 50), (20_000, 3000), (300_000, 100_000)])
def test_table_returns_exactly_the_ids_with_the_probe_code(n, distinct):
    # From one list (3-byte stored codes) to 2^15 lists (1-byte codes).
    rng = np.random.default_rng(n)
    pool, codes, ids = _random_entries(rng, n, distinct)
    index = HashIndex(CARD, codes, ids)
    assert index.ntotal == n and index.added_size == 0
    probes = _probes(rng, pool)
    _assert_same(index.lookup(probes), _oracle(codes, ids, probes))


@pytest.mark.parametrize("n", [1, 5000, 200_000])
def test_codes_that_differ_in_one_bit_do_not_match(n):
    # Bits of the list number and of the stored code alike.
    rng = np.random.default_rng(n)
    base = np.uint64(0b1_0110_1100_1011_0110_1100)
    codes = rng.integers(0, CARD, n, dtype=np.uint64)
    codes[0] = base
    index = HashIndex(CARD, codes, np.arange(n, dtype=np.int64))
    neighbours = base ^ (np.uint64(1) << np.arange(BITS, dtype=np.uint64))
    neighbours = neighbours[~np.isin(neighbours, codes)]
    assert len(index.lookup(neighbours)[0]) == 0
    _assert_same(index.lookup(np.array([base])), _oracle(codes, np.arange(n, dtype=np.int64), np.array([base])))


def test_codes_wider_than_the_hash_do_not_match():
    codes = np.array([5, 6, 7], np.uint64)
    index = HashIndex(CARD, codes, np.arange(3, dtype=np.int64))
    wide = codes + (np.uint64(1) << np.uint64(BITS)) * np.array([1, 2, 255], np.uint64)
    assert len(index.lookup(wide)[0]) == 0
    assert index.lookup(codes)[1].tolist() == [0, 1, 2]


def test_table_on_real_codes_and_query_probes(catalog_dir):
    """The catalog's codes and a real query's probes: the hits of a brute-force
    search, in its order, and of the IndexBinaryHash the engine used before."""
    cfg = store.read_generation_config(store.current_generation(catalog_dir))
    batch = store.TrackBatch.concat([store.read_segment(p, cfg)
                                     for p in store.list_segments(store.current_generation(catalog_dir))])
    ids = pack_ids(batch.triplet_track_numbers(), batch.t1, batch.f1, batch.span)
    index = HashIndex(cfg.hash_cardinality, batch.codes, ids)
    y, sr = load_clip("flare_cave_theme")
    q = features.query_triplets(resample(y[5 * sr: 15 * sr], sr, cfg.sample_rate), cfg)
    probes, *_ = features.query_probes(q, cfg, MatchConfig())
    expected = _oracle(batch.codes, ids, probes)
    assert len(expected[0]) > 1000
    _assert_same(index.lookup(probes), expected)
    before = faiss.IndexBinaryHash(64, index.bits)
    before.add_with_ids(np.ascontiguousarray(batch.codes, "<u8").view(np.uint8).reshape(-1, 8), ids)
    lims, _, found = before.range_search(np.ascontiguousarray(probes, "<u8").view(np.uint8).reshape(-1, 8), 1)
    np.testing.assert_array_equal(found, expected[1])


@pytest.mark.parametrize("n, distinct, list_target", [
    (500, 50, 16),               # 2^5 lists, 2-byte stored codes
    (20_000, 3000, 16),          # 2^11 lists, 2-byte stored codes
    (300_000, 100_000, 16),      # 2^15 lists, 1-byte stored codes
    (1_200_000, 200_000, 1),     # a list per code value: no byte compared (as from ~290 h)
])
def test_table_lookup_is_faiss_range_search_preassigned(n, distinct, list_target):
    """The lists read in place give what FAISS's own search of them gives, in its order."""
    rng = np.random.default_rng(n)
    pool, codes, ids = _random_entries(rng, n, distinct)
    table = HashIndex(CARD, codes, ids, list_target)._table
    assert (table.k == BITS) == (list_target == 1)
    probes = np.concatenate([_probes(rng, pool), pool[rng.integers(0, distinct, 5000)],
                             np.array([CARD - 1 + (1 << BITS)], np.uint64)])  # wider than any code
    lists, stored = table._split(probes)
    lists[probes >> np.uint64(BITS) != 0] = -1
    lims, _, found = table.faiss.range_search_preassigned(stored, 1, lists.reshape(-1, 1), None)
    got_lims, got = table.lookup(probes)
    np.testing.assert_array_equal(got_lims, lims)
    np.testing.assert_array_equal(got, found)
    assert len(found) > len(probes)


def test_table_in_a_temporary_file_where_memfd_is_missing(monkeypatch, tmp_path):
    monkeypatch.delattr(index_module.os, "memfd_create")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(index_module.tempfile, "tempdir", None)
    rng = np.random.default_rng(6)
    pool, codes, ids = _random_entries(rng, 5000, 800)
    index = HashIndex(CARD, codes, ids)
    assert list(tmp_path.iterdir()) == []  # unlinked once mapped
    probes = _probes(rng, pool)
    _assert_same(index.lookup(probes), _oracle(codes, ids, probes))
    with pytest.raises(KeyboardInterrupt), TableBuilder(CARD, 5000) as builder:  # a load given up half way
        builder.count(codes)
        builder.fill(codes[:100], ids[:100])
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("n, list_target, used", [(9, 2, 8), (9, 2, 3), (1, 1, 1), (5000, 5, 1 << 10),
                                                  (5000, 5, 100)])
def test_table_image_is_what_faiss_writes(n, list_target, used):
    """The lists' bytes are FAISS's own serialised form (both forms of its
    size table: 'full' when most lists are used, 'sprs' otherwise), filled
    in several parts."""
    rng = np.random.default_rng(n + used)
    k = index_module.table_layout(n, 16, list_target).k
    lists = rng.integers(0, used, n)
    stored = rng.integers(0, 256, (n, 1), dtype=np.uint8)
    ids = rng.integers(0, 1 << 62, n)
    codes = (stored[:, 0].astype(np.uint64) << np.uint64(k)) | lists.astype(np.uint64)
    ivf = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(8), 8, 1 << k)
    ivf.is_trained = True
    ivf.add_core(n, faiss.swig_ptr(stored), faiss.swig_ptr(ids), faiss.swig_ptr(lists))
    parts = np.array_split(np.arange(n), 3)
    with TableBuilder(1 << (k + 8), n, list_target) as builder:
        for part in parts:
            builder.count(codes[part])
        for part in parts:
            builder.fill(codes[part], ids[part])
        table = builder.table()
    assert table.nlist == 1 << k and table.code_size == 1
    np.testing.assert_array_equal(table._mapped(), faiss.serialize_index_binary(ivf))


@pytest.mark.parametrize("list_target", [16, 1])
def test_a_table_built_in_parts_answers_as_one_built_at_once(list_target):
    """What Engine does segment by segment: uneven parts (some empty), each
    counted, then each filled, in the same order."""
    rng = np.random.default_rng(list_target)
    pool, codes, ids = _random_entries(rng, 60_000, 5000)
    cuts = np.sort(np.concatenate([rng.integers(0, 60_000, 6), [0, 0, 60_000, 60_000]]))
    parts = [slice(a, b) for a, b in zip(cuts[:-1], cuts[1:])]
    with TableBuilder(CARD, 60_000, list_target) as builder:
        for part in parts:
            builder.count(codes[part])
        for part in parts:
            builder.fill(codes[part], ids[part])
        index = builder.index()
    probes = _probes(rng, pool)
    _assert_same(index.lookup(probes), _oracle(codes, ids, probes))
    _assert_same(index.lookup(probes), HashIndex(CARD, codes, ids, list_target).lookup(probes))
    assert index.list_target == list_target and index.table_size == 60_000


def test_the_builder_refuses_parts_that_change_between_its_passes():
    rng = np.random.default_rng(8)
    _, codes, ids = _random_entries(rng, 5000, 800)

    def builder(counted):
        b = TableBuilder(CARD, 5000)
        b.count(counted)
        return b

    with pytest.raises(ValueError, match="counted for a table of 5000"), builder(codes[:4000]) as b:
        b.fill(codes, ids)
    with pytest.raises(ValueError, match="more codes filled than counted"), builder(codes) as b:
        b.fill(codes[::-1] + np.uint64(1), ids)  # other codes: some list overflows
    with pytest.raises(ValueError, match="4999 entries filled of the 5000"), builder(codes) as b:
        b.fill(codes[1:], ids[1:])
        b.index()
    with pytest.raises(RuntimeError, match="count"), builder(codes) as b:
        b.fill(codes[:10], ids[:10])
        b.count(codes[:10])
    with pytest.raises(RuntimeError, match="closed"), builder(codes) as b:
        b.fill(codes, ids)
        b.index()
        b.fill(codes, ids)
    with pytest.raises(ValueError, match="list_target"):
        TableBuilder(CARD, 10, list_target=0)


def test_an_empty_builder_makes_an_empty_index():
    with TableBuilder(CARD, 0) as builder:
        builder.count(np.zeros(0, np.uint64))
        builder.fill(np.zeros(0, np.uint64), np.zeros(0, np.int64))
        index = builder.index()
    assert index.ntotal == 0 and index.describe() == "empty"
    index.add(np.array([7], np.uint64), np.array([3], np.int64))
    assert index.lookup(np.array([7], np.uint64))[1].tolist() == [3]


def test_table_memory_is_nine_bytes_an_entry_and_32_a_list():
    rng = np.random.default_rng(3)
    _, codes, ids = _random_entries(rng, 200_000, 150_000)
    index = HashIndex(CARD, codes, ids)
    lists = 1 << index._table.k
    assert 200_000 / lists <= index_module.LIST_TARGET  # lists of at most ~16 entries
    coarse = lists // index_module.LIST_STRIDE * 8  # where every LIST_STRIDE-th list starts
    assert index.memory_bytes() == pytest.approx(200_000 * 9 + lists * 32 + coarse, abs=1000)
    assert index.memory_bytes() == pytest.approx(index_module.table_layout(200_000, BITS).memory_bytes(), abs=1000)


@pytest.mark.parametrize("entries, target, k", [(0, 16, 0), (16, 16, 0), (17, 16, 1), (200_000, 16, 14),
                                                (200_000, 4, 16), (1 << 40, 16, BITS)])
def test_the_table_has_the_fewest_lists_of_at_most_list_target_entries_up_to_one_per_code(entries, target, k):
    layout = index_module.table_layout(entries, BITS, target)
    assert layout.k == k and layout.nlist == 1 << k
    assert layout.code_size == max(1, -(-(BITS - k) // 8))
    if k < BITS:
        assert layout.entries_per_list <= target and (k == 0 or entries / (layout.nlist // 2) > target)


def test_list_target_sets_the_lists_and_keeps_the_answers():
    rng = np.random.default_rng(5)
    pool, codes, ids = _random_entries(rng, 50_000, 20_000)
    probes = _probes(rng, pool)
    default, few = HashIndex(CARD, codes, ids), HashIndex(CARD, codes, ids, list_target=64)
    p_default, p_few = default.parameters(), few.parameters()
    assert p_default["list_target"] == index_module.LIST_TARGET and p_few["list_target"] == 64
    assert p_few["nlist"] == p_default["nlist"] // 4
    assert p_few["entries_per_list_mean"] == pytest.approx(50_000 / p_few["nlist"], abs=0.01)
    assert p_few["entries_per_list_max"] >= p_few["entries_per_list_mean"]
    assert p_few["memory_bytes"] < p_default["memory_bytes"]
    _assert_same(few.lookup(probes), default.lookup(probes))
    assert few.compacted().list_target == 64
    with pytest.raises(ValueError, match="list_target"):
        HashIndex(CARD, codes, ids, list_target=0)


# -- bounded lookups -----------------------------------------------------------

@pytest.mark.parametrize("n, distinct", [(500, 5), (300_000, 100_000)])  # sparse and full size tables
def test_a_bounded_lookup_keeps_the_probes_of_the_smallest_lists(n, distinct):
    rng = np.random.default_rng(n + 1)
    pool, codes, ids = _random_entries(rng, n, distinct)
    index = HashIndex(CARD, codes, ids)
    probes = _probes(rng, pool)
    cost = index._table.cost(probes)
    lists = probes & np.uint64(index._table.nlist - 1)
    np.testing.assert_array_equal(cost, [np.sum((codes & np.uint64(index._table.nlist - 1)) == x) for x in lists])
    # A budget no lookup reaches changes nothing.
    _assert_same(index.lookup(probes, int(cost.sum())), index.lookup(probes))
    budget = int(cost.sum()) // 3
    keep = index.within_budget(probes, budget)
    assert cost[keep].sum() <= budget < cost[keep].sum() + cost[~keep].min()
    assert cost[keep].max() <= cost[~keep].min()  # the cheapest probes first
    p, found = index.lookup(probes, budget)
    kept = np.flatnonzero(keep)
    ep, eids = _oracle(codes, ids, probes[kept])
    _assert_same((p, found), (kept[ep], eids))  # positions still refer to the whole probe array


def test_a_bounded_lookup_counts_each_probe_s_list_times_its_weight_in_the_order():
    rng = np.random.default_rng(8)
    pool, codes, ids = _random_entries(rng, 300_000, 100_000)
    index = HashIndex(CARD, codes, ids)
    probes = _probes(rng, pool)
    cost = index._table.cost(probes)
    weight = np.where(rng.random(len(probes)) < 0.5, 10.0, 1.0)
    budget = int(cost.sum()) // 3
    keep = index.within_budget(probes, budget, weight)
    assert cost[keep].sum() <= budget  # what a probe reads counts once
    eff = cost * weight
    assert eff[keep].max() <= eff[~keep].min()
    np.testing.assert_array_equal(index.within_budget(probes, budget, np.ones(len(probes))),
                                  index.within_budget(probes, budget))
    p, found = index.lookup(probes, budget, weight)
    kept = np.flatnonzero(keep)
    ep, eids = _oracle(codes, ids, probes[kept])
    _assert_same((p, found), (kept[ep], eids))


def test_list_sizes_come_from_the_table_image_when_it_holds_them_all():
    rng = np.random.default_rng(4)
    _, codes, ids = _random_entries(rng, 200_000, 150_000)
    table = HashIndex(CARD, codes, ids)._table
    assert table.sizes.base is not None  # a view of the mapped image, no copy
    np.testing.assert_array_equal(table.sizes, np.bincount((codes & np.uint64(table.nlist - 1)).astype(np.int64),
                                                           minlength=table.nlist))


# -- additions, removals, compaction ------------------------------------------------

def test_added_entries_are_found_after_the_table_s_in_insertion_order():
    rng = np.random.default_rng(1)
    pool, codes, ids = _random_entries(rng, 30_000, 4000)
    index = HashIndex(CARD, codes[:20_000], ids[:20_000])
    for part in np.array_split(np.arange(20_000, 30_000), 4):
        index.add(codes[part], ids[part])
    index.add(np.zeros(0, np.uint64), np.zeros(0, np.int64))
    assert index.ntotal == 30_000 and index.added_size == 10_000
    probes = _probes(rng, pool)
    _assert_same(index.lookup(probes), _oracle(codes, ids, probes))
    probe, found = index.lookup(np.zeros(0, np.uint64))
    assert len(probe) == 0 and len(found) == 0


def test_an_empty_index_takes_additions():
    rng = np.random.default_rng(2)
    pool, codes, ids = _random_entries(rng, 3000, 400)
    index = HashIndex(CARD)
    assert len(index.lookup(pool)[0]) == 0
    index.add(codes, ids)
    _assert_same(index.lookup(pool), _oracle(codes, ids, pool))
    compact = index.compacted()
    assert compact.added_size == 0 and compact.table_size == 3000
    _assert_same(compact.lookup(pool), _oracle(codes, ids, pool))


@pytest.fixture(params=[index_module.PART_ENTRIES, 1000, 1], ids=["parts", "small-parts", "list-by-list"])
def part_entries(request, monkeypatch):
    """Compaction reads the table back in parts of whole lists: of the default
    size, of ~1000 entries, one list at a time."""
    monkeypatch.setattr(index_module, "PART_ENTRIES", request.param)


def test_compaction_keeps_every_hit_in_order_and_drops_removed_tracks(part_entries):
    rng = np.random.default_rng(4)
    pool = rng.integers(0, CARD, 2000, dtype=np.uint64)
    codes = pool[rng.integers(0, 2000, 40_000)]
    track = rng.integers(0, 50, 40_000)
    ids = pack_ids(track, rng.integers(0, 10_000, 40_000), rng.integers(0, 200, 40_000), rng.integers(5, 100, 40_000))
    index = HashIndex(CARD, codes[:30_000], ids[:30_000])
    index.add(codes[30_000:], ids[30_000:])
    compact = index.compacted()
    assert compact.added_size == 0 and compact.ntotal == 40_000
    probes = _probes(rng, pool)
    _assert_same(compact.lookup(probes), _oracle(codes, ids, probes))
    removed = np.zeros(40, bool)  # tracks 40-49 lie beyond the mask: kept
    removed[[3, 17, 39]] = True
    kept = ~np.isin(track, [3, 17, 39])
    smaller = index.compacted(removed)
    assert smaller.ntotal == kept.sum()
    _assert_same(smaller.lookup(probes), _oracle(codes[kept], ids[kept], probes))
    assert not np.isin(smaller.lookup(probes)[1] >> TRACK_SHIFT, [3, 17, 39]).any()
    # Most tracks gone: fewer lists than before, each gathering several of the old ones.
    removed[:38] = True
    kept = ~marked(track, removed)
    fewer = index.compacted(removed)
    assert fewer.parameters()["nlist"] < index.parameters()["nlist"]
    _assert_same(fewer.lookup(probes), _oracle(codes[kept], ids[kept], probes))


def test_compaction_is_due_when_additions_pass_a_share_of_the_table(monkeypatch):
    monkeypatch.setattr(index_module, "SIDE_MIN", 100)
    rng = np.random.default_rng(5)
    _, codes, ids = _random_entries(rng, 64 * 300 + 500, 5000)
    index = HashIndex(CARD, codes[: 64 * 300], ids[: 64 * 300])
    assert not index.needs_compaction()
    index.add(codes[64 * 300: 64 * 300 + 299], ids[64 * 300: 64 * 300 + 299])
    assert not index.needs_compaction()
    index.add(codes[-1:], ids[-1:])
    assert index.needs_compaction()


def test_memory_grows_with_additions():
    rng = np.random.default_rng(3)
    codes = rng.choice(CARD, 10_000, replace=False).astype(np.uint64)
    ids = np.arange(10_000, dtype=np.int64)
    index = HashIndex(CARD, codes[:5000], ids[:5000])
    table = index.memory_bytes()
    index.add(codes[5000:], ids[5000:])
    # IndexBinaryHash: a bucket and its two vectors per new code, and the added arrays.
    assert index.memory_bytes() >= table + 5000 * (index_module.HASH_BYTES_PER_BUCKET + 16)
    assert "IndexBinaryHash" in index.describe() and "IndexBinaryIVF" in index.describe()


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError):
        HashIndex(CARD).add(np.zeros(3, np.uint64), np.zeros(2, np.int64))
    with pytest.raises(ValueError):
        HashIndex(CARD, np.zeros(3, np.uint64), np.zeros(2, np.int64))


def test_lookups_in_other_threads_run_faiss_on_that_thread_alone():
    """OpenMP's thread count is per calling thread: one set at import would
    leave a server's request threads fanning each lookup out to every core."""
    codes = np.arange(100, dtype=np.uint64)
    index = HashIndex(CARD, codes, np.arange(100, dtype=np.int64))
    index.add(codes[:5] + np.uint64(1000), np.arange(100, 105, dtype=np.int64))  # the side index too
    seen = []

    def lookup():
        index.lookup(np.arange(10, dtype=np.uint64))
        seen.append(faiss.omp_get_max_threads())

    thread = threading.Thread(target=lookup)
    thread.start()
    thread.join()
    assert seen == [1]


def test_a_table_too_large_for_the_address_space_is_a_memory_error():
    """As any allocation that fails (the scale benchmark bounds its processes'
    address space): here the image's 27 MB, with 16 MB to spare."""
    script = ("import resource, numpy as np\n"
              "from simsearch.index import TableBuilder\n"
              "codes, ids = np.arange(3 << 20, dtype=np.uint64), np.arange(3 << 20)\n"
              "builder = TableBuilder(1 << 24, len(codes))\n"
              "builder.count(codes)\n"
              "size = int(open('/proc/self/status').read().split('VmSize:')[1].split()[0]) * 1024\n"
              "resource.setrlimit(resource.RLIMIT_AS, (size + (16 << 20), resource.RLIM_INFINITY))\n"
              "try:\n"
              "    builder.fill(codes, ids)\n"
              "except MemoryError as exc:\n"
              "    print('MemoryError:', exc)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.stdout.startswith("MemoryError: cannot map the table's"), out.stdout + out.stderr
