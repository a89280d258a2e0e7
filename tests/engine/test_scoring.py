"""Scoring helpers: the stages' lookups shared, the hash index, the offset ranking, the bounds
that spare scoring hopeless tracks and over-common hashes."""

from dataclasses import replace

import numpy as np
import pytest

from tunescout.engine import kernels
from tunescout.engine.fingerprint import Fingerprint, extract_peaks, query_pairs
from tunescout.engine.hashes import HASH_BITS
from tunescout.engine.match import _Looked, _Narrower
from tunescout.engine.params import DEFAULT_MATCH_PARAMS, DEFAULT_PARAMS, MAX_HYPOTHESES, MatchParams
from tunescout.engine.peaks import Role
from tunescout.engine.score import HashIndex, frames_needed, index_hashes, postings_cap, rank_offsets
from tunescout.store.shard import Postings


def test_later_stages_look_up_only_new_hashes_and_get_every_posting() -> None:
    rng = np.random.default_rng(3)
    stored = {  # hash -> its postings (track, offset); some hashes have none
        int(h): [(int(rng.integers(1, 50)), int(rng.integers(0, 5000))) for _ in range(rng.integers(0, 5))]
        for h in rng.integers(0, 1 << 20, 600)
    }
    asked: list[np.ndarray] = []

    def kept(h: int, cap: int) -> list[tuple[int, int]]:  # a hash stored more than `cap` times is dropped
        found = stored.get(h, [])
        return found if len(found) <= cap else []

    def lookup(hashes: np.ndarray, cap: int) -> Postings:
        asked.append(hashes)
        rows = [(i, t, o) for i, h in enumerate(hashes.tolist()) for t, o in kept(h, cap)]
        return Postings(
            hash_index=np.asarray([r[0] for r in rows], np.int32),
            track_id=np.asarray([r[1] for r in rows], np.int64),
            offset=np.asarray([r[2] for r in rows], np.int32),
        )

    looked = _Looked(lookup, cap=3)
    keys = np.asarray(sorted(stored), np.uint32)
    seen: set[int] = set()
    for wanted in (keys[:200], np.union1d(keys[100:300], [7, 9]).astype(np.uint32), keys[::3], keys[:0]):
        got = looked(wanted)
        assert got.hash_index.dtype == np.int32
        found = sorted(
            zip(wanted[got.hash_index].tolist(), got.track_id.tolist(), got.offset.tolist(), strict=True)
        )
        want = sorted((h, t, o) for h in wanted.tolist() for t, o in kept(h, 3))
        assert found == want
        if wanted.size:
            assert not seen & set(asked[-1].tolist()), "a hash was looked up twice"
        seen |= set(wanted.tolist())
    assert sum(a.size for a in asked) == len(seen)


def test_index_hashes_groups_every_row_under_its_hash() -> None:
    rng = np.random.default_rng(5)
    hashes = rng.integers(0, 3000, 5000).astype(np.uint32)  # many repeats
    index = index_hashes(hashes)
    np.testing.assert_array_equal(index.unique, np.unique(hashes))
    assert index.unique.dtype == np.uint32 and index.order.dtype == np.int32
    for i in (0, 17, index.unique.size - 1):
        rows = index.order[index.starts[i] : index.starts[i] + index.counts[i]]
        np.testing.assert_array_equal(rows, np.flatnonzero(hashes == index.unique[i]))  # in row order
    assert index.counts.sum() == hashes.size
    empty = index_hashes(np.empty(0, np.uint32))
    assert empty.unique.size == 0 and empty.counts.size == 0


def _random_query(rng: np.random.Generator, n: int) -> tuple[Fingerprint, HashIndex]:
    """n distinct hashes at sorted offsets over 600 frames, and their index."""
    query = Fingerprint(
        hashes=rng.choice(1 << 30, n, replace=False).astype(np.uint32),
        offsets=np.sort(rng.integers(0, 600, n)).astype(np.int32),
    )
    return query, index_hashes(query.hashes)


