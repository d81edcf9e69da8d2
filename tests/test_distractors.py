"""The scale ladder's distractor tracks (benchmarks/distractors.py): they keep
each track's code-count histogram and the popularity of codes, stay
consistent with the frequency and span stored beside each code, and match no
real track."""

from __future__ import annotations

import numpy as np
import pytest

from audio_tools import CATALOG, excerpt, load_clip, resample
from benchmarks import distractors as D
from benchmarks.scale import Catalog, distractor_batch
from simsearch import store
from simsearch.config import FeatureConfig, MatchConfig
from simsearch.engine import Engine

CFG = FeatureConfig()


def _synthetic(rng, n_tracks=12, n_codes=3000):
    """Triplet codes of a catalog whose code popularity falls off as music's
    does (a flat head, then like 1/rank), with repeats inside tracks; each
    code in one of 5 band groups."""
    weights = 1.0 / (np.arange(n_codes) + 30.0)
    pool = rng.choice(1 << 21, n_codes, replace=False).astype(np.uint64)
    counts = rng.integers(300, 900, n_tracks)
    codes = pool[rng.choice(n_codes, counts.sum(), p=weights / weights.sum())]
    return codes, counts, (codes % np.uint64(5)).astype(np.int64)


def _histogram(codes):
    """How many codes occur once, twice, ... (int64 [max count + 1])."""
    return np.bincount(np.unique(codes, return_counts=True)[1])


def _made(codes, counts, groups, indices, seed=1):
    pop = D.code_popularity(codes, groups, seed=3)
    src = D.Sources.of(codes, counts, pop)
    return pop, src, D.distractor_codes(src, pop, np.asarray(indices), seed, np.asarray(indices) % len(counts))


def test_rank_blocks_cover_the_ranks_and_are_never_too_small_to_rotate():
    for n in (2, 3, 4, 5, 17, 1000, 175_525):
        starts = D.rank_blocks(n)
        assert starts[0] == 0 and starts[-1] == n
        sizes = np.diff(starts)
        assert (sizes >= 2).all()
        assert (sizes[:-1] >= np.maximum(D.MIN_BLOCK, np.ceil(starts[:-2] * D.BLOCK_FRACTION))).all()


def test_each_distractor_keeps_its_source_tracks_code_count_histogram():
    rng = np.random.default_rng(0)
    codes, counts, groups = _synthetic(rng)
    _, _, (made, rows, lengths) = _made(codes, counts, groups, range(40))
    bounds = np.concatenate([[0], np.cumsum(counts)])
    at = np.concatenate([[0], np.cumsum(lengths)])
    for i in range(40):
        source = codes[bounds[i % 12]: bounds[i % 12 + 1]]
        mine = made[at[i]: at[i + 1]]
        np.testing.assert_array_equal(_histogram(mine), _histogram(source))
        np.testing.assert_array_equal(rows[at[i]: at[i + 1]], np.arange(bounds[i % 12], bounds[i % 12 + 1]))


def test_a_round_of_distractors_keeps_the_popularity_of_every_block_and_group():
    """One distractor of each source track: every block of ranks (codes of
    similar popularity, in one band group) holds as many triplets as in the
    source catalog, and every code stays in its group."""
    rng = np.random.default_rng(1)
    codes, counts, groups = _synthetic(rng)
    pop, _, (made, _, _) = _made(codes, counts, groups, range(12, 24))
    block = D.block_of(pop.ranks(codes), pop)
    block_made = D.block_of(pop.ranks(made), pop)
    np.testing.assert_array_equal(np.bincount(block_made, minlength=pop.n_blocks),
                                  np.bincount(block, minlength=pop.n_blocks))
    group_of = dict(zip(codes.tolist(), groups.tolist()))
    assert [group_of[c] for c in made.tolist()] == groups.tolist()
    # Within a block, counts differ little, so a probe reads about as many
    # entries: the sum of squared counts (a popularity-weighted probe's
    # expected hits) hardly moves when every code takes its block's mean.
    c = pop.counts.astype(float)
    smoothed = sum((b - a) * c[a:b].mean() ** 2 for a, b in zip(pop.starts[:-1], pop.starts[1:]))
    assert smoothed == pytest.approx((c ** 2).sum(), rel=0.03)


def test_no_triplet_keeps_its_code_and_distractors_differ_from_each_other():
    rng = np.random.default_rng(2)
    codes, counts, groups = _synthetic(rng)
    _, _, (made, rows, lengths) = _made(codes, counts, groups, range(24))
    assert not (made == codes[rows]).any()
    first, second = made[: lengths[:12].sum()], made[lengths[:12].sum():]  # two relabellings of the same tracks
    assert (first != second).mean() > 0.3


def test_a_distractor_is_the_same_whichever_rung_makes_it():
    rng = np.random.default_rng(3)
    codes, counts, groups = _synthetic(rng)
    _, _, (alone, _, _) = _made(codes, counts, groups, [17])
    _, _, (among, _, lengths) = _made(codes, counts, groups, range(10, 20))
    at = lengths[:7].sum()
    np.testing.assert_array_equal(alone, among[at: at + lengths[7]])


def test_mirrored_times_play_the_track_backwards():
    t1 = np.array([0.0, 10.0, 250.0, 290.0], np.float32)
    span = np.array([5.0, 20.0, 40.0, 10.0], np.float32)
    out = D.mirrored_times(t1, span, np.full(4, 300.0))
    np.testing.assert_allclose(out, [295.0, 270.0, 10.0, 0.0])
    np.testing.assert_allclose(out + span, 300.0 - t1)  # each triplet covers the mirror of its frames
    assert (np.diff(out) < 0).all()


def test_band_groups_agree_with_the_codes_the_engine_computes(catalog_dir):
    cat = Catalog.load(catalog_dir)
    groups = D.band_groups(cat.batch.f1, cat.batch.span, cat.cfg)
    D.code_popularity(cat.batch.codes, groups)  # raises when a code's triplets fall in two groups
    assert len(np.unique(groups)) > 4


def _index_of(tmp_path, cat: Catalog, batches) -> Engine:
    gen = tmp_path / store.new_generation_name()
    gen.mkdir(parents=True)
    store.write_generation_config(gen, cat.cfg)
    for seq, batch in enumerate(batches, 1):
        store.write_segment(gen, seq, batch, cat.cfg)
    store.switch_generation(tmp_path, gen)
    return Engine(tmp_path)


@pytest.mark.slow
def test_distractors_match_no_real_track_and_do_not_hide_it(catalog_dir, engine, tmp_path):
    """Excerpts of the real clips: against 20 distractors of each clip alone,
    no match reaches the threshold; against the clips plus those distractors,
    each excerpt's top match is still its own clip."""
    cat = Catalog.load(catalog_dir)
    n = 20 * cat.n_tracks
    fakes = _index_of(tmp_path / "fakes", cat, [distractor_batch(cat, np.arange(n))])
    both = _index_of(tmp_path / "both", cat, [cat.batch, distractor_batch(cat, np.arange(n))])
    assert len(fakes.tracks) == n and len(both.tracks) == n + len(CATALOG)
    threshold = MatchConfig().min_score
    for name in CATALOG:
        y, sr = load_clip(name)
        for offset in (2.0, 11.0):
            q = resample(excerpt(y, sr, offset, 8.0), sr, cat.cfg.sample_rate)
            chance = fakes.query_samples(q, MatchConfig(min_score=0.0)).matches
            assert max((m.score for m in chance), default=0.0) < threshold
            assert [m.track_id for m in both.query_samples(q).matches][:1] == [name]
            assert engine.query_samples(q).matches[0].track_id == name
