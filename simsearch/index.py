"""FAISS wrapper: hash codes in, (probe, hit id) pairs out.  No audio knowledge.

Codes are 64-bit binary vectors in a `faiss.IndexBinaryHash` keyed on their
low `bits` bits (the whole hash), so a lookup is one hash-table probe.  All of
a query's probes go to FAISS in one `range_search` call.

A hit id packs where the reference triplet is: track number, anchor time,
anchor frequency and span, so no second lookup table is needed.
"""

from __future__ import annotations

import math

import faiss
import numpy as np

# A query's lookups are small; across concurrent queries, one thread each
# beats OpenMP fan-out (which also spins on a busy machine).
faiss.omp_set_num_threads(1)

# Hit id layout (63 bits; the sign bit stays clear for FAISS's -1):
#   track (25) | anchor time, half-frames (21) | anchor freq, half-bins (9) | span, half-frames (8)
SPAN_BITS = 8
FREQ_BITS = 9
TIME_BITS = 21
TRACK_BITS = 63 - SPAN_BITS - FREQ_BITS - TIME_BITS
MAX_TRACKS = 1 << TRACK_BITS
MAX_HALF_FRAMES = 1 << TIME_BITS


def pack_ids(track: np.ndarray, t1: np.ndarray, f1: np.ndarray, span: np.ndarray) -> np.ndarray:
    """Hit ids from track numbers and anchor time (frames), frequency (bins), span (frames)."""
    tq = np.clip(np.rint(t1 * 2), 0, MAX_HALF_FRAMES - 1).astype(np.int64)
    fq = np.clip(np.rint(f1 * 2), 0, (1 << FREQ_BITS) - 1).astype(np.int64)
    sq = np.clip(np.rint(span * 2), 0, (1 << SPAN_BITS) - 1).astype(np.int64)
    tr = np.asarray(track, np.int64)
    return (tr << (TIME_BITS + FREQ_BITS + SPAN_BITS)) | (tq << (FREQ_BITS + SPAN_BITS)) | (fq << SPAN_BITS) | sq


def unpack_ids(ids: np.ndarray):
    """Inverse of pack_ids: (track, t1 frames, f1 bins, span frames)."""
    ids = np.asarray(ids, np.int64)
    span = (ids & ((1 << SPAN_BITS) - 1)) * 0.5
    f1 = ((ids >> SPAN_BITS) & ((1 << FREQ_BITS) - 1)) * 0.5
    t1 = ((ids >> (SPAN_BITS + FREQ_BITS)) & (MAX_HALF_FRAMES - 1)) * 0.5
    track = ids >> (SPAN_BITS + FREQ_BITS + TIME_BITS)
    return track, t1, f1, span


def _as_binary(codes: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(codes, dtype="<u8").view(np.uint8).reshape(-1, 8)


class HashIndex:
    """Exact lookup of 64-bit codes in a FAISS binary hash index."""

    def __init__(self, cardinality: int):
        self.bits = max(1, math.ceil(math.log2(cardinality)))
        if self.bits > 64:
            raise ValueError("codes must fit in 64 bits")
        self.faiss = faiss.IndexBinaryHash(64, self.bits)

    @property
    def ntotal(self) -> int:
        return self.faiss.ntotal

    def add(self, codes: np.ndarray, ids: np.ndarray) -> None:
        if len(codes) != len(ids):
            raise ValueError("codes and ids differ in length")
        if len(codes):
            self.faiss.add_with_ids(_as_binary(codes), np.ascontiguousarray(ids, np.int64))

    def lookup(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every stored entry whose code equals one of `codes`.

        Returns (probe, ids): probe[k] is the position in `codes` that found ids[k].
        """
        if len(codes) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        lims, _, ids = self.faiss.range_search(_as_binary(codes), 1)
        probe = np.repeat(np.arange(len(codes), dtype=np.int64), np.diff(lims).astype(np.int64))
        return probe, ids

    def memory_bytes(self) -> int:
        """Approximate resident size: codes and ids, plus the hash table's buckets."""
        return int(self.ntotal * 16 + self.faiss.hashtable_size() * 64)
