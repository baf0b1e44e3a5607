"""Chunk + stitch time and peak memory, ours vs splifft's generate_chunks/stitch_chunks, one run.

Each (implementation, duration) pair runs in a fresh subprocess so peak RSS is its own. The model
is `identity` (chunk → one stem), so what is timed is the chunking and overlap-add machinery.
Both get the same in-memory stereo 44.1 kHz track, chunk size, hop, batch size and hann window.

    .venv/bin/python benchmarks/bench_chunking.py                 # 4, 10, 60 min
    .venv/bin/python benchmarks/bench_chunking.py --minutes 1 4   # quicker

splifft is a development-only dependency (the dev group `bash .ci/setup` installs).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

RATE = 44100


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _track(minutes: float) -> object:
    import torch

    gen = torch.Generator().manual_seed(0)
    return torch.rand(2, int(minutes * 60 * RATE), generator=gen) * 2 - 1


def _ours(x: object, chunk: int, hop: int, batch: int) -> tuple[float, float]:
    import torch

    from mss_jobs.core.chunking import ChunkPlan, ChunkStream, Stitcher
    from mss_jobs.core.spectral import overlap_add_window

    assert isinstance(x, torch.Tensor)
    plan = ChunkPlan(chunk_size=chunk, hop_size=hop)
    block = 1 << 18
    start = time.perf_counter()
    stream = ChunkStream(plan, channels=x.shape[0], batch_size=batch)
    stitcher = Stitcher(plan, window=overlap_add_window("hann", chunk))
    error = 0.0
    done = 0

    def check(out: torch.Tensor) -> None:
        nonlocal error, done
        n = out.shape[-1]
        error = max(error, float((out[0] - x[:, done : done + n]).abs().max()) if n else 0.0)
        done += n

    with torch.inference_mode():
        for i in range(0, x.shape[-1], block):
            for chunks in stream.push(x[:, i : i + block]):
                check(stitcher.add(chunks.unsqueeze(1)))
        for chunks in stream.finish():
            check(stitcher.add(chunks.unsqueeze(1), length=x.shape[-1]))
        check(stitcher.finish(x.shape[-1]))
    elapsed = time.perf_counter() - start
    assert done == x.shape[-1], (done, x.shape)
    return elapsed, error


def _splifft(x: object, chunk: int, hop: int, batch: int) -> tuple[float, float]:
    import torch
    from splifft.core import generate_chunks, stitch_chunks

    assert isinstance(x, torch.Tensor)
    start = time.perf_counter()
    with torch.inference_mode():
        window = torch.hann_window(chunk)
        outs = [c.unsqueeze(1) for c in generate_chunks(x, chunk, hop, batch)]
        y = stitch_chunks(outs, 1, chunk, hop, x.shape[-1], window=window)
    elapsed = time.perf_counter() - start
    return elapsed, float((y[0] - x).abs().max())


def _child(impl: str, minutes: float, chunk: int, hop: int, batch: int, repeat: int) -> None:
    x = _track(minutes)
    base = _rss_mib()
    fn = _ours if impl == "ours" else _splifft
    times, error = [], 0.0
    for _ in range(repeat):
        seconds, error = fn(x, chunk, hop, batch)
        times.append(seconds)
    print(
        json.dumps(
            {
                "seconds": min(times),
                "peak_mib": _rss_mib(),
                "input_mib": base,
                "max_abs_error": error,
            }
        )
    )


def _edge_cases() -> None:
    """Correctness where the reference breaks: a clip shorter than chunk - hop, and overlap 0
    with a hann window. Prints max |output - input| for identity, or the exception."""
    import torch

    cases = [
        ("1 s clip, 8 s chunks, overlap 0.5", 1.0, 8.0, 0.5),
        ("30 s, 8 s chunks, overlap 0, hann", 30.0, 8.0, 0.0),
        ("1 sample, 8 s chunks, overlap 0.75", 1 / RATE, 8.0, 0.75),
    ]
    print()
    print(f"{'edge case':<36} | {'ours max err':>12} | splifft")
    for label, seconds, chunk_s, overlap in cases:
        x = torch.rand(2, max(1, round(seconds * RATE)), generator=torch.Generator().manual_seed(1))
        chunk = round(chunk_s * RATE)
        hop = max(1, round(chunk * (1 - overlap)))
        _, ours = _ours(x, chunk, hop, 4)
        try:
            _, ref = _splifft(x, chunk, hop, 4)
            theirs = f"max err {ref:.1e}"
        except Exception as exc:  # the point is to show what the reference does
            theirs = f"raises {type(exc).__name__}: {str(exc).splitlines()[0][:60]}"
        print(f"{label:<36} | {ours:>12.1e} | {theirs}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[4, 10, 60])
    parser.add_argument("--chunk-seconds", type=float, default=8.0)
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3, help="best of N per measurement")
    parser.add_argument("--child", nargs=2, metavar=("IMPL", "MINUTES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    chunk = round(args.chunk_seconds * RATE)
    hop = max(1, round(chunk * (1 - args.overlap)))
    if args.child:
        _child(args.child[0], float(args.child[1]), chunk, hop, args.batch_size, args.repeat)
        return

    import torch

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; stereo {RATE} Hz; "
        f"chunk {chunk} ({args.chunk_seconds} s), hop {hop}, batch {args.batch_size}, hann; "
        f"best of {args.repeat}"
    )
    header = (
        f"{'minutes':>7} | {'ours s':>8} {'splifft s':>9} {'speedup':>7} | "
        f"{'ours MiB':>8} {'splifft MiB':>11} {'input MiB':>9} | {'ours err':>8} "
        f"{'splifft err':>11}"
    )
    print(header)
    print("-" * len(header))
    for minutes in args.minutes:
        results = {}
        for impl in ("ours", "splifft"):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    impl,
                    str(minutes),
                    "--chunk-seconds",
                    str(args.chunk_seconds),
                    "--overlap",
                    str(args.overlap),
                    "--batch-size",
                    str(args.batch_size),
                    "--repeat",
                    str(args.repeat),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            results[impl] = json.loads(out.stdout.strip().splitlines()[-1])
        o, s = results["ours"], results["splifft"]
        print(
            f"{minutes:>7g} | {o['seconds']:>8.3f} {s['seconds']:>9.3f} "
            f"{s['seconds'] / o['seconds']:>6.2f}x | {o['peak_mib']:>8.0f} "
            f"{s['peak_mib']:>11.0f} {o['input_mib']:>9.0f} | {o['max_abs_error']:>8.1e} "
            f"{s['max_abs_error']:>11.1e}"
        )
    _edge_cases()


if __name__ == "__main__":
    main()