def _postings(rows: list[int], tracks: list[int], offsets: list[int]) -> Postings:
    """Postings grouped by hash index, as a lookup returns them."""
    order = np.argsort(rows, kind="stable")
    return Postings(
        hash_index=np.asarray(rows, np.int32)[order],
        track_id=np.asarray(tracks, np.int64)[order],
        offset=np.asarray(offsets, np.int32)[order],
    )


def test_rank_offsets_finds_each_track_offset_up_to_the_largest_track_id() -> None:
    rng = np.random.default_rng(11)
    query, index = _random_query(rng, 60)
    row_of = {int(h): i for i, h in enumerate(query.hashes)}
    big, small = (1 << 31) - 1, 7  # the largest global track id scoring allows, and a small one
    rows, tracks, offsets = [], [], []
    for track, start, share in ((big, 1234, 40), (small, 50, 25)):
        for h in index.unique[:share] if track == big else index.unique[-share:]:
            rows.append(int(np.searchsorted(index.unique, h)))
            tracks.append(track)
            offsets.append(start + int(query.offsets[row_of[int(h)]]))
    found = rank_offsets(query, index, _postings(rows, tracks, offsets), DEFAULT_MATCH_PARAMS, top=5)
    assert [(c.track_id, c.offset_frames, c.matches) for c in found] == [(big, 1234, 40), (small, 50, 25)]


@pytest.mark.parametrize("id_base", [0, (1 << 31) - 3000])  # small ids, and global ids of many shards
def test_min_window_leaves_out_only_tracks_that_could_never_be_reported(id_base: int) -> None:
    rng = np.random.default_rng(5)
    n = 400
    query, index = _random_query(rng, n)
    rows, tracks, offsets = [], [], []
    # track 3: 30 consistent matches; tracks 10..2009: 1-3 chance matches each, at random offsets
    for h in range(30):
        rows.append(h)
        tracks.append(3)
        offsets.append(500 + int(query.offsets[index.order[index.starts[h]]]))
    for track in range(10, 2010):
        for h in rng.integers(0, n, int(rng.integers(1, 4))):
            rows.append(int(h))
            tracks.append(track)
            offsets.append(int(rng.integers(0, 10_000)))
    postings = _postings(rows, [id_base + t for t in tracks], offsets)
    params = DEFAULT_MATCH_PARAMS
    needed = frames_needed(params)
    assert params.min_matches <= needed <= params.confidence_midpoint
    everyone = rank_offsets(query, index, postings, params, top=5)
    kept = rank_offsets(query, index, postings, params, top=5, min_window=needed)
    assert [c.track_id for c in kept] == [id_base + 3] and kept[0] == everyone[0]
    assert len(everyone) == 5, "without the bound, chance tracks fill the list"
    # the bound grows with the catalogue, as the confidence midpoint does
    assert frames_needed(params, stored_hashes=params.calibration_hashes * 64) > needed
    assert frames_needed(params, jittered=True) > needed


