"""Frozen configuration with units and defaults.

`FeatureConfig` decides what is stored: it is written into every index and an
index made with another one is refused.  `MatchConfig` only changes how a query
is searched and decided, so it may differ from query to query.  `ApiConfig`
holds the HTTP API's limits and keys.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field

from .auth import KeyRing

FORMAT_VERSION = 3  # 3: peaks ranked by spectral contrast (FeatureConfig.contrast_bins)

# Audio samples are nominally within +-1 (float formats may exceed it a little);
# 80 dB over full scale is garbage, refused by the decoder, and would overflow
# float32 powers in the spectrogram.
MAX_SAMPLE_MAGNITUDE = 1e4

# Mean entries per inverted list the serving table is sized for (its number
# of lists grows with the catalog: index.TableLayout).  Fewer lists cost less
# memory (32 bytes each) but each probe scans more entries; 16 keeps the
# lists under 4 bytes per entry and the lookups faster than IndexBinaryHash's
# (benchmarks/lookups.py).  A serving choice (Engine(list_target=...),
# --list-target), not stored with the index.
LIST_TARGET = 16


@dataclass(frozen=True)
class FeatureConfig:
    # Analysis: mono audio at `sample_rate`, STFT of `n_fft` samples every `hop`.
    sample_rate: int = 8000
    n_fft: int = 1024
    hop: int = 256
    # Log-frequency axis: `n_octaves` octaves from `fmin` Hz, `bins_per_octave`
    # bins each.  A pitch shift or a resampling moves every peak by the same
    # number of bins on this axis, which is what makes the hashes invariant.
    fmin: float = 220.0
    bins_per_octave: int = 36
    n_octaves: int = 4
    # Spectral peaks: local maxima (no louder cell) in a (2*rt+1) frames x
    # (2*rf+1) bins neighbourhood, louder than `floor_db` (dB re full scale;
    # low, so that a quieter copy keeps its peaks: only near-silence is out).
    peak_time_radius: int = 4
    peak_freq_radius: int = 6
    floor_db: float = -90.0
    # Peaks compete for their block's quota (below) by contrast: their level
    # less the mean level of the +-`contrast_bins` bins around them in their
    # frame (0: by level alone).  Reverb, noise and a mixed-in voice raise the
    # spectrum's floor broadly; a partial standing out of its neighbourhood
    # survives them, a loud but flat region does not earn a peak.
    contrast_bins: int = 24
    # Density of the catalog side: at most `ref_peaks_per_block` peaks per
    # `density_block_s` seconds, each anchoring triplets with its next
    # `ref_fanout` peaks.  (The query side's density is in MatchConfig.)
    density_block_s: float = 1.0
    ref_peaks_per_block: int = 12
    ref_fanout: int = 3
    # Triplets: anchor + two later peaks within `max_span` frames and
    # `max_df` bins of the anchor.
    min_span: int = 3
    max_span: int = 60
    max_df: int = 30
    # Quantisation of the hash fields.
    ratio_levels: int = 10
    df_step: float = 2.0
    f1_band: int = 36
    span_band_octaves: float = 1.0

    @property
    def n_bins(self) -> int:
        return self.bins_per_octave * self.n_octaves

    @property
    def frame_seconds(self) -> float:
        return self.hop / self.sample_rate

    @property
    def df_levels(self) -> int:
        return int(math.ceil(2 * self.max_df / self.df_step)) + 1

    @property
    def f1_bands(self) -> int:
        return int(math.ceil(self.n_bins / self.f1_band))

    @property
    def span_bands(self) -> int:
        return int(math.floor(math.log2(self.max_span / self.min_span) / self.span_band_octaves)) + 1

    @property
    def hash_cardinality(self) -> int:
        return self.ratio_levels * self.df_levels**2 * self.f1_bands * self.span_bands * 8

    def validate(self) -> "FeatureConfig":
        from .errors import ParameterError

        if self.sample_rate < 4000 or self.n_fft <= 0 or self.hop <= 0:
            raise ParameterError("sample_rate, n_fft and hop must be positive (sample_rate >= 4000)")
        fmax = self.fmin * 2**self.n_octaves
        if fmax >= self.sample_rate / 2:
            raise ParameterError(f"top of the log-frequency axis ({fmax:.0f} Hz) must stay below Nyquist")
        if self.n_bins * 2 >= 512 or self.max_span * 2 >= 256:
            raise ParameterError("n_bins must be < 256 and max_span < 128 to fit the hit payload")
        if self.contrast_bins < 0:
            raise ParameterError("contrast_bins must be >= 0")
        if self.hash_cardinality >= 2**48:
            raise ParameterError("hash fields do not fit in 48 bits")
        return self

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "FeatureConfig":
        from .errors import ConfigMismatch

        fields = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(fields, dict) or set(fields) - known:
            extra = sorted(set(fields) - known) if isinstance(fields, dict) else fields
            raise ConfigMismatch(f"stored feature configuration has fields this simsearch does not know: {extra}; "
                                 "rebuild the index with `simsearch build`")
        return cls(**fields)


@dataclass(frozen=True)
class MatchConfig:
    # The query side keeps more peaks and more triplets than the catalog side,
    # so that the catalog's triplets are found among them despite noise.
    query_peaks_per_block: int = 18
    query_fanout: int = 5
    # The wide pass (off unit speed and pitch) runs only when the unit-speed
    # pass found no plain copy: transformed audio keeps fewer of the catalog's
    # triplets, so it gets more triplets per anchor (more probes, more time).
    wide_query_fanout: int = 6
    # Search range: reference speed inside the query (1.25 = sped up by 25%)
    # and the query's pitch shift in semitones (whatever its cause: resampling
    # moves pitch with speed, a pitch shifter without it).
    min_speed: float = 0.75
    max_speed: float = 1.30
    max_pitch: float = 5.0
    # A quantised field whose value lies within `probe_margin` (in quantisation
    # steps) of a cell edge is also looked up in the neighbouring cell.
    probe_margin: float = 0.3
    # Peaks whose levels differ by less than `tie_db` may swap loudness order.
    tie_db: float = 2.0
    # Alignment: hits agree when they fall within `align_tol_s` of one line
    # (reference time = offset + speed * query time).
    align_tol_s: float = 0.064
    # Score: each aligned anchor pair weighs a Gaussian of its distance from
    # the line, in time (seconds) and in pitch (semitones).  True hits sit
    # within about half a frame; chance hits scatter over +-align_tol_s.
    hit_time_sigma_s: float = 0.016
    hit_pitch_sigma: float = 0.15
    speed_step: float = 0.02  # coarsest speed step; finer for long queries
    pitch_tol: float = 0.5
    # A match's time range leaves out small runs of aligned hits set apart
    # from the rest by gaps longer than this.
    max_gap_s: float = 3.0
    max_candidates: int = 12
    # Bound on the table entries one pass of a query reads (its hits), so
    # that a query's time and memory (~100 bytes per hit while it is matched)
    # stay bounded however large the catalog: past it, the probes of the
    # most shared codes are left out (HashIndex.within_budget).  A 10 s query
    # reads ~0.2 M entries per pass on a 3.5 h catalog; hits grow with it
    # (~500 M at 10,000 h).  3 M: on the scale ladder at 10,000 h, 10 s
    # queries at p99 223 ms with recall@1 0.9 points under 100 h's (2 M:
    # 142 ms, -1.05; 4 M: 336 ms, -0.6; benchmarks/results/scale.md).
    max_lookup_entries: int = 3_000_000
    # Which probes the bound keeps: the smallest lists first, each probe's
    # list counted this many times as long for each of its fields probed in
    # a neighbouring cell (probe_margin) and each loudness sign flipped
    # (tie_db): such a probe holds a true match's triplet less often than
    # the query's own cells do.  1: by list size alone.
    probe_detour_cost: float = 10.0
    # A match off unit speed and pitch (beyond these tolerances) needed the
    # wide search, whose many (speed, pitch) hypotheses reach higher scores by
    # chance: its score is the aligned hits less `off_unit_penalty`.
    unit_speed_tol: float = 0.02
    unit_pitch_tol: float = 0.3
    off_unit_penalty: float = 4.0
    # The query's dense local maxima: every cell that no other cell of its
    # (2 * frames + 1) x (2 * bins + 1) neighbourhood exceeds, not a quota:
    # denser than the fingerprint's peaks, so that a catalog peak under
    # louder audio still shows.  Verification and locating look for the
    # catalog track's own peaks (the anchors of its stored triplets) among them.
    dense_peak_radius: tuple[int, int] = (2, 3)
    # Verification: a candidate alignment's reference peaks are mapped into
    # the query along its line and pitch, over its matched range and
    # `verify_margin_s` either side (at least `verify_min_window_s` in all),
    # and looked up among the dense maxima within +-`verify_tol_frames` and
    # +-`verify_tol_bins`.  The match's score is the z-score of the count
    # found against chance: at each peak, the query's own rate of maxima in
    # its bin over that window, or over +-`verify_local_s` around the peak
    # where the query is denser there, or in the peak's row across the
    # spectrum where an onset makes it so (matching.verify).  Candidates whose
    # aligned hits weigh less than `min_hit_score` are not verified.
    verify_tol_frames: float = 0.5
    verify_tol_bins: int = 1
    verify_margin_s: float = 1.0
    verify_min_window_s: float = 6.0
    verify_local_s: float = 2.0
    min_hit_score: float = 1.0
    # A match also reports up to `max_repeats` other ranges of its catalog
    # track that the query's matched range fits nearly as well, at the same
    # speed and pitch (a passage the track repeats: a chorus, a loop): each
    # is verified like a match and reported when its score is at least
    # `repeat_min_ratio` of the match's (and min_score).  Music that only
    # resembles itself elsewhere (the same drum pattern under another
    # melody) verifies above chance too, far below the match: not a repeat.
    max_repeats: int = 3
    repeat_min_ratio: float = 0.8
    # Locating a returned match: its reference peaks are looked for among the
    # dense maxima within locate_tol_s and locate_tol_semitones.  Chance is
    # the rate of such maxima at the peak's frequency within
    # +-locate_background_s of it.  The range grows outward to the boundary
    # that maximises the likelihood ratio (match against chance) of the peaks
    # it takes in, when that ratio reaches `locate_odds`; by chance alone a
    # walk reaches it with probability at most 1/locate_odds (Ville's inequality).
    locate: bool = True
    locate_tol_s: float = 0.032
    locate_tol_semitones: float = 1.0 / 3.0
    locate_background_s: float = 1.0
    locate_odds: float = 1000.0
    # Decision: matches whose verification score is less are not returned
    # (chosen on the benchmarks: the smallest half step at which excerpts of
    # tracks outside the catalog are matched at most 0.2% of the time, both
    # plain and transformed ones; benchmarks/results/core.md and
    # derivatives.md, "Threshold sweep").
    min_score: float = 4.0
    # A plain copy of the whole query scoring this much ends the search after
    # the unit-speed pass (the wide pass is skipped).
    early_exit_score: float = 10.0
    top_k: int = 5

    def replace(self, **changes) -> "MatchConfig":
        return dataclasses.replace(self, **changes)

    def near_unit(self, speed: float, pitch: float) -> bool:
        """Whether a line lies within the unit-speed pass's tolerances (a plain copy's)."""
        return abs(speed - 1.0) <= self.unit_speed_tol and abs(pitch) <= self.unit_pitch_tol

    def narrowed(self) -> "MatchConfig":
        """The same search restricted to unit speed and pitch (plain copies)."""
        return self.replace(min_speed=max(self.min_speed, 1.0 / (1.0 + self.unit_speed_tol)),
                            max_speed=min(self.max_speed, 1.0 + self.unit_speed_tol),
                            max_pitch=min(self.max_pitch, self.unit_pitch_tol))


@dataclass(frozen=True)
class ApiConfig:
    """Limits and access control of the HTTP API (decode limits live in the Engine)."""
    max_upload_bytes: int = 64 * 1024 * 1024
    max_top_k: int = 50
    max_audio_s: float = 60.0  # longest excerpt of catalog audio one request returns
    # Directories whose files GET /v1/audio may read (a track's recorded
    # source file must lie inside one); none: catalog audio is off.
    media_roots: tuple[str, ...] = ()
    # Uploads decoded at once (each bounded by the Engine's DecodeLimits); a
    # request waits at most `decode_wait_s` for a slot, then gets 503 busy.
    max_concurrent_decodes: int = max(1, os.cpu_count() or 1)
    decode_wait_s: float = 10.0
    # API keys.  Writes (adding, deleting tracks) always need a write key,
    # unless `open_access` (a trusted network, tests); queries and reads need
    # a key only with `keys_for_reads`.
    keys: KeyRing = field(default_factory=KeyRing)
    keys_for_reads: bool = False
    open_access: bool = False
