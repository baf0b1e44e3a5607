"""Smoke check of an installed environment: every native extension loads and does one small thing.

    .venv/bin/python .ci/smoke.py          the full set (worker): torch, torchaudio, soundfile,
                                           PyAV, psycopg; torch/torchaudio equal to their pins
    .venv-api/bin/python .ci/smoke.py api  the slim set: psycopg loads, torch and numpy absent

Prints one line per library with its version; the first failure names the library and exits 1,
in seconds, instead of deep inside the test run (a torchaudio built for another torch fails at
its first native call with an undefined symbol).
"""

from __future__ import annotations

import importlib.util
import io
import re
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def exact_pins() -> dict[str, str]:
    """`name==version` entries of pyproject's worker extra (torch, torchaudio)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for requirement in project["optional-dependencies"]["worker"]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([0-9][0-9.]*)", requirement.strip())
        if match:
            pins[match[1].lower()] = match[2]
    return pins


def release(version: str) -> str:
    """`2.11.0+cu130` → `2.11.0`: the local label names the build, not the release."""
    return version.split("+", 1)[0]


def check_torch() -> str:
    import torch

    signal = torch.sin(torch.linspace(0.0, 100.0, 4096))
    spec = torch.stft(signal, 512, window=torch.hann_window(512), return_complex=True)
    if spec.shape[0] != 257:
        raise RuntimeError(f"stft gave shape {tuple(spec.shape)}")
    cuda = f"cuda build {torch.version.cuda}, cuda available: {torch.cuda.is_available()}"
    return f"{torch.__version__} ({cuda})"


def check_torchaudio() -> str:
    import torch
    import torchaudio

    # The first native call is what fails when torchaudio was built against another torch.
    out = torchaudio.functional.resample(torch.zeros(1, 441), 44100, 48000)
    if out.shape[-1] != 480:
        raise RuntimeError(f"resample gave {out.shape[-1]} samples, expected 480")
    return str(torchaudio.__version__)


def check_soundfile() -> str:
    import numpy as np
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros((64, 2), dtype="float32"), 44100, format="FLAC")
    buffer.seek(0)
    data, rate = soundfile.read(buffer)
    if data.shape != (64, 2) or rate != 44100:
        raise RuntimeError(f"FLAC round trip gave {data.shape} at {rate} Hz")
    if "MP3" not in soundfile.available_formats():
        raise RuntimeError("libsndfile was built without MP3")
    return f"{soundfile.__version__} (libsndfile {soundfile.__libsndfile_version__})"


def check_av() -> str:
    import av

    av.codec.Codec("aac", "r")  # raises when FFmpeg has no AAC decoder
    return f"{av.__version__} (FFmpeg libavcodec {av.library_versions['libavcodec']})"


def check_psycopg() -> str:
    import psycopg

    return f"{psycopg.__version__} ({psycopg.pq.__impl__} libpq {psycopg.pq.version()})"


def check_pins() -> str:
    from importlib.metadata import version

    pins = exact_pins()
    found = {name: release(version(name)) for name in pins}
    wrong = {name: got for name, got in found.items() if got != pins[name]}
    if wrong:
        detail = ", ".join(f"{n} {got} (pinned {pins[n]})" for n, got in wrong.items())
        raise RuntimeError(f"installed versions differ from pyproject's pins: {detail}")
    return ", ".join(f"{name}=={got}" for name, got in found.items())


def check_absent(*modules: str) -> Callable[[], str]:
    def check() -> str:
        present = [m for m in modules if importlib.util.find_spec(m) is not None]
        if present:
            raise RuntimeError(f"the slim set must not contain {', '.join(present)}")
        return f"absent: {', '.join(modules)}"

    return check


FULL = {
    "torch": check_torch,
    "torchaudio": check_torchaudio,
    "soundfile": check_soundfile,
    "av": check_av,
    "psycopg": check_psycopg,
    "pins": check_pins,
}
API = {"psycopg": check_psycopg, "torch-free": check_absent("torch", "torchaudio", "numpy")}


def main(argv: list[str]) -> int:
    checks = API if argv[1:] == ["api"] else FULL
    for name, check in checks.items():
        try:
            detail = check()
        except Exception as error:  # report any failure as this library's, then stop
            print(f"smoke: FAILED {name}: {type(error).__name__}: {error}", file=sys.stderr)
            return 1
        print(f"smoke: {name:<11} {detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
