"""Chunk geometry, the incremental ChunkStream and the incremental overlap-add Stitcher."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import numpy as np
import pytest
import torch

from mss_jobs.core.chunking import ChunkPlan, ChunkStream, PaddingMode, Stitcher
from mss_jobs.core.spectral import overlap_add_window
from mss_jobs.errors import ConfigError
from mss_jobs.types import SeparatedChunkedTensor, WindowTensor


def _audio(channels: int, samples: int, *, seed: int = 0) -> torch.Tensor:
    return torch.randn(channels, samples, generator=torch.Generator().manual_seed(seed))


def _blocks(audio: torch.Tensor, sizes: Sequence[int]) -> Iterator[torch.Tensor]:
    start, cycle = 0, itertools.cycle(sizes)
    while start < audio.shape[-1]:
        size = next(cycle)
        yield audio[:, start : start + size]
        start += size


def _run_stream(
    audio: torch.Tensor,
    plan: ChunkPlan,
    *,
    batch_size: int,
    block_sizes: Sequence[int],
    padding_mode: PaddingMode = "reflect",
) -> tuple[list[torch.Tensor], int]:
    """All batches a ChunkStream emits for `audio`, and how many came before finish()."""
    stream = ChunkStream(
        plan, channels=audio.shape[0], batch_size=batch_size, padding_mode=padding_mode
    )
    batches = [b for block in _blocks(audio, block_sizes) for b in stream.push(block)]
    before_finish = len(batches)
    batches.extend(stream.finish())
    return batches, before_finish


def _expected_chunks(padded: np.ndarray, plan: ChunkPlan, count: int) -> torch.Tensor:
    """Chunk k = padded[:, k·H : k·H + C], with silence after the padded track."""
    needed = (count - 1) * plan.hop_size + plan.chunk_size
    channels = padded.shape[0]
    extended = np.zeros((channels, max(needed, padded.shape[1])), dtype=np.float32)
    extended[:, : padded.shape[1]] = padded
    return torch.from_numpy(
        np.stack(
            [
                extended[:, k * plan.hop_size : k * plan.hop_size + plan.chunk_size]
                for k in range(count)
            ]
        )
    )


# --- ChunkPlan --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chunk", "overlap", "hop"),
    [
        (100, 0.0, 100),
        (100, 0.25, 75),
        (100, 0.5, 50),
        (100, 0.75, 25),
        (100, 0.9, 10),
        (8820, 0.5, 4410),
        (7, 0.5, 4),  # round(3.5) is 4 (banker's rounding)
        (9, 0.5, 4),  # round(4.5) is 4
        (1, 0.0, 1),
        (1, 0.9, 1),  # round(0.1) = 0, raised to the minimum of 1
        (10, 0.99, 1),
    ],
)
def test_hop_is_rounded_and_at_least_one(chunk: int, overlap: float, hop: int) -> None:
    plan = ChunkPlan.from_overlap(chunk, overlap)
    assert plan.hop_size == hop == max(1, round(chunk * (1 - overlap)))
    assert plan.padding == chunk - hop
    assert plan.chunk_start(0) == -plan.padding
    assert plan.chunk_start(3) == 3 * hop - plan.padding


@pytest.mark.parametrize("overlap", [-0.1, 1.0, 1.5])
def test_overlap_outside_unit_interval_is_a_config_error(overlap: float) -> None:
    with pytest.raises(ConfigError, match="overlap"):
        ChunkPlan.from_overlap(100, overlap)


def test_invalid_geometry_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="chunk_size=0"):
        ChunkPlan.from_overlap(0, 0.5)
    with pytest.raises(ConfigError, match="hop_size=11"):
        ChunkPlan(chunk_size=10, hop_size=11)
    with pytest.raises(ConfigError, match="hop_size=0"):
        ChunkPlan(chunk_size=10, hop_size=0)
    with pytest.raises(ValueError, match="samples=0"):
        ChunkPlan(chunk_size=10, hop_size=5).num_chunks(0)


def test_num_chunks_formula_covers_the_track() -> None:
    for chunk, hop, length in itertools.product(
        [1, 5, 64], [1, 2, 5, 64], [1, 2, 63, 64, 65, 1000]
    ):
        if hop > chunk:
            continue
        plan = ChunkPlan(chunk_size=chunk, hop_size=hop)
        n = plan.num_chunks(length)
        # the last chunk starts inside the track, the one after it would not
        assert plan.chunk_start(n - 1) < length <= plan.chunk_start(n)
        # and every track sample is covered
        assert plan.chunk_start(n - 1) + chunk >= length


# --- ChunkStream: count and shape -------------------------------------------------------------


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.75, 0.9])
@pytest.mark.parametrize("padding_mode", ["reflect", "constant"])
def test_stream_emits_num_chunks_full_batches_of_the_right_shape(
    overlap: float, padding_mode: PaddingMode
) -> None:
    plan = ChunkPlan.from_overlap(64, overlap)
    for length, batch_size, block_sizes in itertools.product(
        [1, 20, 63, 64, 65, 700], [1, 3, 8], [[1], [17], [50, 3, 200], [100_000]]
    ):
        audio = _audio(2, length, seed=length)
        batches, _ = _run_stream(
            audio, plan, batch_size=batch_size, block_sizes=block_sizes, padding_mode=padding_mode
        )
        counts = [b.shape[0] for b in batches]
        assert sum(counts) == plan.num_chunks(length), (length, batch_size, block_sizes)
        assert all(c == batch_size for c in counts[:-1])
        assert 1 <= counts[-1] <= batch_size
        for batch in batches:
            assert batch.shape[1:] == (2, 64)
            assert batch.dtype == torch.float32


def test_stream_emits_chunks_before_the_track_ends() -> None:
    plan = ChunkPlan.from_overlap(100, 0.5)
    audio = _audio(1, 10_000)
    batches, before_finish = _run_stream(audio, plan, batch_size=2, block_sizes=[333])
    # every chunk that lies inside the track (k·H + H <= L) comes out while it is arriving
    assert sum(b.shape[0] for b in batches[:before_finish]) == 10_000 // 50 == 200
    assert sum(b.shape[0] for b in batches[before_finish:]) == plan.num_chunks(10_000) - 200


def test_stream_rejects_misuse() -> None:
    plan = ChunkPlan.from_overlap(16, 0.5)
    with pytest.raises(ConfigError, match="batch_size=0"):
        ChunkStream(plan, channels=2, batch_size=0)
    with pytest.raises(ConfigError, match="channels=0"):
        ChunkStream(plan, channels=0, batch_size=1)
    stream = ChunkStream(plan, channels=2, batch_size=1)
    with pytest.raises(ValueError, match=r"\(2, n\)"):
        list(stream.push(torch.zeros(3, 10)))
    with pytest.raises(ValueError, match=r"\(2, n\)"):
        list(stream.push(torch.zeros(20)))
    list(stream.push(torch.zeros(2, 10)))
    list(stream.finish())
    with pytest.raises(RuntimeError, match="after finish"):
        list(stream.push(torch.zeros(2, 10)))
    assert list(stream.finish()) == []  # a second finish emits nothing


def test_stream_with_no_samples_emits_nothing() -> None:
    stream = ChunkStream(ChunkPlan.from_overlap(16, 0.5), channels=1, batch_size=2)
    assert list(stream.push(torch.zeros(1, 0))) == []
    assert list(stream.finish()) == []


# --- ChunkStream: content ---------------------------------------------------------------------


@pytest.mark.parametrize(("chunk", "overlap"), [(64, 0.5), (64, 0.75), (100, 0.9), (30, 0.2)])
def test_reflect_padding_matches_torch_pad_for_tracks_longer_than_the_padding(
    chunk: int, overlap: float
) -> None:
    plan = ChunkPlan.from_overlap(chunk, overlap)
    p = plan.padding
    for length in [p + 1, p + 2, 2 * p + 3, 10 * chunk + 7]:
        audio = _audio(3, length, seed=length)
        padded = torch.nn.functional.pad(audio[None], (p, p), mode="reflect")[0]
        count = plan.num_chunks(length)
        expected = _expected_chunks(padded.numpy(), plan, count)
        batches, _ = _run_stream(audio, plan, batch_size=3, block_sizes=[11, 1, 57])
        got = torch.cat(batches)
        # first chunks (the left padding) and every chunk up to the end of the right padding
        torch.testing.assert_close(got[0], expected[0], rtol=0, atol=0)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize(("chunk", "overlap"), [(64, 0.5), (64, 0.9), (10, 0.5), (7, 0.75)])
@pytest.mark.parametrize("length", [1, 2, 3, 5, 17])
def test_reflect_padding_keeps_mirroring_for_tracks_shorter_than_the_padding(
    chunk: int, overlap: float, length: int
) -> None:
    plan = ChunkPlan.from_overlap(chunk, overlap)
    p = plan.padding
    audio = _audio(2, length, seed=length)
    # numpy reflects repeatedly when the pad is wider than the array
    padded = np.pad(audio.numpy(), ((0, 0), (p, p)), mode="reflect")
    count = plan.num_chunks(length)
    expected = _expected_chunks(padded, plan, count)
    for block_sizes in ([1], [100]):
        batches, _ = _run_stream(audio, plan, batch_size=2, block_sizes=block_sizes)
        torch.testing.assert_close(torch.cat(batches), expected, rtol=0, atol=0)


def test_repeated_reflection_by_hand() -> None:
    # [1, 2, 3] mirrored back and forth: ... 2 1 2 3 2 | 1 2 3 | 2 1 2 3 2 ...
    plan = ChunkPlan(chunk_size=6, hop_size=1)  # P = 5
    audio = torch.tensor([[1.0, 2.0, 3.0]])
    batches, _ = _run_stream(audio, plan, batch_size=100, block_sizes=[3])
    chunks = torch.cat(batches)[:, 0]
    assert chunks.shape == (plan.num_chunks(3), 6) == (8, 6)
    assert chunks[0].tolist() == [2, 1, 2, 3, 2, 1]
    assert chunks[3].tolist() == [3, 2, 1, 2, 3, 2]
    assert chunks[5].tolist() == [1, 2, 3, 2, 1, 2]
    assert chunks[7].tolist() == [3, 2, 1, 2, 3, 2]


@pytest.mark.parametrize(("chunk", "overlap"), [(64, 0.5), (64, 0.0), (100, 0.9)])
@pytest.mark.parametrize("length", [1, 5, 63, 64, 65, 1001])
def test_constant_padding_is_silence(chunk: int, overlap: float, length: int) -> None:
    plan = ChunkPlan.from_overlap(chunk, overlap)
    p = plan.padding
    audio = _audio(2, length, seed=length)
    padded = torch.nn.functional.pad(audio, (p, p))
    expected = _expected_chunks(padded.numpy(), plan, plan.num_chunks(length))
    batches, _ = _run_stream(audio, plan, batch_size=4, block_sizes=[13], padding_mode="constant")
    got = torch.cat(batches)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    if p:
        assert bool((got[0, :, :p] == 0).all())


@pytest.mark.parametrize("padding_mode", ["reflect", "constant"])
def test_chunks_do_not_depend_on_block_sizes_and_stay_valid(padding_mode: PaddingMode) -> None:
    plan = ChunkPlan.from_overlap(128, 0.75)
    audio = _audio(2, 5000, seed=9)
    reference = torch.cat(
        _run_stream(audio, plan, batch_size=5, block_sizes=[5000], padding_mode=padding_mode)[0]
    )
    for block_sizes in ([1], [7], [31, 1, 500], [4999, 1]):
        # the batches are kept until the end: views into the stream's buffer must not change
        batches, _ = _run_stream(
            audio, plan, batch_size=5, block_sizes=block_sizes, padding_mode=padding_mode
        )
        torch.testing.assert_close(torch.cat(batches), reference, rtol=0, atol=0)


# --- Stitcher ---------------------------------------------------------------------------------


def _reference_overlap_add(
    chunks: torch.Tensor, window: torch.Tensor, hop: int, padding: int, length: int
) -> torch.Tensor:
    """Non-incremental overlap-add over the whole padded track (float64)."""
    count, stems, channels, size = chunks.shape
    total = (count - 1) * hop + size
    acc = torch.zeros(stems, channels, total, dtype=torch.float64)
    weight = torch.zeros(total, dtype=torch.float64)
    w = window.to(torch.float64)
    for k in range(count):
        acc[..., k * hop : k * hop + size] += chunks[k].to(torch.float64) * w
        weight[k * hop : k * hop + size] += w
    return (acc / weight)[..., padding : padding + length]


def _stitch(
    chunks: torch.Tensor, plan: ChunkPlan, window: WindowTensor, counts: Sequence[int], length: int
) -> tuple[torch.Tensor, list[int]]:
    """Stitch in batches of `counts` (cycled); returns the output and its length after each add."""
    stitcher = Stitcher(plan, window=window)
    parts, lengths, k = [], [], 0
    for count in itertools.cycle(counts):
        batch = chunks[k : k + count]
        k += batch.shape[0]
        last = k >= chunks.shape[0]
        parts.append(stitcher.add(SeparatedChunkedTensor(batch), length=length if last else None))
        lengths.append(sum(p.shape[-1] for p in parts))
        if last:
            break
    parts.append(stitcher.finish(length))
    return torch.cat(parts, dim=-1), lengths


@pytest.mark.parametrize("shape", ["hann", "hamming", "blackman", "bartlett", "rectangular"])
@pytest.mark.parametrize(("chunk", "overlap"), [(64, 0.5), (64, 0.0), (50, 0.75), (33, 0.9)])
def test_stitcher_equals_a_whole_track_overlap_add(shape: str, chunk: int, overlap: float) -> None:
    plan = ChunkPlan.from_overlap(chunk, overlap)
    window = overlap_add_window(shape, chunk)  # type: ignore[arg-type]
    gen = torch.Generator().manual_seed(chunk)
    for length, counts in itertools.product([1, chunk - 1, chunk + 1, 777], [[1], [3], [2, 5, 1]]):
        n = plan.num_chunks(length)
        chunks = torch.randn(n, 2, 3, chunk, generator=gen)  # random, unrelated chunks
        got, _ = _stitch(chunks, plan, window, counts, length)
        expected = _reference_overlap_add(chunks, window, plan.hop_size, plan.padding, length)
        assert got.shape == (2, 3, length)
        assert float((got - expected).abs().max()) < 1e-5, (length, counts)


def test_stitcher_hands_on_samples_as_soon_as_they_are_final() -> None:
    plan = ChunkPlan.from_overlap(64, 0.5)  # H = 32, P = 32
    window = overlap_add_window("hann", 64)
    length = 10_000
    n = plan.num_chunks(length)
    chunks = torch.randn(n, 1, 2, 64, generator=torch.Generator().manual_seed(1))
    _, lengths = _stitch(chunks, plan, window, [4], length)
    # after k chunks, everything before chunk k's start is final and has been handed on
    assert lengths[0] == 4 * 32 - 32 > 0
    for i, out_so_far in enumerate(lengths[:-1]):
        assert out_so_far == min(plan.chunk_start(4 * (i + 1)), length)
    assert all(b > a for a, b in itertools.pairwise(lengths[:-1]))
    # what is held back is never more than one chunk's overlap
    assert lengths[-1] >= length - plan.padding


def test_stitcher_does_not_hand_on_the_left_padding_before_it_is_covered() -> None:
    plan = ChunkPlan.from_overlap(64, 0.9)  # H = 6, P = 58
    stitcher = Stitcher(plan, window=overlap_add_window("hann", 64))
    chunk = SeparatedChunkedTensor(torch.ones(1, 1, 1, 64))
    sizes = [stitcher.add(chunk).shape[-1] for _ in range(12)]
    # chunk k ends the padding only once k·H > P
    assert sizes == [0] * 9 + [2, 6, 6]
    assert stitcher.returned == 14


def test_stitcher_rejects_misuse() -> None:
    plan = ChunkPlan.from_overlap(16, 0.5)
    window = overlap_add_window("hann", 16)
    with pytest.raises(ValueError, match="does not fit"):
        Stitcher(plan, window=overlap_add_window("hann", 15))
    with pytest.raises(ValueError, match="strictly positive"):
        Stitcher(plan, window=WindowTensor(torch.zeros(16)))
    stitcher = Stitcher(plan, window=window)
    with pytest.raises(ValueError, match="finish"):
        stitcher.finish(10)
    with pytest.raises(ValueError, match="chunks"):
        stitcher.add(SeparatedChunkedTensor(torch.zeros(1, 1, 16)))
    with pytest.raises(ValueError, match="chunks"):
        stitcher.add(SeparatedChunkedTensor(torch.zeros(1, 1, 1, 17)))
    stitcher.add(SeparatedChunkedTensor(torch.zeros(2, 1, 1, 16)))  # covers [-8, 16)
    with pytest.raises(ValueError, match="cover 16 samples"):
        stitcher.finish(17)


def test_push_takes_the_block_even_if_the_result_is_not_iterated() -> None:
    plan = ChunkPlan.from_overlap(8, 0.5)
    stream = ChunkStream(plan, channels=1, batch_size=2)
    x = torch.arange(40, dtype=torch.float32)[None]
    stream.push(x[:, :20])  # result deliberately dropped
    assert stream.received == 20
    stream.finish()  # likewise: the end is marked without iterating
    with pytest.raises(RuntimeError, match="after finish"):
        stream.push(x[:, 20:])
