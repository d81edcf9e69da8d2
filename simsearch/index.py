"""FAISS wrapper: hash codes in, (probe, hit id) pairs out.  No audio knowledge.

The catalog's codes are held by a `faiss.IndexBinaryIVF` used as an exact
hash table: the inverted list of a code is its low `k` bits, the code FAISS
stores is its remaining high bits (one byte at the default configuration),
and a lookup reads the probe's list and keeps the entries whose stored code
equals the probe's.  The lookup reads the lists FAISS maps in place (kernel
`list_lookup`): what FAISS's `range_search_preassigned` with Hamming radius 1
and the list as the assignment returns, in its order (the tests compare the
two), in a third to a sixth of its time, as it skips the distance
computations, the result buffers and their copies.  `k` grows with the catalog so that a list holds
about `list_target` entries (default config.LIST_TARGET = 16): few to scan
per probe, few lists to pay for (`table_layout`).  It stops at the bits the
hash uses (21 at the default configuration, reached at ~33 M entries, ~290
hours of music): past that a list holds one code value and grows with the
catalog.

The lists are laid out once, contiguously, in FAISS's own serialised form in
an anonymous in-memory file, and FAISS maps them (`IO_FLAG_MMAP`, which reads
them as an `OnDiskInvertedLists` over that memory).  An entry costs its 8-byte
hit id and its code byte; a list costs 24 bytes, plus 8 in the file (and
1/8 byte for where it starts, `LIST_STRIDE`).  The
alternatives cost more: `IndexBinaryHash` ~19 bytes per entry and ~140 per
distinct code (its buckets are std::vectors in a hash map), in-memory
`ArrayInvertedLists` 160 bytes per list.  See benchmarks/lookups.py.

`TableBuilder` writes that file from entries given in parts (an index's
segments, one at a time) in two passes: the codes of every part size the
lists, then each entry goes straight to its list's next free place, so that
building a table takes little more memory than the table itself.

Codes added later (tracks added while serving) go to a small
`faiss.IndexBinaryHash` beside the table, and every lookup asks both;
`compacted()` folds them into a new table, as the engine does once they pass
1/64 of it (`needs_compaction`).

A hit id packs where the reference triplet is: track number, anchor time,
anchor frequency and span, so no second lookup table is needed.
"""

from __future__ import annotations

import errno
import math
import mmap
import os
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import faiss
import numpy as np

from . import _kernels as K
from .config import LIST_TARGET

# A query's lookups are small; across concurrent queries, one thread each
# beats OpenMP fan-out (which also spins on a busy machine).  OpenMP keeps
# this setting per calling thread, so HashIndex.lookup() sets it in each
# thread too (a server's request threads start with one OpenMP thread per core).
faiss.omp_set_num_threads(1)

# Hit id layout (63 bits; the sign bit stays clear for FAISS's -1):
#   track (25) | anchor time, half-frames (21) | anchor freq, half-bins (9) | span, half-frames (8)
SPAN_BITS = 8
FREQ_BITS = 9
TIME_BITS = 21
TRACK_BITS = 63 - SPAN_BITS - FREQ_BITS - TIME_BITS
TRACK_SHIFT = TIME_BITS + FREQ_BITS + SPAN_BITS
MAX_TRACKS = 1 << TRACK_BITS
MAX_HALF_FRAMES = 1 << TIME_BITS

# Added codes are folded into the table once they pass 1/SIDE_FRACTION of it
# (and at least SIDE_MIN): an added code costs ~8x a table entry.
SIDE_FRACTION = 64
SIDE_MIN = 1 << 14
# IndexBinaryHash's resident bytes per bucket and per entry, fitted on
# measured RSS growth (buckets of 1 to 8 entries; benchmarks/lookups.py).
HASH_BYTES_PER_BUCKET = 139
HASH_BYTES_PER_ENTRY = 19
# OnDiskInvertedLists keeps {size, capacity, offset} per list.
LIST_HEADER_BYTES = 24
PAGE_BYTES = 4096
# Entries a table gives back at a time when it is compacted (~100 bytes each
# while they are decoded).
PART_ENTRIES = 1 << 20
# A lookup finds its list in the image from where every LIST_STRIDE-th list
# starts (8 bytes per LIST_STRIDE lists) and the sizes of those before it.
LIST_STRIDE = 64