def test_postings_cap_grows_with_the_catalogue_between_its_floor_and_ceiling() -> None:
    params = replace(
        DEFAULT_MATCH_PARAMS, posting_cap_floor=50, posting_cap_ratio=280.0, max_postings_per_hash=2000
    )
    assert postings_cap(params) == 50  # unknown size
    assert postings_cap(params, 13_000_000) == 50  # a small catalogue: the floor
    assert postings_cap(params, (1 << HASH_BITS) // 28) == 50  # 280x the average hash is 10: the floor
    assert postings_cap(params, 7_741_000_000) == int(
        280 * 7_741_000_000 / (1 << HASH_BITS)
    )  # ~100,000 tracks
    assert postings_cap(params, 10**12) == 2000  # the ceiling


def test_match_params_refuse_more_hypotheses_than_a_match_key_holds() -> None:
    assert MAX_HYPOTHESES == kernels.MAX_GROUPS

    def grid(n: int) -> tuple[float, ...]:
        return tuple(float(f) for f in np.linspace(0.9, 1.1, n))

    MatchParams(speed_factors=grid(16), tempo_factors=grid(16))
    with pytest.raises(ValueError, match="at most 32"):
        MatchParams(speed_factors=grid(17), tempo_factors=grid(16))


def test_rank_offsets_refuses_rows_without_a_valid_hypothesis() -> None:
    # the kernels index per-hypothesis counts without bounds checks: a bad group must not reach them
    rng = np.random.default_rng(2)
    query, index = _random_query(rng, 20)
    postings = _postings([0, 1], [3, 3], [10, 20])
    two = ((1.0, 1.0), (1.03, 1.0))
    for groups in (np.full(20, 2, np.int8), np.full(20, -1, np.int8), np.zeros(19, np.int8)):
        with pytest.raises(ValueError, match="groups"):
            rank_offsets(query, index, postings, DEFAULT_MATCH_PARAMS, hypotheses=two, groups=groups)
    ones = np.ones(20, np.int8)
    assert rank_offsets(query, index, postings, DEFAULT_MATCH_PARAMS, hypotheses=two, groups=ones)
    negative = Fingerprint(hashes=query.hashes, offsets=query.offsets - 700)
    with pytest.raises(ValueError, match=">= 0"):
        rank_offsets(negative, index, postings, DEFAULT_MATCH_PARAMS)


def test_long_clips_hash_their_hypotheses_with_fewer_targets_per_anchor() -> None:
    """The hypotheses' fan-out is the largest whose triplets fit the budget, counted exactly as formed."""
    rng = np.random.default_rng(4)
    sr = DEFAULT_PARAMS.sample_rate_hz
    params = DEFAULT_MATCH_PARAMS
    formed = {}
    for seconds in (3, 10, 30):
        peaks = extract_peaks(
            [0.1 * rng.standard_normal(seconds * sr).astype(np.float32)], DEFAULT_PARAMS, Role.QUERY
        )
        narrow = _Narrower(peaks, DEFAULT_PARAMS, query_pairs(peaks, DEFAULT_PARAMS))
        sizes = {f: narrow.landmarks(f)[1].anchor.size for f in range(2, DEFAULT_PARAMS.query_fan_out + 1)}
        for budget in (0, sizes[4], sizes[6] - 1, sizes[6], sizes[8], 10**9):
            chosen = narrow.fan_out_within(8, budget, 4)
            fitting = [f for f in range(4, 9) if sizes[f] <= budget]
            assert chosen == (max(fitting) if fitting else 4), (seconds, budget)
        formed[seconds] = narrow.fan_out_within(
            params.hypothesis_fan_out, params.hypothesis_max_triplets, params.hypothesis_min_fan_out
        )
    assert formed[3] == params.hypothesis_fan_out  # short clips keep every target they may use
    assert formed[3] >= formed[10] >= formed[30] >= params.hypothesis_min_fan_out
    assert formed[30] < formed[3]


def test_match_params_refuse_a_minimum_fan_out_that_forms_no_triplet() -> None:
    MatchParams(hypothesis_fan_out=8, hypothesis_min_fan_out=8)
    for bad in (1, 9):
        with pytest.raises(ValueError, match="hypothesis_min_fan_out"):
            MatchParams(hypothesis_fan_out=8, hypothesis_min_fan_out=bad)


def test_match_params_refuse_a_negative_screen() -> None:
    MatchParams(hypothesis_screen_keep=0)  # no screen: every hypothesis hashed in full
    with pytest.raises(ValueError, match="hypothesis_screen_keep"):
        MatchParams(hypothesis_screen_keep=-1)
    with pytest.raises(ValueError, match="hypothesis_screen_triplets"):
        MatchParams(hypothesis_screen_triplets=0)


def test_match_params_refuse_a_rival_share_of_zero() -> None:
    MatchParams(early_exit_rival_share=float("inf"))  # never contested: the plain answer always ends it
    for bad in (0.0, -0.5):
        with pytest.raises(ValueError, match="early_exit_rival_share"):
            MatchParams(early_exit_rival_share=bad)
