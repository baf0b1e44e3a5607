"""dsp-hpss vs librosa HPSS on the same synthetic mix: wall time (best of N) and SDR per stem.

The mix is sustained chords (several partials, slow tremolo, a new chord every 0.5–1 s) plus
exponentially decaying noise bursts (~6 per second), stereo 44.1 kHz, equal loudness. Both sides
get the same STFT geometry, window, kernel sizes and mask power: librosa runs
`librosa.stft` → `librosa.decompose.hpss(mask=False)` → `librosa.istft` on the whole track (its
median filter is scipy.ndimage.median_filter, single-threaded); ours runs `HpssSeparator.separate`
on the whole track as one chunk, with torch's threads and with one thread, and through the
pipeline (8 s chunks, 25 % overlap: the service's path, with the chunk overlap's extra work).
`--filters` adds a table of the median filter alone: scipy, torch `unfold(...).median()`, ours.

    .venv/bin/python benchmarks/bench_hpss.py                  # 30 s
    .venv/bin/python benchmarks/bench_hpss.py --seconds 60 --repeat 5 --filters

librosa is a development-only dependency (the dev group `bash .ci/setup` installs).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import librosa
import numpy as np
import scipy.ndimage
import torch

from mss_jobs.core.pipeline import SeparationSettings, separate_tensor
from mss_jobs.core.spectral import stft
from mss_jobs.demo import synthesize_chords_and_bursts
from mss_jobs.models.hpss import HpssConfig, HpssSeparator, median_filter
from mss_jobs.types import RawAudioTensor

RATE = 44100


def sdr(reference: np.ndarray | torch.Tensor, estimate: np.ndarray | torch.Tensor) -> float:
    ref, est = np.asarray(reference, np.float64), np.asarray(estimate, np.float64)
    return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - est) ** 2)))


def best_of(repeat: int, *fns: Callable[[], object]) -> list[tuple[float, object]]:
    """(best wall time, last result) per function, after one untimed warm-up call each (numba
    compiles inside librosa, allocators and FFT plans warm up). Rounds are interleaved (a, b, a,
    b, ...) so that load from other processes on a shared machine hits every contender alike."""
    times: list[list[float]] = [[] for _ in fns]
    results: list[object] = [fn() for fn in fns]
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            results[i] = fn()
            times[i].append(time.perf_counter() - start)
    return [(min(t), r) for t, r in zip(times, results, strict=True)]


def with_threads(threads: int, fn: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return fn()
        finally:
            torch.set_num_threads(before)

    return run


def librosa_hpss(mix: np.ndarray, config: HpssConfig) -> tuple[np.ndarray, np.ndarray]:
    geometry = {"n_fft": config.n_fft, "hop_length": config.hop_length, "window": config.window}
    spectrum = librosa.stft(mix, center=True, pad_mode="reflect", **geometry)
    harmonic, percussive = librosa.decompose.hpss(
        spectrum,
        kernel_size=(config.harmonic_kernel, config.percussive_kernel),
        power=config.power,
        mask=False,
    )
    return tuple(librosa.istft(s, length=mix.shape[-1], **geometry) for s in (harmonic, percussive))


def filter_table(magnitude: torch.Tensor, config: HpssConfig, repeat: int) -> None:
    """Time one median filter each way on the track's (channels, bins, frames) magnitudes."""

    def unfold_median(x: torch.Tensor, kernel: int, dim: int) -> torch.Tensor:
        moved = x.movedim(dim, -1)
        index = torch.arange(-(kernel // 2), moved.shape[-1] + kernel // 2)
        index = torch.where(index < 0, -index - 1, index)  # half-sample reflection, short pads
        index = torch.where(index >= moved.shape[-1], 2 * moved.shape[-1] - 1 - index, index)
        padded = moved.index_select(-1, index)
        rows = padded.reshape(-1, padded.shape[-1])
        out = torch.cat([r.unfold(-1, kernel, 1).median(-1).values for r in rows.split(64)])
        return out.reshape(moved.shape).movedim(-1, dim)

    print(f"\nmedian filter alone on {tuple(magnitude.shape)} magnitudes, best of {repeat}")
    header = f"{'axis':<22} | {'scipy s':>8} {'unfold s':>8} {'ours s':>7} {'ours 1T s':>9} | same"
    print(header)
    print("-" * len(header))
    spec = magnitude.numpy()
    for axis, kernel, dim in (
        (f"time, {config.harmonic_kernel} frames", config.harmonic_kernel, -1),
        (f"frequency, {config.percussive_kernel} bins", config.percussive_kernel, -2),
    ):
        size = [1] * magnitude.dim()
        size[dim] = kernel
        scipy_fn = partial(scipy.ndimage.median_filter, spec, size=size, mode="reflect")
        ours_fn = partial(median_filter, magnitude, kernel, dim=dim)
        (t_scipy, ref), (t_unfold, via_unfold), (t_ours, ours), (t_one, _) = best_of(
            repeat,
            scipy_fn,
            partial(unfold_median, magnitude, kernel, dim),
            ours_fn,
            with_threads(1, ours_fn),
        )
        same = np.array_equal(ref, ours.numpy()) and torch.equal(via_unfold, ours)
        print(
            f"{axis:<22} | {t_scipy:>8.3f} {t_unfold:>8.3f} {t_ours:>7.3f} {t_one:>9.3f} | {same}"
        )


def main() -> None:
    defaults = HpssConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the stereo mix")
    parser.add_argument("--repeat", type=int, default=3, help="best of N per measurement")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--n-fft", type=int, default=defaults.n_fft)
    parser.add_argument("--hop", type=int, default=defaults.hop_length)
    parser.add_argument("--harmonic-kernel", type=int, default=defaults.harmonic_kernel)
    parser.add_argument("--percussive-kernel", type=int, default=defaults.percussive_kernel)
    parser.add_argument("--power", type=float, default=defaults.power)
    parser.add_argument("--filters", action="store_true", help="also time the median filters")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = HpssConfig(
        n_fft=args.n_fft,
        hop_length=args.hop,
        harmonic_kernel=args.harmonic_kernel,
        percussive_kernel=args.percussive_kernel,
        power=args.power,
    )
    track = synthesize_chords_and_bursts(args.seconds)
    harmonic, percussive = track.harmonic, track.percussive
    mix = harmonic + percussive
    separator = HpssSeparator(config)
    settings = SeparationSettings.for_model(separator)

    def ours() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            out = separator.separate(mix[None])[0]
        return out[0], out[1]

    def ours_pipeline() -> tuple[torch.Tensor, torch.Tensor]:
        stems = separate_tensor(RawAudioTensor(mix), separator=separator, settings=settings)
        return stems["harmonic"], stems["percussive"]

    rows = [
        (f"ours, {args.threads} threads", ours),
        ("ours, 1 thread", with_threads(1, ours)),
        (f"ours via pipeline, {args.threads} thr.", ours_pipeline),
        ("librosa 0.11 (scipy)", lambda: librosa_hpss(mix.numpy(), config)),
    ]
    print(
        f"torch {torch.__version__}; {args.seconds:g} s stereo {RATE} Hz; n_fft {config.n_fft}, "
        f"hop {config.hop_length}, {config.window}; kernels {config.harmonic_kernel} frames / "
        f"{config.percussive_kernel} bins; power {config.power:g}; best of {args.repeat}"
    )
    header = f"{'implementation':<28} | {'seconds':>8} {'x realtime':>10} {'speedup':>8} | "
    header += f"{'SDR harm dB':>11} {'SDR perc dB':>11}"
    print(header)
    print("-" * len(header))
    timings = best_of(args.repeat, *(fn for _, fn in rows))
    reference_seconds = timings[-1][0]
    for (label, _), (seconds, (est_h, est_p)) in zip(rows, timings, strict=True):
        print(
            f"{label:<28} | {seconds:>8.3f} {args.seconds / seconds:>10.1f} "
            f"{reference_seconds / seconds:>7.1f}x | {sdr(harmonic, est_h):>11.2f} "
            f"{sdr(percussive, est_p):>11.2f}"
        )
    if args.filters:
        filter_table(stft(mix, config.stft_params).abs(), config, args.repeat)


if __name__ == "__main__":
    main()
