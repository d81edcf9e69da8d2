"""Distractor tracks: fingerprints with the statistics of real music that
match no real track.  Pure: arrays in, arrays out (the scale ladder writes them).

A distractor is the fingerprint of a real catalog track played backwards
(every triplet's anchor frequency and span, and the track's duration, kept;
its time mirrored, `mirrored_times`) with every hash code relabelled by a
bijection drawn for that distractor.  The
bijection moves a code only among codes of similar popularity that carry the
same coarse bands (anchor frequency band, span band: the two fields of a code
that depend on the frequency and span stored beside it): the codes seen in
the source catalog are grouped by bands (`band_groups`), ranked within each
group by how many triplets carry them (ties in a seeded random order) and
cut into blocks of neighbouring ranks, narrow at the head of the ranking and
wider down it (`rank_blocks`); within each block the distractor rotates the
ranks by a shift of its own, from 1 to the block's size less one, so no code
is left in place.

What it keeps, and why that is what matters at scale:
  * the density of triplets per second and the track durations, so hours,
    entries per hour and bytes per hour are those of real music;
  * each track's code-count histogram exactly (how many codes occur once,
    twice, ...: a bijection only renames them), so repeats inside a track
    (a chorus, a loop) stay repeats at the same times;
  * the popularity of every code, up to its block: what a probe reads from
    the index, hence the hits each query must align, its time and memory;
  * every code's consistency with the anchor frequency and span stored
    beside it, so a chance hit implies a pitch shift and a speed spread as
    a real one does, and the matcher's filters on them act as on real hits
    (relabelling across bands instead leaves most chance hits implying an
    impossible pitch or speed, and 6 times fewer queries get a chance
    candidate at all).
What it does not keep: how codes follow one another in music.  Real pieces
share intervals, chords, rhythms and tempi, so an excerpt of one finds,
in an unrelated real track, runs of hits that agree on one time offset and
one pitch shift; a relabelling sends each code of a run to an unrelated
code, so those runs are broken.  Nor does it keep near-duplicates (covers,
remasters, shared samples).  The chance scores of out-of-catalog queries
are therefore lower against distractors than against as many hours of real
music (the scale benchmark measures both at the catalog's size), and false
alarms measured on a catalog of distractors are a lower bound; the cost of a
query (entries read, hits aligned, time and memory) is what they measure
fairly.

No code keeps its label (every shift is non-zero), so a distractor shares
no (code, time) pair with its source.  Time runs backwards in it because a
relabelling may send a code onto another code of the same anchor, or onto a
hash neighbour of one (another loudness order, a neighbouring cell: codes a
query probes anyway), since such codes share bands and, when few tracks
have them, popularity, hence a block: kept in time, an excerpt of the
source would find those pairs on its own time line, a partial match that
grows with the distractors made from one track.  Mirrored, they lie on a
line of speed -1, which no search tries.  Not so in strongly periodic
music: a song at one steady tempo keeps its beat backwards, and a code sent
onto a neighbour of another code of the same beat lands on the beat again
(on the benchmark's corpus, two metal songs at a steady tempo score up to
12.8 against a single distractor of their own, at a threshold of 5).  A
distractor is therefore no stand-in for its own source's queries: the scale
benchmark leaves matches to a distractor made from the query's own track
out of its figures, and reports them.

Only the catalog's codes are relabelled: the out-of-catalog tracks, whose
excerpts measure false alarms, contribute nothing to any distractor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# What a distractor is (bump on any change to it): written distractors are
# kept and reused under a key that includes it.
RECIPE_VERSION = 2
# Blocks of ranks: at least MIN_BLOCK codes, and about BLOCK_FRACTION of the
# rank they start at (ranks 0-3, 4-7, ..., then 1/16 wider each time): the
# counts within a block stay within a few percent of each other at the head of
# the ranking, where they fall fastest, and are equal in the long tail of
# codes seen once or twice.
MIN_BLOCK = 4
BLOCK_FRACTION = 1 / 16


@dataclass(frozen=True)
class Popularity:
    """The source catalog's codes ranked by count, cut into blocks."""

    by_rank: np.ndarray  # uint64 [n_codes]: the codes, most common first
    counts: np.ndarray  # int64 [n_codes]: their counts, in the same order
    starts: np.ndarray  # int64 [n_blocks + 1]: the first rank of each block, then n_codes

    @property
    def n_blocks(self) -> int:
        return len(self.starts) - 1

    def ranks(self, codes: np.ndarray) -> np.ndarray:
        """Rank of each code (every one must be among `by_rank`)."""
        order = np.argsort(self.by_rank)
        pos = np.searchsorted(self.by_rank, codes, sorter=order)
        ranks = order[np.minimum(pos, len(order) - 1)]
        if not np.array_equal(self.by_rank[ranks], codes):
            raise ValueError("codes not in the source catalog")
        return ranks


