"""Every tunable of the fingerprint pipeline, in one frozen object, with its unit and default beside it.

Changing a value that alters the hashes (anything above `# -- matching`) makes stored fingerprints
incompatible: bump `FINGERPRINT_VERSION` with it.
"""

from __future__ import annotations

from dataclasses import dataclass

# Version of the hash definition (spectrogram, peaks, pairs and bit layout). Stored with every shard;
# a shard written with another version is refused, since its hashes would never match ours.
FINGERPRINT_VERSION = 1


@dataclass(frozen=True)
class FingerprintParams:
    # -- decode
    sample_rate_hz: int = 8000  # Hz; everything above 4 kHz is lost to phones, low-pass and codecs anyway
    # -- spectrogram
    n_fft: int = 1024  # samples per window (128 ms at 8 kHz): long enough to resolve tones in noise
    hop: int = 128  # samples between frames (16 ms at 8 kHz); the unit of every offset in frames
    # -- peaks
    f_min_hz: float = 250.0  # Hz; below, phones and small speakers drop the signal
    f_max_hz: float = 3400.0  # Hz; above, low-pass, phone band and low-bitrate codecs drop it
    # dB below a full-scale sine: quieter cells are never peaks. Above the dither of 16-bit silence (+-2
    # LSB gives none), and far enough below music that a quiet recording or a quietly mastered track keeps
    # its peaks (bench/level_bench.py, 150 clips, 128 found at full level): at the earlier -70 dB clips
    # 45 dB quieter than their track were found 69 times and 60 dB quieter never (now 127 and 117), and
    # a track stored 45 dB quieter kept 5 % of its hashes (now 92 %). Lowering it only adds peaks where
    # fewer than the density allows were above it (quiet passages): fingerprints stored with a higher
    # floor still match, so it is not in FINGERPRINT_VERSION
    peak_floor_db: float = -100.0
    peak_block_frames: int = 32  # frames; density is controlled per block of this many frames
    ref_peak_time_radius: int = 6  # frames: a stored peak is the maximum of +-this many frames ...
    ref_peak_freq_radius: int = 4  # bins: ... and +-this many bins around it
    ref_peaks_per_second: float = 40.0  # at most this many peaks per second when a track is stored
    query_peak_time_radius: int = 4  # frames; smaller than stored: a query finds a superset of the peaks
    query_peak_freq_radius: int = 3  # bins
    query_peaks_per_second: float = 56.0  # a query keeps more peaks, so more of the stored ones are found
    # -- pairs
    fan_out: int = 5  # targets per anchor when storing; every two of them make a triplet (10 per anchor)
    query_fan_out: int = 10  # targets per anchor in a query (45 triplets per anchor)
    pair_dt_min: int = 2  # frames; the closest a target may follow its anchor
    pair_dt_max: int = 63  # frames; the farthest (about 1 s); must fit `hashes.DT_BITS`
    pair_df_max_cells: int = 31  # frequency cells a target may lie above or below its anchor
    # -- hashes: frequency is quantised on a mel-like scale so that a speed change shifts it evenly
    freq_cells: int = 256  # cells between f_min_hz and f_max_hz; must fit `hashes.F_BITS`
    mel_break_hz: float = 700.0  # Hz; cells are linear below this frequency and logarithmic above
    # -- streaming
    chunk_seconds: float = 20.0  # s of PCM fingerprinted at a time: bounds memory for long files
    min_clip_seconds: float = 1.0  # s; shorter clips are refused: too few landmarks to decide anything

    @property
    def frame_seconds(self) -> float:
        """Seconds per spectrogram frame (the unit of offsets)."""
        return self.hop / self.sample_rate_hz


DEFAULT_PARAMS = FingerprintParams()


# speed/tempo hypotheses scored together: a match key holds the hypothesis in `kernels.GROUP_BITS` bits
MAX_HYPOTHESES = 32


