"""Seconds of audio separated per second by a BS-RoFormer (random weights) through our streaming
pipeline and through splifft's InferenceEngine, same device, weights, chunk, overlap, batch, dtype.

Ours: `build_bs_roformer` from viperx's MSST `model:` section (BS-RoFormer 1297; or a small
preset with the same bands for CPU), wrapped in `NeuralSeparator`, run by `separate_tensor`.
splifft: its own `BSRoformer` from the equivalent splifft config, given the same state dict with
a strict `load_state_dict`, run by its public `InferenceEngine.run` (the engine is built directly,
as `from_pretrained` would build it, because splifft's checkpoint loader imports `torchcodec`,
which is not installed here). Both get the same synthetic stereo mixture (`synthesize_demo`) on
the CPU and hand back CPU stems; splifft's io device is the model's device (its default).

Each repeat runs both, ours first; figures are medians over `--repeats` after `--warmup` untimed
runs of each. Peak memory is the growth during one run: on CUDA `torch.cuda.max_memory_allocated`
minus what was allocated before it (both models' weights stay resident); on the CPU the process's
peak RSS (VmHWM, reset through /proc/self/clear_refs) minus its RSS before the run.

    .venv/bin/python benchmarks/bench_roformer.py --size small --seconds 24 --batch 2 --repeats 3
    .venv/bin/python benchmarks/bench_roformer.py --device cuda --dtype bfloat16 --size viperx \\
        --seconds 300 --batch 4 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mss_jobs.core.pipeline import SeparationSettings, separate_tensor
from mss_jobs.demo import synthesize_demo
from mss_jobs.models.config import ModelConfig
from mss_jobs.models.neural import NeuralSeparator, parse_dtype
from mss_jobs.models.nn.roformer import DEFAULT_FREQS_PER_BANDS, build_bs_roformer

RATE = 44100
STEM = "vocals"

# The `model:` section of viperx's BS-RoFormer 1297 (MSST configs/viperx/
# model_bs_roformer_ep_317_sdr_12.9755.yaml), as in tests/models/test_roformer.py; the loss keys
# are training-only and left out.
VIPERX: dict[str, Any] = {
    "dim": 512,
    "depth": 12,
    "stereo": True,
    "num_stems": 1,
    "time_transformer_depth": 1,
    "freq_transformer_depth": 1,
    "linear_transformer_depth": 0,
    "freqs_per_bands": DEFAULT_FREQS_PER_BANDS,
    "dim_head": 64,
    "heads": 8,
    "attn_dropout": 0.1,
    "ff_dropout": 0.1,
    "flash_attn": True,
    "dim_freqs_in": 1025,
    "stft_n_fft": 2048,
    "stft_hop_length": 441,
    "stft_win_length": 2048,
    "stft_normalized": False,
    "mask_estimator_depth": 2,
}
SIZES: dict[str, dict[str, Any]] = {
    "viperx": VIPERX,
    # Same bands, STFT and chunk; a narrow, shallow trunk so a CPU run takes seconds.
    "small": {**VIPERX, "dim": 64, "depth": 2, "heads": 4, "dim_head": 32},
}
VIPERX_CHUNK = 352800  # audio.chunk_size: 8 s at 44.1 kHz

# MSST keys splifft's BSRoformerParams take under the same name.
_SPLIFFT_KEYS = (
    "dim",
    "depth",
    "stereo",
    "time_transformer_depth",
    "freq_transformer_depth",
    "linear_transformer_depth",
    "dim_head",
    "heads",
    "attn_dropout",
    "ff_dropout",
    "flash_attn",
    "stft_hop_length",
    "mask_estimator_depth",
)


def splifft_config(
    params: dict[str, Any], *, chunk: int, overlap: float, batch: int, dtype: torch.dtype
) -> dict[str, Any]:
    """splifft's config document for the same model and run settings."""
    return {
        "identifier": "bench-bs-roformer",
        "model_type": "bs_roformer",
        "model": {
            "chunk_size": chunk,
            "output_stem_names": [STEM],
            "band_config": {"kind": "fixed", "freqs_per_bands": list(params["freqs_per_bands"])},
            **{key: params[key] for key in _SPLIFFT_KEYS},
        },
        "transform": {
            "kind": "stft",
            "n_fft": params["stft_n_fft"],
            "hop_length": params["stft_hop_length"],
            "win_length": params["stft_win_length"],
        },
        "inference": {
            "batch_size": batch,
            "use_autocast_dtype": None if dtype == torch.float32 else str(dtype).split(".")[-1],
        },
        "normalization": {"enabled": False},
        "waveform_chunking": {
            "overlap_ratio": overlap,
            "window_shape": "hann",
            "padding_mode": "reflect",
        },
    }


