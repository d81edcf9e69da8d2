"""The query profile's lean opening of a large rung (benchmarks/query_profile.py):
its table is the one HashIndex builds, byte for byte, whatever the chunking."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import query_profile as QP
from simsearch.config import FeatureConfig
from simsearch.index import HashIndex

CARD = FeatureConfig().hash_cardinality


@pytest.mark.parametrize("n, distinct, list_target, chunk", [
    (5000, 300, 16, 777),        # many lists empty: the sparse table of sizes
    (20000, 20000, 4, 1 << 22),  # most lists used: the full table
    (3000, 50, 1, 1000),         # few distinct codes: long lists, split across chunks
])
def test_lean_table_is_hashindexs_table(monkeypatch, n, distinct, list_target, chunk):
    rng = np.random.default_rng(n)
    pool = rng.integers(0, CARD, distinct, dtype=np.uint64)
    codes = pool[rng.integers(0, distinct, n)]
    ids = rng.integers(0, 1 << 62, n, dtype=np.int64)
    monkeypatch.setattr(QP, "CHUNK", chunk)
    ref = HashIndex(CARD, codes, ids, list_target)
    lean = QP.lean_hash_index(CARD, codes, ids, list_target)
    np.testing.assert_array_equal(lean._table._mapped(), ref._table._mapped())
    np.testing.assert_array_equal(np.asarray(lean._table.sizes), np.asarray(ref._table.sizes))
    probes = np.concatenate([pool[:40], rng.integers(0, CARD, 40, dtype=np.uint64)])
    for got, want in zip(lean.lookup(probes, 2000), ref.lookup(probes, 2000)):
        np.testing.assert_array_equal(got, want)
    assert lean.memory_bytes() == ref.memory_bytes()
