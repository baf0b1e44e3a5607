"""Audio fixtures synthesized in the test: sines written with soundfile or PyAV into tmp_path."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf

Signal = npt.NDArray[np.float32]
"""(channels, frames) float32."""

_LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}


class AudioFactory:
    """Writes synthesized signals into one test's tmp_path."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @staticmethod
    def sines(frames: int, *, sample_rate: int, channels: int, freq: float = 440.0) -> Signal:
        """A different-level, different-frequency sine per channel, peak ≤ 0.6."""
        t = np.arange(frames, dtype=np.float64) / sample_rate
        rows = [
            (0.6 - 0.05 * ch) * np.sin(2 * np.pi * freq * (1 + 0.25 * ch) * t + 0.3 * ch)
            for ch in range(channels)
        ]
        return np.asarray(rows, dtype=np.float32).reshape(channels, frames)

    def soundfile(
        self, name: str, signal: Signal, *, sample_rate: int, format: str, subtype: str
    ) -> Path:
        path = self.directory / name
        sf.write(str(path), signal.T, sample_rate, format=format, subtype=subtype)
        return path

    def pyav(
        self,
        name: str,
        signal: Signal,
        *,
        sample_rate: int,
        container: str = "mp4",
        codec: str = "aac",
        options: dict[str, str] | None = None,
    ) -> Path:
        """Encode with FFmpeg through PyAV (AAC by default: FFmpeg's native 'aac' encoder)."""
        path = self.directory / name
        channels = signal.shape[0]
        layout = _LAYOUTS[channels]
        with av.open(str(path), mode="w", format=container, options=options or {}) as out:
            stream = out.add_stream(codec, rate=sample_rate, layout=layout)
            formats = [f.name for f in stream.codec_context.codec.audio_formats]
            step = 1000  # not the codec's frame size: PyAV re-frames for the encoder
            for start in range(0, signal.shape[1], step):
                chunk = np.ascontiguousarray(signal[:, start : start + step])
                if "fltp" in formats:
                    frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
                else:
                    packed = np.ascontiguousarray(chunk.T).reshape(1, -1)
                    frame = av.AudioFrame.from_ndarray(packed, format="flt", layout=layout)
                frame.sample_rate = sample_rate
                frame.pts = start
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
        return path

    def raw(self, name: str, data: bytes) -> Path:
        path = self.directory / name
        path.write_bytes(data)
        return path


@pytest.fixture
def audio(tmp_path: Path) -> AudioFactory:
    return AudioFactory(tmp_path)
