"""Segment format round trips, version refusal, and every kernel against its NumPy reference."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from tests.store.v1_segments import encode_v1
from tunescout.engine.errors import StoreError, StoreFormatError
from tunescout.store import segments as seg
from tunescout.store.segments import (
    Segment,
    SegmentLayout,
    choose_dir_bits,
    encode_segment,
    merge_segments,
    write_segment_file,
)

FV = 7


def random_rows(
    rng: np.random.Generator, n: int, hash_bits: int, value_max: int = 1 << 32
) -> tuple[np.ndarray, np.ndarray]:
    """n sorted unique (hash, value) rows with hashes below 2**hash_bits."""
    hashes = rng.integers(0, 1 << hash_bits, n, dtype=np.uint64)
    values = rng.integers(0, value_max, n, dtype=np.uint64)
    keys = np.unique((hashes << np.uint64(32)) | values)
    return (keys >> np.uint64(32)).astype(np.uint32), keys.astype(np.uint32)


def full_hashes(segment: Segment) -> np.ndarray:
    return seg.decode_hashes_reference(segment.directory, segment.low_words, segment.layout.low_bits)


def packed(values: np.ndarray, value_min: int = 0) -> tuple[np.ndarray, int, int]:
    """values packed as a segment packs them: (words, value_bits, value_min)."""
    bits = seg.value_span(value_min, int(values.max(initial=value_min)))
    return seg.pack_fields_reference(values, value_min, bits), bits, value_min


# (hash_bits, dir_bits) pairs that reach 32, 17, 16, 8, 1 and 0 low bits, and directories of all sizes
LAYOUT_CASES = [
    (32, 0),
    (32, 4),
    (32, 15),
    (32, 16),
    (32, 17),
    (26, 18),
    (22, 0),
    (22, 6),
    (22, 13),
    (22, 14),
    (22, 21),
    (22, 22),
    (8, 8),
    (1, 0),
]


@pytest.mark.parametrize(("hash_bits", "dir_bits"), LAYOUT_CASES)
@pytest.mark.parametrize(("value_min", "value_span"), [(0, 1 << 32), (123_456, 1 << 14), (7, 1), (0, 3)])
def test_round_trip_every_layout(
    tmp_path: Path, hash_bits: int, dir_bits: int, value_min: int, value_span: int
) -> None:
    rng = np.random.default_rng(hash_bits * 100 + dir_bits)
    hashes, values = random_rows(rng, 3000, hash_bits, value_max=value_span)
    values = values + np.uint32(value_min)
    layout = SegmentLayout(len(hashes), hash_bits, dir_bits, int(values.min()), int(values.max()))
    assert layout.value_bits == (int(values.max()) - int(values.min())).bit_length()
    assert layout.low_nbytes == 4 * max(2, -(-len(hashes) * layout.low_bits // 32) + 1)

    blob = encode_segment(hashes, values, fingerprint_version=FV, hash_bits=hash_bits, dir_bits=dir_bits)
    path = tmp_path / "x.tsseg"
    write_segment_file(path, hashes, values, fingerprint_version=FV, hash_bits=hash_bits, dir_bits=dir_bits)
    assert path.read_bytes() == blob, "chunked file writer and in-memory encoder must agree byte for byte"
    assert len(blob) == layout.total_nbytes

    for segment in (
        Segment.from_bytes(blob, source="blob", expected_fingerprint_version=FV),
        Segment.open_file(path, expected_fingerprint_version=FV),
    ):
        segment.verify()
        assert segment.layout == layout
        assert segment.fingerprint_version == FV
        np.testing.assert_array_equal(full_hashes(segment), hashes)
        np.testing.assert_array_equal(segment.hashes(), hashes)
        n = len(hashes)
        np.testing.assert_array_equal(segment.hashes(n // 30, 2 * n // 3), hashes[n // 30 : 2 * n // 3])
        np.testing.assert_array_equal(segment.values(), values)
        np.testing.assert_array_equal(segment.values(n // 3, n - 1), values[n // 3 : n - 1])
        with pytest.raises(IndexError):
            segment.hashes(0, n + 1)
        assert not segment.value_words.flags.writeable and not segment.low_words.flags.writeable


def test_chunked_writer_matches_single_write(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    hashes, values = random_rows(rng, 20_000, 22)
    blob = encode_segment(hashes, values, fingerprint_version=FV)
    path = tmp_path / "chunked.tsseg"
    value_range = (int(values.min()), int(values.max()))
    with seg.SegmentFile(
        path, len(hashes), seg.hash_bits_of(int(hashes[-1])), FV, value_range=value_range
    ) as out:
        for lo in range(0, len(hashes), 777):
            out.append(hashes[lo : lo + 777], values[lo : lo + 777])
        out.finish()
    assert path.read_bytes() == blob


@pytest.mark.parametrize("bits", [0, 1, 5, 13, 22, 31, 32])
def test_packed_sections_match_reference_whatever_the_chunks(bits: int) -> None:
    rng = np.random.default_rng(bits)
    fields = rng.integers(0, 1 << bits, 2000, dtype=np.uint64).astype(np.uint32) + np.uint32(
        3 if bits < 32 else 0
    )
    minus = 3 if bits < 32 else 0
    reference = seg.pack_fields_reference(fields, minus, bits)
    sink = seg._MemorySink(reference.shape[0] * 4)
    section = seg._PackedSection(sink, 0, bits, reference.shape[0])
    for lo in range(0, 2000, 333):  # chunks that end inside a word
        section.append(fields[lo : lo + 333], minus)
    section.finish()
    words = np.frombuffer(bytes(sink.buffer), np.uint32)
    np.testing.assert_array_equal(words, reference)
    np.testing.assert_array_equal(seg.unpack_fields_reference(words, bits, minus, 2000), fields)
    out = np.empty(1500, np.uint32)
    seg.unpack_fields(words, bits, minus, 250, 1750, out)
    np.testing.assert_array_equal(out, fields[250:1750])


def test_writer_refuses_values_outside_the_announced_range() -> None:
    sink = seg._MemorySink(SegmentLayout(2, 8, 4, 10, 20).total_nbytes)
    writer = seg.SegmentWriter(sink, 2, 8, FV, dir_bits=4, value_range=(10, 20))
    with pytest.raises(ValueError, match="outside the announced range"):
        writer.append(np.array([1, 2], np.uint32), np.array([10, 21], np.uint32))


def test_writer_refuses_unsorted_or_wrong_count(tmp_path: Path) -> None:
    hashes = np.array([5, 3], np.uint32)
    values = np.array([1, 1], np.uint32)
    with pytest.raises(ValueError, match="strictly increasing"):
        encode_segment(hashes, values, fingerprint_version=FV, hash_bits=8)
    with pytest.raises(ValueError, match="strictly increasing"):  # a repeated row
        encode_segment(np.array([3, 3], np.uint32), values, fingerprint_version=FV)
    path = tmp_path / "short.tsseg.tmp"
    with pytest.raises(ValueError, match="announced"), seg.SegmentFile(path, 5, 8, FV) as out:
        out.append(np.array([1, 2], np.uint32), values)
        out.finish()
    assert not path.exists(), "a failed write removes its partial file"


def test_empty_segment(tmp_path: Path) -> None:
    empty = np.empty(0, np.uint32)
    segment = Segment.from_bytes(encode_segment(empty, empty, fingerprint_version=FV), source="empty")
    assert segment.n_rows == 0
    starts, ends = segment.find_ranges(np.array([0, 7], np.uint32))
    assert (starts == ends).all()


@pytest.mark.parametrize(
    "n_rows", [0, 1, 10, 1000, 100_000, 4_000_000, 67_000_000, 100_000_000, 5_000_000_000]
)
@pytest.mark.parametrize("hash_bits", [22, 32])
def test_choose_dir_bits_is_near_smallest(n_rows: int, hash_bits: int) -> None:
    value_max = (1 << 22) - 1  # a shard of ~165 tracks spans 22 bits of frame addresses
    chosen = SegmentLayout.for_rows(n_rows, hash_bits, 0, value_max)
    sizes = [
        SegmentLayout(n_rows, hash_bits, d, 0, value_max).total_nbytes for d in range(min(hash_bits, 24) + 1)
    ]
    # within the 1 % allowance spent on extra directory bits, never worse than that
    assert chosen.total_nbytes <= min(sizes) * 1.01 + 64
    assert chosen.dir_bits == choose_dir_bits(n_rows, hash_bits, 22)
    if n_rows >= 1_000_000:
        bytes_per_posting = chosen.total_nbytes / n_rows
        assert bytes_per_posting <= (3.7 if hash_bits == 22 else 4.8)  # byte-aligned v1: 5.3 / 6.3
    if n_rows >= 1 << 32:
        assert chosen.dir_dtype == np.uint64


def test_reader_refuses_other_format_version(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    blob = bytearray(encode_segment(*random_rows(rng, 100, 32), fingerprint_version=FV))
    struct.pack_into("<I", blob, 8, seg.SEGMENT_FORMAT_VERSION + 1)
    with pytest.raises(StoreFormatError, match=r"format version 3; this tunescout reads version 2"):
        Segment.from_bytes(bytes(blob), source="bumped")
    path = tmp_path / "bumped.tsseg"
    path.write_bytes(bytes(blob))
    with pytest.raises(StoreFormatError, match=r"bumped\.tsseg"):
        Segment.open_file(path)


def test_reader_refuses_bad_magic_and_fingerprint_version() -> None:
    rng = np.random.default_rng(3)
    blob = encode_segment(*random_rows(rng, 100, 32), fingerprint_version=FV)
    with pytest.raises(StoreFormatError, match="not a tunescout segment"):
        Segment.from_bytes(b"PK\x03\x04" + blob[4:], source="zip")
    with pytest.raises(StoreFormatError, match="fingerprints of version 7"):
        Segment.from_bytes(blob, source="x", expected_fingerprint_version=8)


def test_reader_detects_damage(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    blob = encode_segment(*random_rows(rng, 1000, 32), fingerprint_version=FV)
    header_flip = bytearray(blob)
    header_flip[16] ^= 1  # n_rows
    with pytest.raises(StoreError, match="header checksum"):
        Segment.from_bytes(bytes(header_flip), source="x")
    value_flip = bytearray(blob)
    value_flip[-3] ^= 0x40
    damaged = Segment.from_bytes(bytes(value_flip), source="x")
    with pytest.raises(StoreError, match="section checksum"):
        damaged.verify()
    path = tmp_path / "short.tsseg"
    path.write_bytes(blob[:-8])
    with pytest.raises(StoreError, match="damaged"):
        Segment.open_file(path)


# -- kernels vs references -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hash_bits", "dir_bits"), [(32, 0), (32, 10), (32, 16), (22, 14), (22, 22), (12, 6)]
)
def test_find_ranges_matches_reference(hash_bits: int, dir_bits: int) -> None:
    rng = np.random.default_rng(hash_bits + dir_bits)
    hashes, values = random_rows(rng, 5000, hash_bits, value_max=50)  # many rows per hash
    segment = Segment.from_bytes(
        encode_segment(hashes, values, fingerprint_version=FV, hash_bits=hash_bits, dir_bits=dir_bits),
        source="x",
    )
    present = rng.choice(hashes, 300)
    absent = rng.integers(0, 1 << 32, 300, dtype=np.uint64).astype(np.uint32)  # many above hash_bits
    queries = np.unique(
        np.concatenate([present, absent, [0, hashes[0], hashes[-1], 0xFFFFFFFF]]).astype(np.uint32)
    )
    ref_starts, ref_ends = seg.find_ranges_reference(
        segment.directory, segment.low_words, segment.layout.low_bits, queries
    )
    for touch in (False, True):  # the one-pass and the batched (large segment) variants
        starts, ends = np.empty(queries.shape[0], np.int64), np.empty(queries.shape[0], np.int64)
        layout = segment.layout
        seg.find_ranges(
            segment.directory,
            segment.low_words,
            layout.low_bits,
            layout.hash_bits,
            queries,
            starts,
            ends,
            touch,
        )
        np.testing.assert_array_equal(starts, ref_starts)
        np.testing.assert_array_equal(ends, ref_ends)
    assert (ends - starts)[np.isin(queries, hashes)].min() >= 1


@pytest.mark.parametrize(("value_min", "value_span"), [(0, 1 << 32), (5_000_000, 1 << 22), (9, 1)])
def test_gather_values_matches_reference(value_min: int, value_span: int) -> None:
    rng = np.random.default_rng(5)
    values = (rng.integers(0, value_span, 1000, dtype=np.uint64) + value_min).astype(np.uint32)
    words, bits, vmin = packed(values, value_min)
    starts = rng.integers(0, 1000, 50)
    ends = np.minimum(starts + rng.integers(0, 30, 50), 1000)
    keep = rng.random(50) < 0.7
    counts = np.where(keep, ends - starts, 0)
    write_pos = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    expected = seg.gather_values_reference(words, bits, vmin, starts, ends, keep)
    np.testing.assert_array_equal(
        np.concatenate(expected),
        np.concatenate([values[a:b] for a, b in zip(starts[keep], ends[keep], strict=True)]),
    )
    for touch in (False, True):
        out = np.empty(int(counts.sum()), np.uint32)
        seg.gather_values(words, bits, vmin, starts, ends, keep, write_pos.copy(), out, touch)
        np.testing.assert_array_equal(out, np.concatenate(expected))


def test_count_live_postings_matches_reference() -> None:
    rng = np.random.default_rng(6)
    bases = np.arange(0, 100_000, 1000, dtype=np.uint32)
    live = rng.random(bases.shape[0]) < 0.6
    values = rng.integers(0, 100_000, 5000, dtype=np.uint32)
    starts = np.sort(rng.integers(0, 5000, 40))
    ends = np.minimum(starts + rng.integers(0, 400, 40), 5000)
    query_rows = np.flatnonzero(rng.random(40) < 0.5).astype(np.int64)
    words, bits, vmin = packed(values)
    exact = seg.count_live_postings_reference(words, bits, vmin, starts, ends, query_rows, bases, live)
    for limit in (10, 100, 10_000):
        counts = np.zeros(query_rows.shape[0], np.int64)
        seg.count_live_postings(words, bits, vmin, starts, ends, query_rows, bases, live, limit, counts)
        np.testing.assert_array_equal(counts, np.minimum(exact, limit + 1))  # stops just past the limit


def test_count_in_intervals_matches_reference() -> None:
    rng = np.random.default_rng(7)
    values = rng.integers(17, 1 << 20, 10_000, dtype=np.uint32)
    starts = np.sort(rng.choice(np.arange(0, 1 << 20, 5000), 30, replace=False)).astype(np.uint32)
    ends = (starts + rng.integers(1, 5000, 30)).astype(np.uint32)
    words, bits, vmin = packed(values, 17)
    n = values.shape[0]
    assert seg.count_in_intervals(words, bits, vmin, n, starts, ends) == seg.count_in_intervals_reference(
        values, starts, ends
    )
    assert seg.count_in_intervals(words, bits, vmin, n, starts[:0], ends[:0]) == 0


@pytest.mark.parametrize("n_runs", [1, 2, 5, 33])
def test_merge_runs_matches_reference(n_runs: int) -> None:
    rng = np.random.default_rng(n_runs)
    hashes, values = random_rows(rng, 20_000, 16, value_max=1 << 20)
    owner = rng.integers(0, n_runs, hashes.shape[0])  # split the sorted rows into sorted runs
    order = np.argsort(owner, kind="stable")
    run_bounds = np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=n_runs))]).astype(np.int64)
    run_h, run_v = hashes[order], values[order]
    dead_starts = np.array([1000, 300_000, 900_000], np.uint32)
    dead_ends = np.array([5000, 400_000, 900_001], np.uint32)
    for ds, de in ((dead_starts, dead_ends), (dead_starts[:0], dead_ends[:0])):
        out_h = np.empty_like(run_h)
        out_v = np.empty_like(run_v)
        n = seg.merge_runs(run_h, run_v, run_bounds, ds, de, out_h, out_v)
        reference = seg.merge_runs_reference(run_h, run_v, ds, de)
        assert reference is not None
        np.testing.assert_array_equal(out_h[:n], reference[0])
        np.testing.assert_array_equal(out_v[:n], reference[1])


def test_merge_runs_detects_shared_row() -> None:
    hashes = np.array([1, 2, 2, 3], np.uint32)
    values = np.array([0, 9, 9, 0], np.uint32)
    bounds = np.array([0, 2, 4], np.int64)
    none = np.empty(0, np.uint32)
    out = np.empty(4, np.uint32)
    assert seg.merge_runs(hashes, values, bounds, none, none, out, out.copy()) == -1
    assert seg.merge_runs_reference(hashes, values, none, none) is None


def test_decode_hashes_partial_ranges_match_reference() -> None:
    rng = np.random.default_rng(8)
    hashes, values = random_rows(rng, 3000, 32)
    segment = Segment.from_bytes(
        encode_segment(hashes, values, fingerprint_version=FV, dir_bits=12), source="x"
    )
    for a, b in ((0, 1), (17, 2500), (2999, 3000), (5, 5)):
        out = np.empty(b - a, np.uint32)
        seg.decode_hashes(segment.directory, segment.low_words, segment.layout.low_bits, a, b, out)
        np.testing.assert_array_equal(out, full_hashes(segment)[a:b])


def test_merge_segments_matches_reference(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    inputs = []
    all_h, all_v = [], []
    for i, (hash_bits, dir_bits) in enumerate([(22, 14), (22, 6), (20, 0), (22, 22), (12, 12)]):
        h, v = random_rows(rng, 4000, hash_bits, value_max=1 << 24)
        v = (v & np.uint32(0xFFFFF8)) | np.uint32(i)  # disjoint values across inputs, as in a shard
        keys = np.unique((h.astype(np.uint64) << np.uint64(32)) | v)
        h, v = (keys >> np.uint64(32)).astype(np.uint32), keys.astype(np.uint32)
        blob = encode_segment(h, v, fingerprint_version=FV, hash_bits=hash_bits, dir_bits=dir_bits)
        inputs.append(Segment.from_bytes(blob, source=f"in{i}"))
        all_h.append(h)
        all_v.append(v)
    dead_starts = np.array([0, 1 << 22], np.uint32)
    dead_ends = np.array([1 << 20, (1 << 22) + (1 << 21)], np.uint32)
    path = tmp_path / "merged.tsseg"
    layout = merge_segments(
        inputs, path, fingerprint_version=FV, dead_starts=dead_starts, dead_ends=dead_ends, chunk_rows=1000
    )
    assert layout is not None
    merged = Segment.open_file(path, expected_fingerprint_version=FV)
    merged.verify()
    reference = seg.merge_runs_reference(np.concatenate(all_h), np.concatenate(all_v), dead_starts, dead_ends)
    assert reference is not None
    np.testing.assert_array_equal(merged.hashes(), reference[0])
    np.testing.assert_array_equal(merged.values(), reference[1])
    assert merged.layout.hash_bits == 22

    everything_dead = merge_segments(
        inputs,
        tmp_path / "none.tsseg",
        fingerprint_version=FV,
        dead_starts=np.array([0], np.uint32),
        dead_ends=np.array([0xFFFFFFFF], np.uint32),
    )
    assert everything_dead is None
    assert not (tmp_path / "none.tsseg").exists()


def test_merge_segments_refuses_damaged_input(tmp_path: Path) -> None:
    rng = np.random.default_rng(10)
    blob = bytearray(encode_segment(*random_rows(rng, 1000, 22), fingerprint_version=FV))
    blob[-1] ^= 1
    damaged = Segment.from_bytes(bytes(blob), source="damaged-input")
    none = np.empty(0, np.uint32)
    with pytest.raises(StoreError, match="damaged-input"):
        merge_segments(
            [damaged], tmp_path / "m.tsseg", fingerprint_version=FV, dead_starts=none, dead_ends=none
        )
    assert not (tmp_path / "m.tsseg").exists()


@pytest.mark.parametrize("spread", ["clustered", "one_value_per_bucket_end"])
def test_find_ranges_from_a_guess_matches_reference_in_crowded_uneven_buckets(spread: str) -> None:
    """Buckets of more than INTERPOLATE_ROWS rows are searched from an interpolated guess: rows bunched
    far from where even spreading puts them (clusters, or every row at the bucket's top or bottom) make
    the search gallop a long way in both directions."""
    rng = np.random.default_rng(5)
    dir_bits, low_bits = 6, 16  # 22-bit hashes: 64 buckets of ~300 rows
    prefixes = rng.integers(0, 1 << dir_bits, 20_000)
    if spread == "clustered":
        centres = rng.integers(0, 1 << low_bits, (1 << dir_bits, 3))
        lows = centres[prefixes, rng.integers(0, 3, prefixes.size)] + rng.integers(-40, 40, prefixes.size)
    else:
        lows = np.where(
            rng.random(prefixes.size) < 0.5, rng.integers(0, 8, prefixes.size), (1 << low_bits) - 1
        )
    lows = np.clip(lows, 0, (1 << low_bits) - 1)
    hashes = np.sort(((prefixes << low_bits) | lows).astype(np.uint32))
    values = np.arange(hashes.size, dtype=np.uint32)
    segment = Segment.from_bytes(
        encode_segment(hashes, values, fingerprint_version=FV, hash_bits=22, dir_bits=dir_bits), source="x"
    )
    assert segment.layout.low_bits == low_bits
    assert np.diff(segment.directory.astype(np.int64)).min() > seg.INTERPOLATE_ROWS
    queries = np.unique(
        np.concatenate(
            [hashes[::7], rng.integers(0, 1 << 22, 3000), hashes + 1, hashes - 1, [0, (1 << 22) - 1]]
        ).astype(np.uint32)
    )
    ref_starts, ref_ends = seg.find_ranges_reference(segment.directory, segment.low_words, low_bits, queries)
    starts, ends = np.empty(queries.shape[0], np.int64), np.empty(queries.shape[0], np.int64)
    seg.find_ranges(segment.directory, segment.low_words, low_bits, 22, queries, starts, ends, True)
    np.testing.assert_array_equal(starts, ref_starts)
    np.testing.assert_array_equal(ends, ref_ends)
    assert (ends - starts).max() > 1  # some hashes stored more than once


def test_kernels_accept_a_uint64_directory() -> None:
    """Segments of 2**32 rows or more use a uint64 directory: too big to build here, so feed one directly."""
    rng = np.random.default_rng(11)
    hashes, values = random_rows(rng, 2000, 22)
    segment = Segment.from_bytes(
        encode_segment(hashes, values, fingerprint_version=FV, dir_bits=8), source="x"
    )
    wide = segment.directory.astype(np.uint64)
    low_bits = segment.layout.low_bits
    queries = np.unique(np.concatenate([hashes[::7], np.array([0, 1 << 30], np.uint32)]))
    starts, ends = np.empty(queries.shape[0], np.int64), np.empty(queries.shape[0], np.int64)
    for touch in (False, True):
        seg.find_ranges(wide, segment.low_words, low_bits, 22, queries, starts, ends, touch)
        np.testing.assert_array_equal((starts, ends), segment.find_ranges(queries))
    out = np.empty(1500, np.uint32)
    seg.decode_hashes(wide, segment.low_words, low_bits, 300, 1800, out)
    np.testing.assert_array_equal(out, hashes[300:1800])


def test_merge_runs_with_empty_runs() -> None:
    hashes = np.array([1, 4, 2, 3], np.uint32)
    values = np.array([0, 0, 0, 0], np.uint32)
    bounds = np.array([0, 0, 2, 2, 4, 4], np.int64)  # empty runs first, between and last
    none = np.empty(0, np.uint32)
    out_h, out_v = np.empty(4, np.uint32), np.empty(4, np.uint32)
    assert seg.merge_runs(hashes, values, bounds, none, none, out_h, out_v) == 4
    np.testing.assert_array_equal(out_h, [1, 2, 3, 4])
    empty = np.empty(0, np.uint32)
    assert seg.merge_runs(empty, empty, np.array([0], np.int64), none, none, out_h, out_v) == 0


def test_dense_dir_bits_gives_about_one_row_per_bucket() -> None:
    for n_rows in (1, 2, 100, 14_400, 1_000_000):
        d = seg.dense_dir_bits(n_rows, 22)
        assert n_rows / 2 < (1 << d) <= max(1, n_rows)
    assert seg.dense_dir_bits(1_000_000, 12) == 12  # never more bits than the hashes have


def test_locate_tracks_matches_reference() -> None:
    rng = np.random.default_rng(12)
    lengths = rng.integers(1, 5000, 300)  # tracks both shorter and longer than a block
    lengths[::17] = 1
    bases = np.concatenate([[0], np.cumsum(lengths + 16)[:-1]]).astype(np.uint32)
    ends = bases.astype(np.int64) + lengths
    block_bits = 10
    n_blocks = int((ends[-1] - 1) >> block_bits) + 1
    first_frames = np.arange(n_blocks, dtype=np.int64) << block_bits
    block_first = (np.searchsorted(bases, first_frames, side="right") - 1).astype(np.int32)
    track = rng.integers(0, 300, 20_000)
    values = (bases[track] + rng.integers(0, lengths[track])).astype(np.uint32)
    index = np.empty(values.shape[0], np.int64)
    offset = np.empty(values.shape[0], np.int32)
    seg.locate_tracks(values, bases, block_first, block_bits, index, offset)
    ref_index, ref_offset = seg.locate_tracks_reference(values, bases)
    np.testing.assert_array_equal(index, ref_index)
    np.testing.assert_array_equal(offset, ref_offset)
    np.testing.assert_array_equal(index, track)


def test_gather_values_refuses_to_write_outside_out() -> None:
    words, bits, vmin = packed(np.arange(10, dtype=np.uint32))
    starts, ends = np.array([0, 5], np.int64), np.array([5, 10], np.int64)
    keep = np.array([True, True])
    out = np.empty(9, np.uint32)  # one too short: a caller bug must raise, not corrupt memory
    with pytest.raises(IndexError):
        seg.gather_values(words, bits, vmin, starts, ends, keep, np.array([0, 5], np.int64), out, False)
    far = np.array([0, 5], np.int64), np.array([5, 1000], np.int64)  # rows past the section's words
    with pytest.raises(IndexError):
        seg.gather_values(
            words, bits, vmin, *far, keep, np.array([0, 5], np.int64), np.empty(1000, np.uint32), False
        )


def test_merge_in_memory_matches_reference() -> None:
    rng = np.random.default_rng(13)
    inputs, all_h, all_v = [], [], []
    for i in range(5):
        h, v = random_rows(rng, 3000, 22, value_max=1 << 20)
        v = (v & np.uint32(0xFFFF8)) | np.uint32(i)  # disjoint values across inputs, as in a shard
        keys = np.unique((h.astype(np.uint64) << np.uint64(32)) | v)
        h, v = (keys >> np.uint64(32)).astype(np.uint32), keys.astype(np.uint32)
        inputs.append(Segment.from_bytes(encode_segment(h, v, fingerprint_version=FV), source=f"in{i}"))
        all_h.append(h)
        all_v.append(v)
    dead_starts, dead_ends = np.array([1000], np.uint32), np.array([300_000], np.uint32)
    merged = Segment.from_bytes(
        seg.merge_in_memory(inputs, fingerprint_version=FV, dead_starts=dead_starts, dead_ends=dead_ends),
        source="run",
    )
    reference = seg.merge_runs_reference(np.concatenate(all_h), np.concatenate(all_v), dead_starts, dead_ends)
    assert reference is not None
    np.testing.assert_array_equal(merged.hashes(), reference[0])
    np.testing.assert_array_equal(merged.values(), reference[1])
    assert merged.layout.dir_bits == seg.dense_dir_bits(merged.n_rows, 22)
    empty = seg.merge_in_memory([], fingerprint_version=FV, dead_starts=dead_starts, dead_ends=dead_ends)
    assert Segment.from_bytes(empty, source="empty").n_rows == 0


@pytest.mark.parametrize(("hash_bits", "dir_bits"), [(32, 10), (32, 20), (22, 22), (22, 4)])
def test_version_1_segments_are_upgraded_row_for_row(tmp_path: Path, hash_bits: int, dir_bits: int) -> None:
    rng = np.random.default_rng(hash_bits + dir_bits)
    hashes, values = random_rows(rng, 5000, hash_bits, value_max=1 << 25)
    old = encode_v1(hashes, values, FV, hash_bits, dir_bits)
    assert seg.format_version_of(old) == 1
    with pytest.raises(StoreFormatError, match="version 1; this tunescout reads version 2"):
        Segment.from_bytes(old, source="old")
    upgraded = Segment.from_bytes(seg.upgrade_v1_bytes(old, source="old"), source="new")
    path = tmp_path / "old.tsseg"
    path.write_bytes(old)
    seg.upgrade_v1_file(path)
    assert [p.name for p in tmp_path.iterdir()] == ["old.tsseg"]
    for segment in (upgraded, Segment.open_file(path, expected_fingerprint_version=FV)):
        segment.verify()
        np.testing.assert_array_equal(segment.hashes(), hashes)
        np.testing.assert_array_equal(segment.values(), values)
    damaged = bytearray(old)
    damaged[-2] ^= 1
    with pytest.raises(StoreError, match="damaged"):
        seg.upgrade_v1_bytes(bytes(damaged), source="damaged")