def rank_blocks(n_codes: int, min_block: int = MIN_BLOCK, fraction: float = BLOCK_FRACTION) -> np.ndarray:
    """Block boundaries over ranks 0..n_codes-1: each block at least
    `min_block` ranks and `fraction` of its first rank wide; a last block too
    small to rotate (under 2 ranks) joins the one before.

    Returns int64 [n_blocks + 1], from 0 to n_codes.
    """
    starts = [0]
    while starts[-1] < n_codes:
        starts.append(starts[-1] + max(min_block, int(np.ceil(starts[-1] * fraction))))
    starts[-1] = n_codes
    if len(starts) > 2 and starts[-1] - starts[-2] < 2:
        del starts[-2]
    return np.asarray(starts, np.int64)


def code_popularity(codes: np.ndarray, groups: np.ndarray | None = None, seed: int = 0,
                    min_block: int = MIN_BLOCK, fraction: float = BLOCK_FRACTION) -> Popularity:
    """Rank the distinct `codes` (uint64 [n], one per catalog triplet) by
    count within each group (`groups`, int64 [n]: the group of each
    triplet's code, the same for every triplet of a code; one group when
    None), ties in an order drawn from `seed`, and cut each group's ranks
    into blocks (`rank_blocks`), so that no block spans two groups."""
    codes = np.asarray(codes, np.uint64)
    values, first, counts = np.unique(codes, return_index=True, return_counts=True)
    group = np.zeros(len(values), np.int64) if groups is None else np.asarray(groups, np.int64)[first]
    if groups is not None and not np.array_equal(group[np.searchsorted(values, codes)], groups):
        raise ValueError("triplets of one code are in different groups")
    tie_break = np.random.default_rng(seed).permutation(len(values))
    order = np.lexsort((tie_break, -counts, group))
    sizes = np.bincount(group[order])
    sizes = sizes[sizes > 0]
    if sizes.min() < 2:
        raise ValueError("a group with a single code cannot be relabelled")
    ends = np.cumsum(sizes)
    starts = np.concatenate([[0]] + [rank_blocks(n, min_block, fraction)[1:] + e - n for n, e in zip(sizes, ends)])
    return Popularity(values[order], counts[order].astype(np.int64), starts.astype(np.int64))


def band_groups(f1: np.ndarray, span: np.ndarray, cfg) -> np.ndarray:
    """The coarse bands a triplet's code holds (anchor frequency band, span
    band; simsearch.features), as one group number per triplet (int64 [n]),
    from its stored anchor frequency (bins) and span (frames).  Relabelling
    within a group keeps every code consistent with the frequency and span
    stored beside it, which the matcher checks (a hit's implied pitch and
    speed)."""
    f1 = np.asarray(f1, np.float64)
    span = np.maximum(np.asarray(span, np.float64), 1e-9)
    fb = np.clip(np.floor(f1 / cfg.f1_band), 0, cfg.f1_bands - 1).astype(np.int64)
    sb = np.clip(np.floor(np.log2(span / cfg.min_span) / cfg.span_band_octaves), 0, cfg.span_bands - 1)
    return fb * cfg.span_bands + sb.astype(np.int64)