def pack_ids(track: np.ndarray, t1: np.ndarray, f1: np.ndarray, span: np.ndarray) -> np.ndarray:
    """Hit ids from track numbers and anchor time (frames), frequency (bins), span (frames)."""
    tq = np.clip(np.rint(t1 * 2), 0, MAX_HALF_FRAMES - 1).astype(np.int64)
    fq = np.clip(np.rint(f1 * 2), 0, (1 << FREQ_BITS) - 1).astype(np.int64)
    sq = np.clip(np.rint(span * 2), 0, (1 << SPAN_BITS) - 1).astype(np.int64)
    tr = np.asarray(track, np.int64)
    return (tr << TRACK_SHIFT) | (tq << (FREQ_BITS + SPAN_BITS)) | (fq << SPAN_BITS) | sq


def unpack_ids(ids: np.ndarray):
    """Inverse of pack_ids: (track, t1 frames, f1 bins, span frames)."""
    ids = np.asarray(ids, np.int64)
    span = (ids & ((1 << SPAN_BITS) - 1)) * 0.5
    f1 = ((ids >> SPAN_BITS) & ((1 << FREQ_BITS) - 1)) * 0.5
    t1 = ((ids >> (SPAN_BITS + FREQ_BITS)) & (MAX_HALF_FRAMES - 1)) * 0.5
    track = ids >> TRACK_SHIFT
    return track, t1, f1, span


