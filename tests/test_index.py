"""The FAISS hash index against an exact numpy oracle, and the hit-id layout."""

from __future__ import annotations

import numpy as np
import pytest

from simsearch.config import FeatureConfig
from simsearch.index import MAX_HALF_FRAMES, MAX_TRACKS, HashIndex, pack_ids, unpack_ids

CARD = FeatureConfig().hash_cardinality


def _oracle(stored_codes, stored_ids, probes):
    """Every (probe position, id) whose stored code equals the probe: brute force."""
    eq = probes[:, None] == stored_codes[None, :]
    p, s = np.nonzero(eq)
    return sorted(zip(p.tolist(), stored_ids[s].tolist()))


def _found(index, probes):
    probe, ids = index.lookup(probes)
    assert len(probe) == len(ids)
    return sorted(zip(probe.tolist(), ids.tolist()))


def _random_entries(rng, n, distinct):
    """n codes drawn from `distinct` random codes below the cardinality, so
    many share a code; ids unique."""
    pool = rng.integers(0, CARD, distinct, dtype=np.uint64)
    codes = pool[rng.integers(0, distinct, n)]
    ids = rng.permutation(np.arange(n, dtype=np.int64) * 7 + 3)
    return pool, codes, ids


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


# -- HashIndex ----------------------------------------------------------------

@pytest.mark.parametrize("n, distinct", [(1, 1), (500, 50), (20_000, 3000)])
def test_lookup_returns_exactly_the_ids_with_the_probe_code(n, distinct):
    rng = np.random.default_rng(n)
    pool, codes, ids = _random_entries(rng, n, distinct)
    index = HashIndex(CARD)
    index.add(codes, ids)
    assert index.ntotal == n
    # Probes: stored codes (some repeated), codes never stored, and the ends of the range.
    absent = rng.integers(0, CARD, 300, dtype=np.uint64)
    probes = np.concatenate([pool[: 200], pool[:3], absent, np.array([0, CARD - 1], np.uint64)])
    probes = probes[rng.permutation(len(probes))]
    assert _found(index, probes) == _oracle(codes, ids, probes)


def test_codes_that_differ_in_one_bit_do_not_match():
    base = np.array([0b1011_0110_1100], np.uint64)
    neighbours = base ^ (np.uint64(1) << np.arange(HashIndex(CARD).bits, dtype=np.uint64))
    index = HashIndex(CARD)
    index.add(neighbours, np.arange(len(neighbours), dtype=np.int64))
    assert _found(index, base) == []
    assert _found(index, neighbours[3:4]) == [(0, 3)]


def test_lookup_after_several_adds_and_of_nothing():
    rng = np.random.default_rng(1)
    _, codes, ids = _random_entries(rng, 3000, 400)
    index = HashIndex(CARD)
    for part in np.array_split(np.arange(3000), 4):
        index.add(codes[part], ids[part])
    index.add(np.zeros(0, np.uint64), np.zeros(0, np.int64))
    probes = codes[::10]
    assert _found(index, probes) == _oracle(codes, ids, probes)
    probe, found = index.lookup(np.zeros(0, np.uint64))
    assert len(probe) == 0 and len(found) == 0


def test_add_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        HashIndex(CARD).add(np.zeros(3, np.uint64), np.zeros(2, np.int64))


def test_memory_grows_with_entries():
    index = HashIndex(CARD)
    empty = index.memory_bytes()
    rng = np.random.default_rng(3)
    _, codes, ids = _random_entries(rng, 5000, 5000)
    index.add(codes, ids)
    assert index.memory_bytes() >= empty + 5000 * 16