def block_shifts(pop: Popularity, rng: np.random.Generator) -> np.ndarray:
    """One distractor's rotation of each block: int64 [n_blocks], each from 1
    to the block's size less one (never 0: no code keeps its label)."""
    sizes = np.diff(pop.starts)
    return 1 + np.floor(rng.random(len(sizes)) * (sizes - 1)).astype(np.int64)


def block_of(ranks: np.ndarray, pop: Popularity) -> np.ndarray:
    """The block of each rank (int64 [n])."""
    return np.searchsorted(pop.starts, ranks, side="right") - 1


def relabel(ranks: np.ndarray, block: np.ndarray, pop: Popularity, shift: np.ndarray) -> np.ndarray:
    """The codes that ranks (int64 [n], in blocks `block`) become when each
    is rotated by `shift` (int64 [n]: the rotation of its block in its
    distractor) within its block.

    Returns uint64 [n].
    """
    start = pop.starts[block]
    size = pop.starts[block + 1] - start
    return pop.by_rank[start + (ranks - start + shift) % size]


def distractor_seed(seed: int, index: int) -> np.random.Generator:
    """The generator of distractor number `index`: the same whatever else is
    made, so a larger catalog holds a smaller one's distractors."""
    return np.random.default_rng([seed, index])


@dataclass(frozen=True)
class Sources:
    """The source tracks' codes as ranks and blocks, each track a slice."""

    ranks: np.ndarray  # int64 [n_triplets]
    blocks: np.ndarray  # int64 [n_triplets]
    bounds: np.ndarray  # int64 [n_tracks + 1]: track j is ranks[bounds[j]:bounds[j + 1]]

    @classmethod
    def of(cls, codes: np.ndarray, counts: np.ndarray, pop: Popularity) -> "Sources":
        """From the catalog's codes (uint64 [n]) and its tracks' triplet counts (int64 [n_tracks])."""
        ranks = pop.ranks(np.asarray(codes, np.uint64))
        return cls(ranks, block_of(ranks, pop), np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))

    def rows(self, tracks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows int64 [n], lengths int64 [len(tracks)]): the triplet rows of
        `tracks`, one track after the other."""
        lengths = self.bounds[tracks + 1] - self.bounds[tracks]
        first = np.repeat(self.bounds[tracks] - (np.cumsum(lengths) - lengths), lengths)
        return first + np.arange(int(lengths.sum()), dtype=np.int64), lengths


def mirrored_times(t1: np.ndarray, span: np.ndarray, track_frames: np.ndarray) -> np.ndarray:
    """Anchor times of triplets in their track played backwards: a triplet
    over frames [t1, t1 + span] of a track of `track_frames` frames lies over
    [track_frames - t1 - span, track_frames - t1] (float32 [n], >= 0)."""
    return np.maximum(np.asarray(track_frames, np.float64) - t1 - span, 0.0).astype(np.float32)


def distractor_codes(src: Sources, pop: Popularity, indices: np.ndarray, seed: int,
                     tracks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The codes of distractors `indices` (int64 [m]), distractor indices[k]
    relabelling the triplets of source track tracks[k], one after the other.

    Returns (codes uint64 [n], the source rows they relabel int64 [n],
    triplets per distractor int64 [len(indices)]).
    """
    idx = np.asarray(indices, np.int64)
    rows, lengths = src.rows(np.asarray(tracks, np.int64))
    shifts = np.zeros((len(idx), pop.n_blocks), np.int64)
    for k, i in enumerate(idx):
        shifts[k] = block_shifts(pop, distractor_seed(seed, int(i)))
    blocks = src.blocks[rows]
    shift = shifts[np.repeat(np.arange(len(idx)), lengths), blocks]
    return relabel(src.ranks[rows], blocks, pop, shift), rows, lengths