def marked(track: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Whether each track number is set in `mask` (bool [track numbers]);
    numbers beyond its end are not."""
    track = np.asarray(track, np.int64)
    if mask is None or len(mask) == 0:
        return np.zeros(len(track), bool)
    return (track < len(mask)) & mask[np.minimum(track, len(mask) - 1)]


def without_tracks(codes: np.ndarray, ids: np.ndarray,
                   removed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The (codes, ids) whose track `removed` (bool [track numbers]) does not
    mark; tracks beyond its end are kept."""
    if removed is None or not removed.any():
        return codes, ids
    keep = ~marked(ids >> TRACK_SHIFT, removed)
    return codes[keep], ids[keep]


def _as_binary(codes: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(codes, dtype="<u8").view(np.uint8).reshape(-1, 8)


def _probes_of(lims: np.ndarray, positions: np.ndarray | None = None) -> np.ndarray:
    """Probe position of each result of a range search, from its lims (or
    positions[probe], when given)."""
    at = np.arange(len(lims) - 1, dtype=np.int64) if positions is None else positions
    return np.repeat(at, np.diff(lims).astype(np.int64))


# -- the table ------------------------------------------------------------------

@dataclass(frozen=True)
class TableLayout:
    """How the table holds `entries` codes of `bits` bits: 2^k inverted lists
    (a code's list is its low k bits), the remaining high bits stored in
    `code_size` bytes per entry beside its 8-byte hit id.  k is the smallest
    that gives at most `list_target` entries per list on average, and at
    most `bits` (past that, a list holds one code value and grows with the
    catalog)."""

    entries: int
    bits: int
    list_target: int
    k: int

    @property
    def nlist(self) -> int:
        return 1 << self.k

    @property
    def code_size(self) -> int:
        return max(1, math.ceil((self.bits - self.k) / 8))

    @property
    def entries_per_list(self) -> float:
        return self.entries / self.nlist

    def lists(self, codes: np.ndarray) -> np.ndarray:
        """Each code's inverted list (int64): its low k bits."""
        return (np.asarray(codes, np.uint64) & np.uint64(self.nlist - 1)).astype(np.int64)

    def memory_bytes(self) -> int:
        """Resident bytes of the table, computed: each list's header and
        size, where every LIST_STRIDE-th list starts, each entry's stored
        code and id (the fixed header of the mapped file, ~100 bytes, left out)."""
        return (self.nlist * (LIST_HEADER_BYTES + 8) + -(-self.nlist // LIST_STRIDE) * 8
                + self.entries * (self.code_size + 8))


def _code_bits(cardinality: int) -> int:
    """Bits of a code below `cardinality`."""
    bits = max(1, math.ceil(math.log2(cardinality)))
    if bits > 64:
        raise ValueError("codes must fit in 64 bits")
    return bits


def table_layout(entries: int, bits: int, list_target: int = LIST_TARGET) -> TableLayout:
    """The layout the table takes for `entries` codes (see TableLayout)."""
    if list_target < 1:
        raise ValueError("list_target must be at least 1")
    k = min(bits, max(0, math.ceil(math.log2(max(entries, 1) / list_target))))
    return TableLayout(entries, bits, list_target, k)


def _ivf_header(d: int, nlist: int, sizes: np.ndarray) -> tuple[bytes, int]:
    """What faiss.write_index_binary writes for an IndexBinaryIVF (flat
    binary quantizer left empty, no direct map) whose inverted lists hold
    `sizes[l]` entries each, before the lists' data; and the offset of its
    table of list sizes.  The data follow: each non-empty list's stored
    codes (d/8 bytes each), then its ids (8 bytes each), list after list."""
    code_size = d // 8
    head = struct.pack("<4siiqBiQQ", b"IBwF", d, code_size, int(sizes.sum()), 1, faiss.METRIC_L2, nlist, 1)
    head += struct.pack("<4siiqBiQ", b"IBxF", d, code_size, 0, 1, faiss.METRIC_L2, 0)  # empty quantizer
    head += struct.pack("<BQ", 0, 0)  # DirectMap::NoMap
    head += struct.pack("<4sQQ", b"ilar", nlist, code_size)
    sizes_at = len(head)
    nonempty = np.flatnonzero(sizes)
    if len(nonempty) > nlist // 2:  # FAISS's own choice between its two forms
        table = np.asarray(sizes, "<u8")
        head += struct.pack("<4sQ", b"full", len(table)) + table.tobytes()
    else:
        table = np.stack([nonempty, sizes[nonempty]], axis=1).astype("<u8").ravel()
        head += struct.pack("<4sQ", b"sprs", len(table)) + table.tobytes()
    return head, sizes_at


def _list_starts(sizes: np.ndarray, code_size: int, data_at: int) -> np.ndarray:
    """Where each list starts in a table's image whose lists' data begin at
    byte `data_at`: list after list, each its codes, then its ids."""
    block = np.asarray(sizes, np.int64) * (code_size + 8)
    return data_at + np.cumsum(block) - block


def _entry_offsets(sizes: np.ndarray, code_size: int, data_at: int) -> tuple[np.ndarray, np.ndarray]:
    """Where each entry's stored code and id start in a table's image: each
    non-empty list holds its codes, then its ids."""
    sizes = np.asarray(sizes, np.int64)
    at = np.repeat(_list_starts(sizes, code_size, data_at), sizes)
    rank = np.arange(int(sizes.sum()), dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    return at + rank * code_size, at + np.repeat(sizes * code_size, sizes) + rank * 8


class _MemoryFile:
    """A file of `size` bytes (zeros) that lives in memory: a memfd on Linux,
    whose pages stay for as long as someone maps them; elsewhere a temporary
    file, unlinked on close.  `path` opens it (for FAISS)."""

    def __init__(self, size: int):
        try:
            fd = os.memfd_create("simsearch-index", os.MFD_CLOEXEC)
            path = f"/proc/self/fd/{fd}"
            if not os.path.exists(path):
                os.close(fd)
                raise OSError("no /proc/self/fd")
        except (AttributeError, OSError):  # not Linux, or memfd refused
            fd, path = tempfile.mkstemp(prefix="simsearch-index-")
        self.fd, self.path = fd, path
        try:
            os.ftruncate(fd, size)
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        if self.fd < 0:
            return
        os.close(self.fd)
        self.fd = -1
        if not self.path.startswith("/proc/"):
            os.unlink(self.path)


class TableBuilder:
    """Builds the table of `entries` codes from parts given in insertion
    order, in two passes: `count(codes)` of every part, then `fill(codes,
    ids)` of the same parts in the same order; then `index()`.

    Counting sizes each inverted list, so the table's image (FAISS's
    serialised form, as `_ivf_header` describes it) is laid out once, in a
    memory file of its exact size, and each entry is written straight into
    its list's next free slot.  Besides the image, it holds three int64 per
    list: a catalog read part by part (segment by segment) is never in memory
    whole.  A context manager: leaving it frees what was not made an index.
    """

    def __init__(self, cardinality: int, entries: int, list_target: int = LIST_TARGET):
        if not isinstance(list_target, (int, np.integer)) or isinstance(list_target, bool) or list_target < 1:
            raise ValueError(f"list_target must be a positive integer, not {list_target!r}")
        if entries < 0:
            raise ValueError("entries must be non-negative")
        self.cardinality, self.bits = cardinality, _code_bits(cardinality)
        self.layout = table_layout(int(entries), self.bits, int(list_target))
        self._sizes = np.zeros(self.layout.nlist, np.int64)
        self._counted = 0
        self._filled: np.ndarray | None = None  # entries written to each list, once counting is done
        self._closed = False
        self._file: _MemoryFile | None = None
        self._map: mmap.mmap | None = None
        self._image: np.ndarray | None = None  # the writable map while filling

    def __enter__(self) -> "TableBuilder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def count(self, codes: np.ndarray) -> None:
        """First pass: the codes (uint64) of the next part."""
        self._check_open()
        if self._filled is not None:
            raise RuntimeError("count() after fill()")
        codes = np.asarray(codes, np.uint64)
        self._sizes += np.bincount(self.layout.lists(codes), minlength=self.layout.nlist)
        self._counted += len(codes)

    def _open(self) -> None:
        lay = self.layout
        if self._counted != lay.entries:
            raise ValueError(f"{self._counted} codes counted for a table of {lay.entries}")
        head, self._sizes_at = _ivf_header(8 * lay.code_size, lay.nlist, self._sizes)
        self._data_at = len(head)
        self._start = _list_starts(self._sizes, lay.code_size, self._data_at)
        self._filled = np.zeros(lay.nlist, np.int64)
        if lay.entries:
            size = len(head) + lay.entries * (lay.code_size + 8)
            self._file = _MemoryFile(size)
            try:
                self._map = mmap.mmap(self._file.fd, size)
            except OSError as exc:  # out of address space: say so as numpy would
                if exc.errno != errno.ENOMEM:
                    raise
                raise MemoryError(f"cannot map the table's {size:,} bytes") from exc
            self._image = np.frombuffer(self._map, np.uint8)
            self._image[: len(head)] = np.frombuffer(head, np.uint8)

    def fill(self, codes: np.ndarray, ids: np.ndarray) -> None:
        """Second pass: the codes (uint64) and hit ids (int64) of the next part."""
        if len(codes) != len(ids):
            raise ValueError("codes and ids differ in length")
        self._check_open()
        if self._filled is None:
            self._open()
        if len(codes) == 0:
            return
        lay = self.layout
        done = K.scatter_entries(np.ascontiguousarray(codes, np.uint64), np.ascontiguousarray(ids, np.int64),
                                 lay.k, lay.code_size, self._start, self._sizes, self._filled, self._image)
        if done != len(codes):
            raise ValueError("more codes filled than counted in a list: the parts changed between the passes")

    def table(self) -> "_ListTable | None":
        """The table (its image now mapped read-only by FAISS); None when it holds nothing."""
        self._check_open()
        if self._filled is None:
            self._open()
        if not np.array_equal(self._filled, self._sizes):
            raise ValueError(f"{int(self._filled.sum())} entries filled of the {self.layout.entries} counted")
        table = None
        if self.layout.entries:
            self._unmap()
            table = _ListTable(self.layout, self._file.path, self._sizes_at, self._data_at, self._sizes)
        self.close()
        return table

    def index(self) -> "HashIndex":
        """A HashIndex over the table."""
        return HashIndex._of_table(self.cardinality, self.layout.list_target, self.table())

    def _unmap(self) -> None:
        self._image = None
        if self._map is not None:
            self._map.close()
            self._map = None

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the table builder is closed")

    def close(self) -> None:
        """Free the image (unless FAISS maps it) and the per-list arrays."""
        self._unmap()
        if self._file is not None:
            self._file.close()
        self._sizes = self._start = self._filled = None  # before the caller hands freed memory back
        self._closed = True


class _ListTable:
    """Exact code -> ids lookup in a FAISS IndexBinaryIVF over mapped, contiguous lists (read-only)."""

    def __init__(self, layout: TableLayout, path: str, sizes_at: int, data_at: int, sizes: np.ndarray):
        """The table whose image (laid out by TableBuilder) is the file at
        `path`, mapped through FAISS, its lists indexed for lookups."""
        self.layout, self.bits, self.ntotal = layout, layout.bits, layout.entries
        self.k, self.code_size, self.nlist = layout.k, layout.code_size, layout.nlist
        self._sizes_at, self._data_at = sizes_at, data_at
        self.faiss = faiss.read_index_binary(path, faiss.IO_FLAG_MMAP)
        self._lists = faiss.downcast_InvertedLists(self.faiss.invlists)
        self.file_bytes = int(self._lists.totsize)
        # Fault every page in now: the table is resident from the start (and
        # counted as such), and the first queries pay no page faults.
        self._mapped()[::PAGE_BYTES].max(initial=0)
        # Entries of each list (what a probe of it reads): the image's own
        # table when it is in the full form (as at the default sizing).
        img = self._mapped()
        if bytes(img[self._sizes_at: self._sizes_at + 4]) == b"full":
            self.sizes = img[self._sizes_at + 12: self._data_at].view("<u8")
        else:
            self.sizes = sizes.astype(np.uint32)
        # Where every LIST_STRIDE-th list starts in the image (a lookup adds
        # the sizes of the few lists before its own), and the bytes of a
        # stored code that can differ from a probe's in the list it reads.
        self._coarse = _list_starts(sizes, self.code_size, self._data_at)[::LIST_STRIDE].copy()
        self._compared = math.ceil((self.bits - self.k) / 8)

    def _split(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(list [n] int64, stored code bytes [n, code_size]) of each code."""
        lists = self.layout.lists(codes)
        high = np.ascontiguousarray(codes >> np.uint64(self.k), "<u8").view(np.uint8).reshape(-1, 8)
        return lists, np.ascontiguousarray(high[:, : self.code_size])

    def _mapped(self) -> np.ndarray:
        """The mapped file, as uint8 (a view: valid while self lives)."""
        return faiss.rev_swig_ptr(self._lists.ptr, self._lists.totsize)

    def lookup(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(lims [n + 1], ids): the ids equal to codes[i] are ids[lims[i]:lims[i + 1]].

        The lists FAISS maps are read in place (kernel list_lookup): what
        FAISS's range_search_preassigned (Hamming distance 0) returns, in its
        order, at a fraction of its time (benchmarks/results/query_profile.md)."""
        lists, stored = self._split(codes)
        lists[codes >> np.uint64(self.bits) != 0] = -1  # wider than any stored code: no list
        return K.list_lookup(self._mapped(), self._coarse, LIST_STRIDE, self.sizes, self.code_size, lists,
                             np.ascontiguousarray(stored[:, : self._compared]))

    def cost(self, codes: np.ndarray) -> np.ndarray:
        """Entries a lookup of each code reads (its list's size; 0 for codes wider than any stored)."""
        lists, _ = self._split(codes)
        return np.where(codes >> np.uint64(self.bits) != 0, 0, self.sizes[lists]).astype(np.int64)

    def entry_parts(self, part_entries: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every (code, id), list by list, each list in insertion order: in
        parts of whole lists, of about `part_entries` (or one list)."""
        img = self._mapped()
        cs = self.code_size
        sizes = np.asarray(self.sizes, np.int64)
        before = np.cumsum(sizes) - sizes  # entries of the lists before each
        first = 0
        while first < self.nlist:
            last = max(int(np.searchsorted(before, before[first] + part_entries, side="right")), first + 1)
            part = sizes[first:last]
            n = int(part.sum())
            code_at, id_at = _entry_offsets(part, cs, self._data_at + int(before[first]) * (cs + 8))
            high = np.zeros((n, 8), np.uint8)
            for b in range(cs):
                high[:, b] = img[code_at + b]
            id_bytes = np.empty((n, 8), np.uint8)
            for b in range(8):
                id_bytes[:, b] = img[id_at + b]
            lists = np.repeat(np.arange(first, last, dtype=np.uint64), part)
            yield (high.view("<u8").ravel() << np.uint64(self.k)) | lists, id_bytes.view("<i8").ravel()
            first = last

    def memory_bytes(self) -> int:
        own = 0 if self.sizes.base is not None else self.sizes.nbytes
        return self.nlist * LIST_HEADER_BYTES + self.file_bytes + own + self._coarse.nbytes


# -- the index --------------------------------------------------------------------

class HashIndex:
    """Exact lookup of hash codes: a compact FAISS table, plus the codes added since it was built.

    `HashIndex(cardinality, codes, ids)` builds the table from a catalog's
    codes (uint64, below `cardinality`) and hit ids; `add` takes more.
    `list_target`: mean entries per inverted list the table is sized for
    (default LIST_TARGET; see TableLayout).
    """

    def __init__(self, cardinality: int, codes: np.ndarray | None = None, ids: np.ndarray | None = None,
                 list_target: int = LIST_TARGET):
        codes = np.zeros(0, np.uint64) if codes is None else codes
        ids = np.zeros(0, np.int64) if ids is None else ids
        if len(codes) != len(ids):
            raise ValueError("codes and ids differ in length")
        with TableBuilder(cardinality, len(codes), list_target) as builder:  # one part: all of them
            builder.count(codes)
            builder.fill(codes, ids)
            self._init(cardinality, int(list_target), builder.table())

    @classmethod
    def _of_table(cls, cardinality: int, list_target: int, table: "_ListTable | None") -> "HashIndex":
        index = cls.__new__(cls)
        index._init(cardinality, list_target, table)
        return index

    def _init(self, cardinality: int, list_target: int, table: "_ListTable | None") -> None:
        self.cardinality, self.list_target = cardinality, list_target
        self.bits = _code_bits(cardinality)
        self._table = table
        self._added: faiss.IndexBinaryHash | None = None
        self._added_parts: list[tuple[np.ndarray, np.ndarray]] = []  # what _added holds, for compacted()

    @property
    def ntotal(self) -> int:
        return self.table_size + self.added_size

    @property
    def table_size(self) -> int:
        return self._table.ntotal if self._table else 0

    @property
    def added_size(self) -> int:
        return self._added.ntotal if self._added else 0

    def add(self, codes: np.ndarray, ids: np.ndarray) -> None:
        """Add entries beside the table (see `needs_compaction`)."""
        if len(codes) != len(ids):
            raise ValueError("codes and ids differ in length")
        if len(codes) == 0:
            return
        codes, ids = np.array(codes, np.uint64), np.array(ids, np.int64)
        if self._added is None:
            self._added = faiss.IndexBinaryHash(64, self.bits)
        self._added.add_with_ids(_as_binary(codes), ids)
        self._added_parts.append((codes, ids))

    def lookup(self, codes: np.ndarray, max_entries: int | None = None,
               weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Every stored entry whose code equals one of `codes`.

        Returns (probe, ids): probe[k] is the position in `codes` that found
        ids[k].  Results come probe by probe, each probe's in the order the
        entries were added.  `max_entries` bounds the work: see `within_budget`
        (and its `weight`).
        """
        codes = np.asarray(codes, np.uint64)
        if len(codes) == 0 or self.ntotal == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        kept = None  # positions of the probes looked up, when not all
        if max_entries is not None:
            mask = self.within_budget(codes, max_entries, weight)
            if not mask.all():
                kept = np.flatnonzero(mask)
                codes = codes[kept]
        faiss.omp_set_num_threads(1)  # per thread: see the module's top
        parts = []
        if self._table:
            parts.append(self._table.lookup(codes))
        if self._added:
            lims, _, found = self._added.range_search(_as_binary(codes), 1)
            parts.append((lims, found))
        if len(parts) == 1:
            return _probes_of(parts[0][0], kept), parts[0][1]
        probe, found = _interleave(*parts[0], *parts[1])
        return (probe, found) if kept is None else (kept[probe], found)

    def within_budget(self, codes: np.ndarray, max_entries: int, weight: np.ndarray | None = None) -> np.ndarray:
        """Which probes to look up (bool [n]) so that they read at most
        `max_entries` table entries: all of them when they fit, else those of
        the smallest lists first.  A code shared by many entries is the least
        telling (chance hits grow with the catalog, a true hit is one entry),
        so a query over a huge catalog keeps its most selective probes and a
        bounded time and memory.  `weight` (float [n], default 1): how many
        times its list's size a probe counts in that order (a probe less
        likely to hold the match counts more); what it reads counts once.
        The side index of added codes (at most 1/SIDE_FRACTION of the table)
        is not counted."""
        codes = np.asarray(codes, np.uint64)
        if self._table is None:
            return np.ones(len(codes), bool)
        cost = self._table.cost(codes)
        if int(cost.sum()) <= max_entries:
            return np.ones(len(codes), bool)
        order = np.argsort(cost if weight is None else cost * weight, kind="stable")
        keep = np.zeros(len(codes), bool)
        keep[order[np.cumsum(cost[order]) <= max_entries]] = True
        return keep

    def needs_compaction(self) -> bool:
        """Whether the added entries are worth folding into a new table."""
        return self.added_size >= max(SIDE_MIN, self.table_size // SIDE_FRACTION)

    def compacted(self, removed: np.ndarray | None = None) -> "HashIndex":
        """A new index holding everything in one table, less the entries of
        the tracks that `removed` marks (bool [track numbers]; beyond its end:
        kept).  Lookups give the same hits in the same order.

        Built beside this one from its entries in parts (TableBuilder), the
        table's list by list, then the added ones: three passes over them
        (the entries kept, then counted, then filled), so that it takes the
        new table and one part's arrays besides this index."""
        def parts():
            if self._table:
                yield from self._table.entry_parts(PART_ENTRIES)
            yield from self._added_parts

        def kept():
            return (without_tracks(codes, ids, removed) for codes, ids in parts())

        with TableBuilder(self.cardinality, sum(len(c) for c, _ in kept()), self.list_target) as builder:
            for codes, _ in kept():
                builder.count(codes)
            for codes, ids in kept():
                builder.fill(codes, ids)
            return builder.index()

    def memory_bytes(self) -> int:
        """Resident size: the table's lists and mapped file; the added entries'
        IndexBinaryHash (fitted per bucket and per entry) and their arrays."""
        total = self._table.memory_bytes() if self._table else 0
        if self._added:
            total += (self._added.hashtable_size() * HASH_BYTES_PER_BUCKET + self.added_size * HASH_BYTES_PER_ENTRY
                      + sum(c.nbytes + i.nbytes for c, i in self._added_parts))
        return int(total)

    def parameters(self) -> dict:
        """The structure and parameters in use, for reports: the table's
        layout (measured list sizes) and the side index of added codes."""
        out = {"structure": "faiss.IndexBinaryIVF over mapped lists", "list_target": self.list_target,
               "entries": self.table_size, "added_entries": self.added_size, "memory_bytes": self.memory_bytes()}
        if self._table:
            t = self._table
            out |= {"nlist": t.nlist, "k": t.k, "code_size_bytes": t.code_size,
                    "entries_per_list_mean": round(t.layout.entries_per_list, 2),
                    "entries_per_list_max": int(t.sizes.max())}
        return out

    def describe(self) -> str:
        """What FAISS holds, for reports."""
        parts = []
        if self._table:
            t = self._table
            parts.append(f"IndexBinaryIVF(d={8 * t.code_size}, nlist=2^{t.k}) over mapped lists")
        if self._added:
            parts.append(f"IndexBinaryHash(d=64, b={self.bits}) of {self.added_size} added codes")
        return " + ".join(parts) or "empty"


def _interleave(lims_a: np.ndarray, ids_a: np.ndarray, lims_b: np.ndarray,
                ids_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(probe, ids) of two range searches over the same probes, probe by
    probe, each probe's results from `a` first."""
    lims_a, lims_b = lims_a.astype(np.int64), lims_b.astype(np.int64)
    na, nb = np.diff(lims_a), np.diff(lims_b)
    both = na + nb
    start = np.cumsum(both) - both
    out = np.empty(int(both.sum()), np.int64)
    out[np.repeat(start - lims_a[:-1], na) + np.arange(len(ids_a))] = ids_a
    out[np.repeat(start + na - lims_b[:-1], nb) + np.arange(len(ids_b))] = ids_b
    return np.repeat(np.arange(len(both), dtype=np.int64), both), out
