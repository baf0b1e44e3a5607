"""Channel adaptation between a track's channel count and a fixed-channel model."""

from __future__ import annotations

import pytest
import torch

from mss_jobs.core.channels import ChannelAdapter
from mss_jobs.core.pipeline import SeparationSettings, separate_tensor
from mss_jobs.domain.units import StemName
from mss_jobs.models.base import ChunkDefaults, Separator
from mss_jobs.types import PaddedChunkedAudioTensor, RawAudioTensor, SeparatedChunkedTensor

LEFT_GAIN, RIGHT_GAIN = 1.0, 3.0


class StereoProbe:
    """A stereo-only model whose stems reveal the channel mapping:
    `gain` = (1·left, 3·right), `swap` = (right, left), `copy` = (left, right)."""

    name = "stereo-probe"
    sample_rate = 44100
    channels = 2
    stems: tuple[StemName, ...] = ("gain", "swap", "copy")
    chunk_defaults = ChunkDefaults(chunk_seconds=1.0, overlap=0.5)
    dtype = torch.float32

    def __init__(self) -> None:
        self.device = torch.device("cpu")
        self.calls: list[tuple[int, ...]] = []

    def to(self, device: torch.device, dtype: torch.dtype | None = None) -> StereoProbe:
        return self

    def separate(self, chunks: PaddedChunkedAudioTensor) -> SeparatedChunkedTensor:
        if chunks.dim() != 3 or chunks.shape[1] != 2:
            raise ValueError(f"stereo model got {tuple(chunks.shape)}")
        self.calls.append(tuple(chunks.shape))
        gains = torch.tensor([LEFT_GAIN, RIGHT_GAIN]).view(1, 2, 1)
        return SeparatedChunkedTensor(
            torch.stack([chunks * gains, chunks.flip(1), chunks.clone()], dim=1)
        )


def _chunks(batch: int, channels: int, size: int = 8) -> PaddedChunkedAudioTensor:
    g = torch.Generator().manual_seed(batch * 100 + channels)
    return PaddedChunkedAudioTensor(torch.randn(batch, channels, size, generator=g))


def _through(adapter: ChannelAdapter, model: StereoProbe, x: torch.Tensor) -> torch.Tensor:
    return adapter.from_model(model.separate(adapter.to_model(PaddedChunkedAudioTensor(x))))


def test_probe_satisfies_the_protocol() -> None:
    assert isinstance(StereoProbe(), Separator)


def test_mono_into_a_stereo_model_comes_back_mono_as_the_mean() -> None:
    x = _chunks(3, 1)
    adapter = ChannelAdapter(track_channels=1, model_channels=2)
    assert adapter.groups == 1
    assert not adapter.passthrough
    model_in = adapter.to_model(x)
    assert model_in.shape == (3, 2, 8)
    torch.testing.assert_close(model_in[:, 0], x[:, 0])
    torch.testing.assert_close(model_in[:, 1], x[:, 0])
    out = _through(adapter, StereoProbe(), x)
    assert out.shape == (3, 3, 1, 8)
    torch.testing.assert_close(out[:, 0, 0], (LEFT_GAIN + RIGHT_GAIN) / 2 * x[:, 0])
    torch.testing.assert_close(out[:, 1, 0], x[:, 0])
    torch.testing.assert_close(out[:, 2, 0], x[:, 0])


def test_six_channels_are_separated_as_three_pairs_in_one_batch() -> None:
    x = _chunks(2, 6)
    adapter = ChannelAdapter(track_channels=6, model_channels=2)
    assert adapter.groups == 3
    model = StereoProbe()
    out = _through(adapter, model, x)
    assert model.calls == [(6, 2, 8)]  # batch 2 · 3 groups, in one call
    assert out.shape == (2, 3, 6, 8)
    for pair in range(3):
        left, right = 2 * pair, 2 * pair + 1
        torch.testing.assert_close(out[:, 0, left], LEFT_GAIN * x[:, left])
        torch.testing.assert_close(out[:, 0, right], RIGHT_GAIN * x[:, right])
        torch.testing.assert_close(out[:, 1, left], x[:, right])
        torch.testing.assert_close(out[:, 1, right], x[:, left])
    torch.testing.assert_close(out[:, 2], x)


