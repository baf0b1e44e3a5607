"""The streaming pipeline end to end, with `identity` as the oracle (its output must equal its
input) and small test separators whose outputs are known functions of their input."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator
from typing import get_args

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mss_jobs.core.chunking import ChunkPlan, PaddingMode
from mss_jobs.core.normalize import compute_stats
from mss_jobs.core.pipeline import (
    Progress,
    SeparationSettings,
    StemBlock,
    output_stems,
    separate_stream,
    separate_tensor,
)
from mss_jobs.domain.derived import parse_derived
from mss_jobs.domain.units import StemName, WindowShape
from mss_jobs.errors import ConfigError, DerivedStemsError, EmptyAudioError, NonFiniteAudioError
from mss_jobs.models.base import ChunkDefaults
from mss_jobs.models.identity import IdentitySeparator
from mss_jobs.types import PaddedChunkedAudioTensor, RawAudioTensor, SeparatedChunkedTensor

WINDOWS: tuple[WindowShape, ...] = get_args(WindowShape)
PADDING_MODES: tuple[PaddingMode, ...] = get_args(PaddingMode)
IDENTITY = IdentitySeparator()


def _audio(channels: int, samples: int, *, seed: int = 0) -> RawAudioTensor:
    g = torch.Generator().manual_seed(seed)
    return RawAudioTensor(0.5 * torch.randn(channels, samples, generator=g) + 0.05)


def _max_error(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (tuple(a.shape), tuple(b.shape))
    return float((a - b).abs().max())


def _blocks(audio: torch.Tensor, size: int) -> list[RawAudioTensor]:
    return [RawAudioTensor(audio[:, i : i + size]) for i in range(0, audio.shape[-1], size)]


class VocalsSplit:
    """Two stems that sum to the chunk: vocals = ¼ · chunk, other = ¾ · chunk."""

    name = "vocals-split"
    sample_rate = 44100
    channels = None
    stems: tuple[StemName, ...] = ("vocals", "other")
    chunk_defaults = ChunkDefaults(chunk_seconds=1.0, overlap=0.5)
    device = torch.device("cpu")
    dtype = torch.float32

    def to(self, device: torch.device, dtype: torch.dtype | None = None) -> VocalsSplit:
        return self

    def separate(self, chunks: PaddedChunkedAudioTensor) -> SeparatedChunkedTensor:
        return SeparatedChunkedTensor(torch.stack([0.25 * chunks, 0.75 * chunks], dim=1))


# --- identity round trip: grid ----------------------------------------------------------------

CHUNK_FOR_WINDOW: dict[WindowShape, int] = {
    "hann": 64,
    "hamming": 100,
    "blackman": 128,
    "bartlett": 77,
    "rectangular": 256,
}
BATCH_SIZES = (1, 2, 5)
CHANNEL_COUNTS = (1, 2, 6)


def _grid_lengths(chunk: int, hop: int) -> list[int]:
    long = 5 * chunk + 7
    if long % hop == 0:
        long += 1
    assert long % hop != 0
    assert long > 3 * chunk
    return [1, chunk // 2 + 1, chunk, chunk + 1, long]


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.75, 0.9])
def test_identity_round_trip_grid(window: WindowShape, overlap: float) -> None:
    """Every length × padding mode × block size × normalization, with batch size and channel
    count rotating through all their 9 combinations (each item starts the rotation elsewhere)."""
    chunk = CHUNK_FOR_WINDOW[window]
    hop = ChunkPlan.from_overlap(chunk, overlap).hop_size
    rotation = itertools.islice(
        itertools.cycle(itertools.product(BATCH_SIZES, CHANNEL_COUNTS)),
        WINDOWS.index(window) + int(overlap * 20),
        None,
    )
    seen = set()
    cases = itertools.product(
        _grid_lengths(chunk, hop), PADDING_MODES, (7, 1000, 1 << 18), (False, True)
    )
    for (length, padding_mode, block, normalize), (batch, channels) in zip(
        cases, rotation, strict=False
    ):
        seen.add((batch, channels))
        settings = SeparationSettings(
            chunk_size=chunk,
            overlap=overlap,
            window=window,
            batch_size=batch,
            normalize=normalize,
            padding_mode=padding_mode,
        )
        audio = _audio(channels, length, seed=length + channels)
        out = separate_tensor(audio, separator=IDENTITY, settings=settings, block_samples=block)
        assert list(out) == ["mixture"]
        error = _max_error(out["mixture"], audio)
        assert error < 1e-5, (
            f"{length=} {channels=} {batch=} {padding_mode=} {block=} {normalize=}: {error}"
        )
    assert len(seen) == len(BATCH_SIZES) * len(CHANNEL_COUNTS)


@pytest.mark.parametrize("channels", CHANNEL_COUNTS)
@pytest.mark.parametrize("batch", BATCH_SIZES)
def test_identity_round_trip_for_every_batch_and_channel_count(channels: int, batch: int) -> None:
    settings = SeparationSettings(chunk_size=96, overlap=0.75, window="hann", batch_size=batch)
    audio = _audio(channels, 1001, seed=batch)
    out = separate_tensor(audio, separator=IDENTITY, settings=settings, block_samples=100)
    assert _max_error(out["mixture"], audio) < 1e-5


# --- identity round trip: property ------------------------------------------------------------


@settings(deadline=None, max_examples=200)
@given(
    length=st.integers(1, 5000),
    chunk=st.integers(1, 600),
    overlap=st.floats(0.0, 0.95),
    window=st.sampled_from(WINDOWS),
    batch=st.integers(1, 8),
    channels=st.integers(1, 6),
    block=st.integers(1, 6000),
    padding_mode=st.sampled_from(PADDING_MODES),
    normalize=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_identity_round_trip_property(
    length: int,
    chunk: int,
    overlap: float,
    window: WindowShape,
    batch: int,
    channels: int,
    block: int,
    padding_mode: PaddingMode,
    normalize: bool,
    seed: int,
) -> None:
    settings = SeparationSettings(
        chunk_size=chunk,
        overlap=overlap,
        window=window,
        batch_size=batch,
        normalize=normalize,
        padding_mode=padding_mode,
    )
    audio = _audio(channels, length, seed=seed)
    out = separate_tensor(audio, separator=IDENTITY, settings=settings, block_samples=block)
    assert _max_error(out["mixture"], audio) < 1e-5


# --- overlap 0 --------------------------------------------------------------------------------


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize(("chunk", "length"), [(64, 1000), (2048, 5000), (1, 10)])
def test_overlap_zero_is_exact_for_every_window(
    window: WindowShape, chunk: int, length: int
) -> None:
    # each sample is covered by exactly one chunk: x·w / w, never 0 / 0 at the chunk edges
    settings = SeparationSettings(chunk_size=chunk, overlap=0.0, window=window, normalize=False)
    audio = _audio(2, length, seed=chunk)
    out = separate_tensor(audio, separator=IDENTITY, settings=settings, block_samples=333)
    assert not bool(torch.isnan(out["mixture"]).any())
    torch.testing.assert_close(out["mixture"], audio, rtol=1e-6, atol=0)


# --- events -----------------------------------------------------------------------------------


def _events(
    audio: torch.Tensor, settings: SeparationSettings, *, block: int, total: int | None
) -> list[Progress | StemBlock]:
    blocks = _blocks(audio, block)
    stats = compute_stats(blocks) if settings.normalize else None
    return list(
        separate_stream(
            blocks, separator=IDENTITY, settings=settings, stats=stats, total_samples=total
        )
    )


@pytest.mark.parametrize("total_known", [True, False])
@pytest.mark.parametrize(("length", "block"), [(5000, 300), (5000, 1), (70, 1000), (1, 1)])
def test_progress_counts_chunks_up_to_the_total(total_known: bool, length: int, block: int) -> None:
    settings = SeparationSettings(chunk_size=128, overlap=0.5, batch_size=3)
    num_chunks = ChunkPlan.from_overlap(128, 0.5).num_chunks(length)
    audio = _audio(2, length)
    events = _events(audio, settings, block=block, total=length if total_known else None)
    progress = [e for e in events if isinstance(e, Progress)]
    # one event per model batch of 3 chunks; only the last batch may be smaller
    assert [p.done for p in progress] == [*range(3, num_chunks, 3), num_chunks]
    assert all(p.stage == "separate" for p in progress)
    assert progress[-1].done == progress[-1].total == num_chunks
    if total_known:
        assert all(p.total == num_chunks for p in progress)
    else:
        assert all(p.total in (None, num_chunks) for p in progress)


def test_a_wrong_total_is_corrected_once_the_length_is_known() -> None:
    settings = SeparationSettings(chunk_size=64, overlap=0.5, batch_size=2, normalize=False)
    events = _events(_audio(1, 1000), settings, block=100, total=5000)
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress[0].total == ChunkPlan.from_overlap(64, 0.5).num_chunks(5000)
    assert (
        progress[-1].done == progress[-1].total == ChunkPlan.from_overlap(64, 0.5).num_chunks(1000)
    )


@pytest.mark.parametrize(("length", "block"), [(5000, 300), (5000, 1), (70, 1000), (1, 1)])
def test_stem_blocks_are_contiguous_and_cover_the_track(length: int, block: int) -> None:
    settings = SeparationSettings(chunk_size=128, overlap=0.75, batch_size=2)
    audio = _audio(2, length, seed=1)
    blocks = [
        e for e in _events(audio, settings, block=block, total=None) if isinstance(e, StemBlock)
    ]
    assert blocks[0].start == 0
    for previous, current in itertools.pairwise(blocks):
        assert current.start == previous.start + previous.samples
    assert blocks[-1].start + blocks[-1].samples == length
    for b in blocks:
        assert b.samples > 0
        mixture = b.stems["mixture"]
        assert mixture.dtype == torch.float32
        assert mixture.device.type == "cpu"
        assert _max_error(mixture, audio[:, b.start : b.start + b.samples]) < 1e-5


def test_normalize_on_without_stats_raises() -> None:
    settings = SeparationSettings(chunk_size=64, overlap=0.5, normalize=True)
    stream = separate_stream(_blocks(_audio(1, 100), 50), separator=IDENTITY, settings=settings)
    with pytest.raises(ValueError, match="stats"):
        next(stream)


@pytest.mark.parametrize("blocks", [[], [torch.zeros(2, 0)], [torch.zeros(2, 0)] * 3])
@pytest.mark.parametrize("normalize", [False, True])
def test_empty_input_is_empty_audio(blocks: list[torch.Tensor], normalize: bool) -> None:
    settings = SeparationSettings(chunk_size=64, overlap=0.5, normalize=normalize)
    stats = compute_stats([_audio(2, 10)]) if normalize else None
    stream = separate_stream(
        [RawAudioTensor(b) for b in blocks], separator=IDENTITY, settings=settings, stats=stats
    )
    with pytest.raises(EmptyAudioError):
        list(stream)


def test_separate_tensor_of_zero_samples_is_empty_audio() -> None:
    settings = SeparationSettings(chunk_size=64, overlap=0.5)
    with pytest.raises(EmptyAudioError):
        separate_tensor(RawAudioTensor(torch.zeros(2, 0)), separator=IDENTITY, settings=settings)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_block_mid_stream_names_the_absolute_sample(bad: float) -> None:
    audio = _audio(2, 1000, seed=2)
    stats = compute_stats([audio])
    audio[1, 317] = bad
    settings = SeparationSettings(chunk_size=64, overlap=0.5, batch_size=1)
    consumed: list[int] = []

    def blocks() -> Iterator[RawAudioTensor]:
        for block in _blocks(audio, 100):
            consumed.append(block.shape[-1])
            yield block

    events: list[Progress | StemBlock] = []
    stream = separate_stream(blocks(), separator=IDENTITY, settings=settings, stats=stats)
    with pytest.raises(NonFiniteAudioError) as error:
        events.extend(stream)  # keeps what came before the error
    match = re.search(r"sample (\d+) of channel (\d+)", str(error.value))
    assert match
    assert (int(match.group(1)), int(match.group(2))) == (317, 1)
    assert len(consumed) == 4  # raised at the offending block, not at the end
    assert any(isinstance(e, StemBlock) for e in events)  # audio before it was already handed on


def test_blocks_must_be_two_dimensional() -> None:
    settings = SeparationSettings(chunk_size=64, overlap=0.5, normalize=False)
    with pytest.raises(ValueError, match="channels, samples"):
        list(separate_stream([torch.zeros(100)], separator=IDENTITY, settings=settings))  # type: ignore[list-item]


# --- memory boundedness -----------------------------------------------------------------------


def test_stem_blocks_arrive_while_the_track_is_still_streaming() -> None:
    """A long track (2000 blocks) must never be buffered whole: when each StemBlock is handed
    on, the input consumed so far is at most a constant (a few chunks) ahead of it."""
    block, n_blocks = 4410, 2000
    settings = SeparationSettings(
        chunk_size=8820, overlap=0.5, batch_size=4, normalize=False, window="hann"
    )
    hop = ChunkPlan.from_overlap(8820, 0.5).hop_size
    bound = settings.batch_size * hop + settings.chunk_size + block
    pattern = torch.linspace(-0.5, 0.5, block).expand(2, block)
    consumed = 0

    def blocks() -> Iterator[RawAudioTensor]:
        nonlocal consumed
        for _ in range(n_blocks):
            consumed += block
            yield RawAudioTensor(pattern)

    lags, first_at, handed_on = [], None, 0
    for event in separate_stream(blocks(), separator=IDENTITY, settings=settings):
        if isinstance(event, StemBlock):
            assert event.start == handed_on
            handed_on += event.samples
            lags.append(consumed - handed_on)
            first_at = consumed if first_at is None else first_at
            # identity hands back the repeating ramp
            phase = event.start % block
            expected = pattern.repeat(1, 3)[:, phase : phase + min(event.samples, 2 * block)]
            got = event.stems["mixture"][:, : expected.shape[-1]]
            assert _max_error(got, expected) < 1e-5
    assert handed_on == block * n_blocks
    assert len(lags) > n_blocks // 10  # many blocks along the way, not one at the end
    assert max(lags) <= bound, f"pipeline held {max(lags)} samples (> {bound})"
    assert first_at is not None
    assert first_at <= bound  # the first audio came out early


# --- derived stems and stem selection ---------------------------------------------------------


@pytest.mark.parametrize("normalize", [False, True])
def test_derived_stems_from_identity(normalize: bool) -> None:
    settings = SeparationSettings(
        chunk_size=64,
        overlap=0.5,
        normalize=normalize,
        derived=(
            parse_derived("triple=double+mixture"),  # uses a rule defined after it
            parse_derived("double=mixture+mixture"),
            parse_derived("zero=mixture-mixture"),
        ),
    )
    audio = _audio(2, 777, seed=3)
    out = separate_tensor(audio, separator=IDENTITY, settings=settings, block_samples=50)
    assert list(out) == ["mixture", "double", "triple", "zero"]
    assert _max_error(out["double"], 2 * audio) < 2e-5
    assert _max_error(out["triple"], 3 * audio) < 3e-5
    assert _max_error(out["zero"], torch.zeros_like(audio)) < 1e-5


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("block", [1, 37, 100_000])
def test_instrumental_uses_the_raw_mixture(normalize: bool, block: int) -> None:
    """`mixture` is not a model stem here: the pipeline keeps the input itself for it."""
    settings = SeparationSettings(
        chunk_size=50,
        overlap=0.75,
        batch_size=3,
        normalize=normalize,
        derived=(parse_derived("instrumental=mixture-vocals"),),
    )
    audio = _audio(2, 1234, seed=4)
    out = separate_tensor(audio, separator=VocalsSplit(), settings=settings, block_samples=block)
    assert list(out) == ["vocals", "other", "instrumental"]
    assert _max_error(out["instrumental"], audio - out["vocals"]) < 1e-6
    if not normalize:
        assert _max_error(out["vocals"], 0.25 * audio) < 1e-5
        assert _max_error(out["instrumental"], 0.75 * audio) < 1e-5
        assert _max_error(out["instrumental"], out["other"]) < 1e-5


def test_stems_selects_a_subset_in_the_requested_order() -> None:
    settings = SeparationSettings(
        chunk_size=50,
        overlap=0.5,
        normalize=False,
        derived=(parse_derived("instrumental=mixture-vocals"),),
        stems=("instrumental", "vocals", "instrumental"),
    )
    assert output_stems(VocalsSplit(), settings) == ("instrumental", "vocals")
    audio = _audio(1, 500, seed=5)
    out = separate_tensor(audio, separator=VocalsSplit(), settings=settings, block_samples=64)
    assert list(out) == ["instrumental", "vocals"]
    assert _max_error(out["instrumental"], 0.75 * audio) < 1e-5


def test_unknown_stem_selection_is_a_config_error() -> None:
    settings = SeparationSettings(chunk_size=50, overlap=0.5, stems=("vocals", "piano"))
    with pytest.raises(ConfigError, match="'piano'") as error:
        separate_tensor(_audio(1, 100), separator=VocalsSplit(), settings=settings)
    assert "vocals, other" in str(error.value)
    with pytest.raises(ConfigError, match="'piano'"):
        output_stems(VocalsSplit(), settings)


def test_invalid_derived_rules_fail_before_any_audio_is_read() -> None:
    settings = SeparationSettings(
        chunk_size=50,
        overlap=0.5,
        normalize=False,
        derived=(parse_derived("vocals=mixture-other"),),
    )

    def blocks() -> Iterator[RawAudioTensor]:
        raise AssertionError("audio was read")
        yield  # pragma: no cover

    with pytest.raises(DerivedStemsError, match="clashes"):
        next(separate_stream(blocks(), separator=VocalsSplit(), settings=settings))


def test_output_stems_defaults_to_model_then_derived() -> None:
    settings = SeparationSettings(
        chunk_size=50, overlap=0.5, derived=(parse_derived("instrumental=mixture-vocals"),)
    )
    assert output_stems(VocalsSplit(), settings) == ("vocals", "other", "instrumental")
    assert output_stems(IDENTITY, SeparationSettings(chunk_size=8, overlap=0.0)) == ("mixture",)


# --- settings ---------------------------------------------------------------------------------


def test_settings_for_model_start_from_its_defaults() -> None:
    settings = SeparationSettings.for_model(IDENTITY)
    assert settings.chunk_size == 8 * 44100
    assert settings.overlap == 0.5
    assert settings.batch_size == 8
    assert settings.window == "hann"
    custom = SeparationSettings.for_model(
        IDENTITY, chunk_seconds=0.01, overlap=0.25, window="blackman", batch_size=2
    )
    assert (custom.chunk_size, custom.overlap, custom.window, custom.batch_size) == (
        441,
        0.25,
        "blackman",
        2,
    )
    with pytest.raises(ConfigError, match="chunk length"):
        SeparationSettings.for_model(IDENTITY, chunk_seconds=0.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"chunk_size": 0, "overlap": 0.5}, "chunk_size=0"),
        ({"chunk_size": 64, "overlap": 1.0}, "overlap=1.0"),
        ({"chunk_size": 64, "overlap": -0.5}, "overlap=-0.5"),
        ({"chunk_size": 64, "overlap": 0.5, "batch_size": 0}, "batch_size=0"),
    ],
)
def test_settings_are_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        SeparationSettings(**kwargs)  # type: ignore[arg-type]