@dataclass(frozen=True)
class MatchParams:
    """Tunables of scoring; they do not change stored data."""

    offset_tolerance: int = 1  # frames: matches within +-this of the best offset count as consistent
    # a hash stored far more often than the average one carries little evidence and costs much scoring: it
    # is skipped. The cap grows with the catalogue: `posting_cap_ratio` times the postings of an average
    # hash (stored hashes / 2**HASH_BITS), at least `posting_cap_floor`, at most `max_postings_per_hash`.
    # At 10,000 tracks (774 M hashes) it is 50: 0.9 % of a query's hashes, 36 % of their postings.
    max_postings_per_hash: int = 2000
    posting_cap_floor: int = 50
    posting_cap_ratio: float = 280.0
    min_matches: int = 5  # query frames with consistent matches below this never make a result
    min_confidence: float = 0.5  # results below this are not reported
    # confidence = logistic(slope * (consistent query frames - midpoint)), see score.calibrated_confidence
    confidence_slope: float = 1.2
    confidence_midpoint: float = 8.5
    # a bigger catalogue offers more (track, offset) bins for chance agreement to pile up in: both
    # midpoints grow by `midpoint_per_doubling` frames per doubling of the stored hashes beyond
    # `calibration_hashes` (the size they were fitted at: ~12.5 h of audio). Fitted on clips of unstored
    # tracks against 10,000 tracks (774 M hashes), whose chance agreement reaches 12 frames (17 jittered).
    calibration_hashes: int = 16_000_000
    midpoint_per_doubling: float = 0.8
    # a longer query offers chance agreement more hashes to pile up from: both midpoints also grow by
    # `query_midpoint_per_doubling` frames per doubling of the candidate's query hashes beyond
    # `calibration_query_hashes` (what they were fitted at: 10 s clips, at most ~21,500). Fitted on whole
    # unstored tracks (400k-1.1M hashes), whose chance agreement reached 9-13 frames against 165 tracks
    # where their 10 s clips reach 8 (5 of 40 songs were reported): at 1.0 per doubling the most such
    # agreement gets confidence 0.2, and none is reported
    calibration_query_hashes: int = 22_000
    query_midpoint_per_doubling: float = 1.0
    early_exit_confidence: float = 0.99  # the plain hypothesis alone is trusted from this confidence up ...
    early_exit_concentration: float = 0.5  # ... when this share of nearby matching frames sits in its window
    # ... and when no other place comes close: the runner-up (another track, or the answer's track more
    # than `drift_frames` from its offset, as where the track repeats the passage or a remaster of it is
    # also stored) holds at most this share of the answer's distinct frames. Closer contests run the later
    # stages too, whose evidence (the hypotheses, the +-1-frame lookup) settles most of them: paired on all
    # clips, held-out corpus +21 / -6 right answers at 7 % more hashes looked up, dev corpus +20 / -10
    # (bench/results/match_ab_rival_heldout.json, _dev.json); at 10,000 tracks p50 7.6 -> 8.6 ms
    # (match_ab_rival.json). 0.75 and 0.5 gained no more for 20-40 % more hashes
    early_exit_rival_share: float = 0.9
    # a contested answer, whose track holds another place (beyond `drift_frames`) with at least
    # `settle_rival_share` of its distinct frames (a repeat of the passage), is settled by single peaks: the
    # clip's peaks that meet the track's stored ones at each place (verify.py). The other place wins when it
    # counts clearly more: by `settle_z` standard deviations of the two counts' difference (Poisson,
    # sqrt(a + b)). A plain ratio (1.05) moved clean clips of loop-based music to a repeat of their passage:
    # counts of 100-150 differ by 10 % by chance. A track stored without its peaks keeps the answer.
    # A peak meets a stored one within `settle_reach` (frames, cells): with (1, 1) a musically alike
    # repeat met clean clips as often as their own place (held-out: 30 right answers moved at 1.05);
    # exact meetings tell them apart better
    settle_rival_share: float = 0.5
    settle_z: float = 3.0
    settle_reach: tuple[int, int] = (0, 0)
    # a clip left without a confident answer is checked once more by single peaks: its
    # `rescue_candidates` strongest weak candidates (tracks with at least `rescue_min_frames` distinct
    # frames at their best place; 0 turns the check off) count the clip's peaks that meet the track's stored
    # ones there and at `rescue_controls` places spread over the track; the count's distance from theirs
    # in standard deviations (z) gives the confidence logistic(rescue_slope * (z - rescue_z_midpoint)).
    # Dev corpus: the clips of unstored tracks reach z 5.1 (10 s) and 7.3 (3 s and 5 s; 1,560 in all),
    # clips of stored tracks that had no answer reach up to 22 (bench/results/engine_peaks_dev.json)
    rescue_min_frames: int = 5
    rescue_candidates: int = 3
    rescue_controls: int = 24
    rescue_reach: tuple[int, int] = (1, 1)  # (frames, cells): see settle_reach; here wider finds more
    rescue_z_midpoint: float = 8.0
    rescue_slope: float = 1.0
    drift_frames: int = 40  # frames; how far a 5 % tempo change drifts a 10 s clip's matches (about 0.6 s)
    max_results: int = 3
    # last try for clips still without a confident answer (reverb, heavy noise move peaks by a frame or
    # two, which breaks a triplet's frame deltas): every plain query triplet is also looked up with each
    # target moved +-`jitter_frames` frames. Nine times the hashes, so more chance agreement: those
    # candidates use `jitter_confidence_midpoint` (clips of unstored tracks reach 12 frames there on the
    # dev corpus, where the plain lookup's reach 8). 0 turns the stage off.
    jitter_frames: int = 1
    jitter_confidence_midpoint: float = 15.5
    # targets per anchor of the triplets moved (21 triplets per anchor, where the plain query forms 45 from
    # `query_fan_out` = 10): the moves multiply the hashes by nine; with 7 the lookup is 2.1x smaller
    # and finds as many phone recordings on the dev corpus (91 of 100 at 7 and at 10, 89 at 6)
    jitter_fan_out: int = 7
    # targets per anchor of the triplets hashed under each speed/tempo hypothesis (28 triplets per anchor,
    # where `query_fan_out` = 10 forms 45): the hypotheses make most of a hard clip's lookup. On the dev
    # corpus (5,460 queries, twelve hypotheses then) 8 instead of 10 finds 4 fewer (10 s speed/tempo clips
    # one more, 3 s speed clips 2 fewer) at 0.7x the match time; 7 finds 12 fewer
    hypothesis_fan_out: int = 8
    # ... lowered for long clips, whose many anchors give evidence enough: at most this many triplets per
    # hypothesis (a clip forms about 1,450 per second at fan-out 8, so 5 s clips keep 8 and 10 s clips get
    # 7), never below `hypothesis_min_fan_out`. It bounds the hypotheses the screen below keeps; before the
    # screen, all 14 were hashed at 7,300 (10 s clips at fan-out 5-6)
    hypothesis_max_triplets: int = 12_000
    hypothesis_min_fan_out: int = 4
    # the screen: every hypothesis is first hashed with at most `hypothesis_screen_triplets` triplets
    # (fan-out 2-4: the strongest targets, a subset of the full landmarks), looked up and scored; only the
    # `hypothesis_screen_keep` whose best (track, offset) bin holds the most frames are then hashed in full
    # (the screen's hashes are not looked up again). A speed between two grid points shows on both
    # neighbours. Measured against hashing all 14 in full (7,300 triplets), bench/results/match_ab_screen:
    # at 10,000 tracks (624 clips) 36 % fewer hashes looked up, p50 10.4 -> 8.4 ms, p99 32 -> 29 ms, the
    # same answers but one (a repeat in its track); 5,460 clips at 165 tracks net 0; speed_sweep_screen.json:
    # 10 s noisy speed 93.9 -> 94.1 % (worst 85 -> 82.5), tempo 93.7 -> 94.2 %, 3 s clean speed 92.4 % both.
    # Keeping 3 finds a little more (speed 94.4 %) at 2/3 of the saving; screens of 700 triplets lost up
    # to 0.9 %. 0 hashes every hypothesis in full
    hypothesis_screen_keep: int = 2
    hypothesis_screen_triplets: int = 1_500
    # a clip longer than this (s) is first looked up over the span of this length where its peaks are
    # densest (a silent or quiet start is skipped), and the speed/tempo and +-1-frame stages read only
    # that span; the plain lookup reads the whole clip only when the span finds nothing sure (a long
    # recording may hold the music anywhere). At 10,000 tracks whole 2.5-4-minute songs took 113-247 ms
    # to name over all of it, and ones that matched nothing 240-770 ms (475k-770k hashes). 0 = the whole clip
    long_clip_window_s: float = 20.0
    # speed (tempo and pitch together) and tempo (pitch kept) hypotheses tried when the plain query fails.
    # A speed change moves every peak's frequency cell (0.5 % is 0.3-0.7 cell from 300 Hz to 3 kHz) and a
    # triplet hash needs all three cells exact, so the speed grid must be fine: at the earlier 1.5 % steps
    # a clip between two of them (0.75 % off) lost most of its hashes. Measured over every speed from -5 to
    # +5 % in 0.25 % steps (bench/speed_sweep.py, dev corpus, 10 s clips with white noise at SNR 10 dB):
    # 1.5 % steps 87 % on average and 30 % at the worst speed, 1.25 % steps 93 / 82 %, 1 % steps 94 / 85 %
    # (3 s clean clips: 77 / 15, 86 / 60, 92 / 78 %); beyond the last factor recall falls within 0.5 %.
    # A tempo change keeps the cells and only stretches frame distances, which the offset window and
    # rounding absorb: 2.5 % steps (4 hypotheses) find nearly as many as 1.5 % (6): 93.7 vs 94.6 % of
    # 10 s noisy clips on the same sweep, the worst tempo 87.5 % with both
    speed_factors: tuple[float, ...] = (0.95, 0.96, 0.97, 0.98, 0.99, 1.01, 1.02, 1.03, 1.04, 1.05)
    tempo_factors: tuple[float, ...] = (0.95, 0.975, 1.025, 1.05)

    def __post_init__(self) -> None:
        n = len(self.speed_factors) + len(self.tempo_factors)
        if n > MAX_HYPOTHESES:
            raise ValueError(f"{n} speed/tempo hypotheses; scoring takes at most {MAX_HYPOTHESES} at once")
        if self.long_clip_window_s < 0:
            raise ValueError(
                f"long_clip_window_s must be >= 0 (0 = the whole clip), got {self.long_clip_window_s}"
            )
        if self.hypothesis_screen_keep < 0 or self.hypothesis_screen_triplets < 1:
            raise ValueError(
                "hypothesis_screen_keep must be >= 0 (0 = no screen) and hypothesis_screen_triplets >= 1, "
                f"got {self.hypothesis_screen_keep} and {self.hypothesis_screen_triplets}"
            )
        if self.early_exit_rival_share <= 0:
            raise ValueError(
                "early_exit_rival_share must be > 0 (a share of the answer's frames), "
                f"got {self.early_exit_rival_share}"
            )
        if not 2 <= self.hypothesis_min_fan_out <= self.hypothesis_fan_out:
            raise ValueError(
                f"hypothesis_min_fan_out must lie in [2, hypothesis_fan_out = {self.hypothesis_fan_out}] "
                f"(two targets make a triplet), got {self.hypothesis_min_fan_out}"
            )


DEFAULT_MATCH_PARAMS = MatchParams()