def test_three_channels_wrap_around_and_average_the_copies() -> None:
    # pairs (0, 1) and (2, 0): channel 0 is separated twice, once as left, once as right
    x = _chunks(4, 3)
    adapter = ChannelAdapter(track_channels=3, model_channels=2)
    assert adapter.groups == 2
    model_in = adapter.to_model(x)
    assert model_in.shape == (8, 2, 8)
    torch.testing.assert_close(model_in[1], x[0, [2, 0]])
    out = _through(adapter, StereoProbe(), x)
    assert out.shape == (4, 3, 3, 8)
    x0, x1, x2 = x[:, 0], x[:, 1], x[:, 2]
    torch.testing.assert_close(out[:, 0, 0], (LEFT_GAIN * x0 + RIGHT_GAIN * x0) / 2)
    torch.testing.assert_close(out[:, 0, 1], RIGHT_GAIN * x1)
    torch.testing.assert_close(out[:, 0, 2], LEFT_GAIN * x2)
    torch.testing.assert_close(out[:, 1, 0], (x1 + x2) / 2)  # swap: left of (0,1), right of (2,0)
    torch.testing.assert_close(out[:, 1, 1], x0)
    torch.testing.assert_close(out[:, 1, 2], x0)
    torch.testing.assert_close(out[:, 2], x)


def test_five_channels_into_a_stereo_model() -> None:
    x = _chunks(1, 5)
    adapter = ChannelAdapter(track_channels=5, model_channels=2)  # (0,1) (2,3) (4,0)
    out = _through(adapter, StereoProbe(), x)
    torch.testing.assert_close(out[:, 0, 0], (LEFT_GAIN + RIGHT_GAIN) / 2 * x[:, 0])
    torch.testing.assert_close(out[:, 0, 4], LEFT_GAIN * x[:, 4])
    torch.testing.assert_close(out[:, 1, 4], x[:, 0])
    torch.testing.assert_close(out[:, 2], x)


@pytest.mark.parametrize(("track", "model"), [(2, 2), (1, None), (6, None), (4, 4)])
def test_matching_or_flexible_models_see_the_track_as_it_is(track: int, model: int | None) -> None:
    adapter = ChannelAdapter(track_channels=track, model_channels=model)
    assert adapter.passthrough
    x = _chunks(2, track)
    assert adapter.to_model(x) is x
    y = SeparatedChunkedTensor(torch.randn(2, 1, track, 8))
    assert adapter.from_model(y) is y


def test_invalid_channel_counts_are_rejected() -> None:
    with pytest.raises(ValueError, match="track_channels=0"):
        ChannelAdapter(track_channels=0, model_channels=2)
    with pytest.raises(ValueError, match="model_channels=0"):
        ChannelAdapter(track_channels=2, model_channels=0)


# --- through the pipeline ---------------------------------------------------------------------


def _audio(channels: int, samples: int) -> RawAudioTensor:
    g = torch.Generator().manual_seed(channels * 1000 + samples)
    return RawAudioTensor(0.4 * torch.randn(channels, samples, generator=g))


@pytest.mark.parametrize("channels", [1, 2, 3, 5, 6])
@pytest.mark.parametrize("normalize", [False, True])
def test_stereo_model_in_the_pipeline_maps_channels_back(channels: int, normalize: bool) -> None:
    audio = _audio(channels, 1234)
    settings = SeparationSettings(
        chunk_size=128, overlap=0.75, window="hann", batch_size=3, normalize=normalize
    )
    model = StereoProbe()
    out = separate_tensor(audio, separator=model, settings=settings, block_samples=300)
    assert set(model.calls) <= {(g, 2, 128) for g in range(1, 3 * 3 + 1)}
    assert set(out) == {"gain", "swap", "copy"}
    for stem in out.values():
        assert stem.shape == (channels, 1234)
    # `copy` is an identity: the round trip must be exact whatever the channel count
    assert float((out["copy"] - audio).abs().max()) < 1e-5
    if channels == 1:
        expected_gain = (LEFT_GAIN + RIGHT_GAIN) / 2 * audio
        if normalize:  # denormalize adds the mean back once per stem
            mean = float(audio.double().mean())
            expected_gain = (LEFT_GAIN + RIGHT_GAIN) / 2 * (audio - mean) + mean
        assert float((out["gain"] - expected_gain).abs().max()) < 1e-5
        assert float((out["swap"] - audio).abs().max()) < 1e-5
    if channels == 6 and not normalize:
        assert float((out["gain"][1::2] - RIGHT_GAIN * audio[1::2]).abs().max()) < 1e-5
        assert float((out["swap"][0::2] - audio[1::2]).abs().max()) < 1e-5