class PeakMemory:
    """Growth of peak memory during one `measure` call, in MiB (see the module docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def measure(self, run: Callable[[], Any]) -> tuple[Any, float]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            before = torch.cuda.memory_allocated(self.device)
            result = run()
            torch.cuda.synchronize(self.device)
            return result, (torch.cuda.max_memory_allocated(self.device) - before) / 2**20
        before = _status_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        result = run()
        return result, (_status_kib("VmHWM") - before) / 1024


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def timed(run: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    """(result, wall seconds), synchronized with the device."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--size", default="small", choices=sorted(SIZES))
    parser.add_argument("--seconds", type=float, default=24.0, help="length of the test track")
    parser.add_argument("--chunk", type=int, default=VIPERX_CHUNK, help="chunk size in samples")
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=2, help="chunks per forward pass")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each (>= 1)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs of each first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (CPU)")
    args = parser.parse_args()
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = parse_dtype(args.dtype)
    if device.type != "cuda" and dtype != torch.float32:
        parser.error("reduced precision is CUDA-only here (our separator runs float32 elsewhere)")

    params = SIZES[args.size]
    torch.manual_seed(args.seed)
    module = build_bs_roformer(params)
    parameters = sum(p.numel() for p in module.parameters())
    config = ModelConfig(
        architecture="bs_roformer",
        params=dict(params),
        sample_rate=RATE,
        channels=2,
        stems=(STEM,),
        chunk_size=args.chunk,
        overlap=args.overlap,
        batch_size=args.batch,
        normalize=False,
    )
    ours = NeuralSeparator.from_config(
        module, config, name=f"bs_roformer-{args.size}", device=device, dtype=dtype
    )
    settings = SeparationSettings.for_model(ours)
    assert settings.chunk_size == args.chunk
    assert settings.batch_size == args.batch

    from splifft.config import into_config
    from splifft.inference import InferenceEngine
    from splifft.models.bs_roformer import BSRoformer, BSRoformerParams

    # splifft has no rotary `freqs` buffers in its state dict (it recomputes them).
    state = {k: v for k, v in module.state_dict().items() if not k.endswith("rotary_embed.freqs")}
    reference_config = into_config(
        splifft_config(
            params, chunk=args.chunk, overlap=args.overlap, batch=args.batch, dtype=dtype
        )
    )
    reference_params = reference_config.model.to_concrete(BSRoformerParams)
    reference = BSRoformer(reference_params)
    reference.load_state_dict(state, strict=True)  # the same weights, every key
    engine = InferenceEngine(
        config=reference_config,
        model=reference.to(device).eval(),
        model_params_concrete=reference_params,
        model_device=device,
        io_device=device,
        model_input_dtype=torch.float32,
    )

    mixture = synthesize_demo(args.seconds, sample_rate=RATE, seed=args.seed).mixture
    memory = PeakMemory(device)

    def run_ours() -> torch.Tensor:
        return separate_tensor(mixture, separator=ours, settings=settings)[STEM].cpu()

    def run_splifft() -> torch.Tensor:
        out: torch.Tensor = engine.run(mixture).outputs[STEM]
        return out.cpu()

    runners = {"ours (pipeline)": run_ours, "splifft InferenceEngine": run_splifft}
    outputs: dict[str, torch.Tensor] = {}
    for _ in range(args.warmup):
        outputs = {name: run() for name, run in runners.items()}
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    peaks: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.repeats):
        for name, run in runners.items():
            (outputs[name], wall), peak = memory.measure(lambda run=run: timed(run, device))
            seconds[name].append(wall)
            peaks[name].append(peak)

    ours_out, ref_out = outputs.values()
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{torch.get_num_threads()} threads"
    )
    diff = (ours_out - ref_out).abs().max().item()
    print(
        f"BS-RoFormer {args.size} ({parameters / 1e6:.1f} M parameters), random weights; "
        f"{args.seconds:g} s stereo at {RATE} Hz; chunk {args.chunk} ({args.chunk / RATE:g} s), "
        f"overlap {args.overlap:g}, batch {args.batch}, {args.dtype}, {device} "
        f"({where}); "
        f"median of {args.repeats} after {args.warmup} warm-up run(s)"
    )
    print("| implementation | seconds | audio s / s | peak memory growth MiB |")
    print("|---|---:|---:|---:|")
    for name in runners:
        wall = statistics.median(seconds[name])
        print(
            f"| {name} | {wall:.2f} | {args.seconds / wall:.2f} | "
            f"{statistics.median(peaks[name]):.0f} |"
        )
    print(
        f"max |ours - splifft| = {diff:.3g} (output peak {ref_out.abs().max().item():.3g}, "
        f"shapes {tuple(ours_out.shape)} / {tuple(ref_out.shape)})"
    )


if __name__ == "__main__":
    main()
