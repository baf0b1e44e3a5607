"""Peak RSS and wall time of the whole `mss-jobs separate` command (model `identity`) for tracks of
4, 10 and 60 minutes, side by side with a whole-track reference in the same run.

The reference is what a typical separation script does: read the file whole (soundfile), chunk
and stitch with splifft's generate_chunks/stitch_chunks, write the stem. Each measurement is its
own process; peak RSS is that process's ru_maxrss. Target: ours at 60 min ≤ 1.25 × ours at 4 min.

    .venv/bin/python benchmarks/bench_separate_memory.py [--minutes 4 10 60] [--keep DIR]
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RATE = 44100
REPO = Path(__file__).resolve().parents[1]

_REFERENCE = """
import sys, soundfile as sf, torch
from splifft.core import generate_chunks, stitch_chunks
src, dst = sys.argv[1], sys.argv[2]
data, rate = sf.read(src, dtype="float32", always_2d=True)
x = torch.from_numpy(data.T.copy())
chunk, hop = 8 * rate, 4 * rate
with torch.inference_mode():
    outs = [c.unsqueeze(1) for c in generate_chunks(x, chunk, hop, 8)]
    y = stitch_chunks(outs, 1, chunk, hop, x.shape[-1], window=torch.hann_window(chunk))
sf.write(dst, y[0].T.numpy(), rate, subtype="PCM_24")
"""


def write_track(path: Path, minutes: float) -> None:
    """A stereo 16-bit wav of `minutes`, synthesized and written block by block."""
    import numpy as np
    import soundfile as sf

    total = int(minutes * 60 * RATE)
    rng = np.random.default_rng(0)
    block = 1 << 20
    with sf.SoundFile(path, "w", samplerate=RATE, channels=2, subtype="PCM_16") as f:
        for start in range(0, total, block):
            n = min(block, total - start)
            t = (np.arange(start, start + n) / RATE)[:, None]
            tone = 0.3 * np.sin(2 * math.pi * np.array([220.0, 330.0]) * t)
            f.write((tone + 0.05 * rng.standard_normal((n, 2))).astype(np.float32))


def measure(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of `cmd` run in a fresh wrapper process."""
    wrapper = (
        "import resource, subprocess, sys, time\n"
        "t = time.perf_counter(); subprocess.run(sys.argv[1:], check=True, "
        "stdout=subprocess.DEVNULL)\n"
        "print(time.perf_counter() - t, "
        "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", wrapper, *cmd], check=True, capture_output=True, text=True
    )
    seconds, mib = out.stdout.split()
    return float(seconds), float(mib)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[4, 10, 60])
    parser.add_argument("--format", default="flac", choices=["wav", "flac", "mp3"])
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--keep", type=Path, help="directory for tracks (default: a temp dir)")
    args = parser.parse_args()
    cli = str(Path(sys.executable).with_name("mss-jobs"))
    work = args.keep or Path(tempfile.mkdtemp(prefix="mss-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"identity model, stereo {RATE} Hz 16-bit wav in, {args.format} out; "
        f"ours: mss-jobs separate (chunk 8 s, overlap 0.5, batch 8)"
    )
    header = (
        f"{'minutes':>7} | {'ours s':>7} {'ours MiB':>9} | {'ref s':>7} {'ref MiB':>8} | "
        f"{'x realtime':>10}"
    )
    print(header)
    print("-" * len(header))
    rows: dict[float, float] = {}
    try:
        for minutes in args.minutes:
            track = work / f"track_{minutes:g}min.wav"
            if not track.exists():
                started = time.perf_counter()
                write_track(track, minutes)
                print(f"  (wrote {track.name} in {time.perf_counter() - started:.1f} s)")
            out = work / f"out_{minutes:g}"
            seconds, mib = measure(
                [
                    cli,
                    "separate",
                    str(track),
                    "-o",
                    str(out),
                    "--model",
                    "identity",
                    "--format",
                    args.format,
                    "--chunk-seconds",
                    "8",
                    "--overlap",
                    "0.5",
                    "--batch-size",
                    "8",
                    "--quiet",
                ]
            )
            rows[minutes] = mib
            ref_s, ref_mib = (math.nan, math.nan)
            if not args.no_reference:
                ref_s, ref_mib = measure(
                    [sys.executable, "-c", _REFERENCE, str(track), str(work / "ref.flac")]
                )
            print(
                f"{minutes:>7g} | {seconds:>7.1f} {mib:>9.0f} | {ref_s:>7.1f} {ref_mib:>8.0f} | "
                f"{minutes * 60 / seconds:>9.1f}x"
            )
            shutil.rmtree(out, ignore_errors=True)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    if len(rows) > 1:
        low, high = min(rows), max(rows)
        print(
            f"peak RSS ratio ours {high:g} min / {low:g} min: {rows[high] / rows[low]:.3f} "
            "(target ≤ 1.25)"
        )


if __name__ == "__main__":
    main()
