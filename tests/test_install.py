"""The install targets: the lock pins what pyproject promises, and the slim (API-only) set really
runs the API without torch.

The slim check runs `mss-jobs api` in a child process either from a real torch-free environment
(`MSS_SLIM_PYTHON`, which `.ci/run` points at `.venv-api` from `bash .ci/setup api`) or, when
that is not set, from this interpreter with every package of the worker extra made unimportable.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from real_services import RedisServer

ROOT = Path(__file__).resolve().parent.parent
TORCH_STACK = ("torch", "torchaudio", "numpy", "triton")
# Import names of everything only the worker extra brings: what the emulated slim set hides.
WORKER_ONLY = ("torch", "torchaudio", "numpy", "soundfile", "av", "demucs", "safetensors", "yaml")
REDIS_INDEX = 14
"""Shared with the Flower tests: this test uses its own queue names and flushes nothing."""


def _lock() -> dict[str, dict[str, object]]:
    """Lock entries by package name (a name locked at two versions keeps one: only names and
    dependency edges matter here)."""
    return {p["name"]: p for p in tomllib.loads((ROOT / "uv.lock").read_text())["package"]}


def _closure(lock: dict[str, dict[str, object]], roots: list[str]) -> set[str]:
    """Every package reachable from `roots` through the lock, markers ignored (an over-count)."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        package = lock[name]
        deps = list(package.get("dependencies", []))  # type: ignore[call-overload]
        for extra in [e for d in deps for e in d.get("extra", [])]:
            deps += package["optional-dependencies"][extra]  # type: ignore[index]
        todo += [dep["name"] for dep in deps]
    return seen


def _direct(group: str) -> list[dict[str, object]]:
    project = _lock()["mss-jobs"]
    if group == "base":
        return project["dependencies"]  # type: ignore[return-value]
    return project["optional-dependencies"][group]  # type: ignore[index,no-any-return]


def test_slim_set_in_the_lock_has_no_torch() -> None:
    lock = _lock()
    roots = [d["name"] for d in _direct("base")]  # type: ignore[misc]
    for dep in _direct("base"):
        for extra in dep.get("extra", []):  # type: ignore[attr-defined]
            roots += [d["name"] for d in lock[dep["name"]]["optional-dependencies"][extra]]  # type: ignore[index,call-overload]
    slim = _closure(lock, roots)
    assert {"fastapi", "sqlalchemy", "celery", "psycopg", "boto3", "flower"} <= slim
    heavy = sorted(p for p in slim if p in TORCH_STACK or p.startswith("nvidia-"))
    assert heavy == []


def test_worker_set_pins_torch_and_torchaudio_exactly() -> None:
    lock = _lock()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = dict(
        m.groups()
        for r in pyproject["optional-dependencies"]["worker"]
        if (m := re.fullmatch(r"(torch|torchaudio)==([0-9.]+)", r))
    )
    assert pins == {"torch": "2.11.0", "torchaudio": "2.11.0"}
    for name, version in pins.items():
        assert lock[name]["version"] == version
    assert {"torch", "torchaudio"} <= {d["name"] for d in _direct("worker")}  # type: ignore[misc]


# --- the slim API, served for real -----------------------------------------------------------

_BLOCK_TORCH = textwrap.dedent(
    """
    import importlib.abc, sys
    class _Absent(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {blocked!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}} (slim install)", name=name)
            return None
    sys.meta_path.insert(0, _Absent())
    from mss_jobs.cli import main
    main(sys.argv[1:], prog_name="mss-jobs")
    """
).format(blocked=set(WORKER_ONLY))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def slim_api(tmp_path: Path, redis_server: RedisServer) -> Iterator[tuple[str, Path]]:
    broker_url = redis_server.url(REDIS_INDEX)
    lanes = f"slim-{uuid.uuid4().hex[:8]}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MSS_")},
        "MSS_DATA_DIR": str(tmp_path / "data"),
        "MSS_BROKER_URL": broker_url,
        "MSS_QUEUE_INTERACTIVE": f"{lanes}-interactive",
        "MSS_QUEUE_BULK": f"{lanes}-bulk",
    }
    slim_python = os.environ.get("MSS_SLIM_PYTHON")
    port = _free_port()
    argv = ["api", "--port", str(port), "--log-level", "warning"]
    command = (
        [slim_python, "-c", "from mss_jobs.cli import main; main()", *argv]
        if slim_python
        else [sys.executable, "-c", _BLOCK_TORCH, *argv]
    )
    log = tmp_path / "api.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"the slim API exited {process.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the slim API did not answer in 60 s:\n{log.read_text()}")
            time.sleep(0.2)
        yield url, tmp_path / "data" / "storage"
    finally:
        process.terminate()
        process.wait(timeout=30)
        client = redis.Redis.from_url(broker_url)
        client.delete(f"{lanes}-interactive", f"{lanes}-bulk")
        client.close()


@pytest.mark.services
def test_slim_api_serves_jobs_without_torch(slim_api: tuple[str, Path]) -> None:
    url, storage = slim_api
    with httpx.Client(base_url=url, timeout=10) as client:
        assert client.get("/v1/jobs").status_code == 200
        created = client.post(
            "/v1/jobs", json={"input": f"file://{storage}/in/song.flac", "model": "dsp-hpss"}
        )
        assert created.status_code == 202, created.text
        job = client.get(f"/v1/jobs/{created.json()['id']}").json()
    assert job["status"] == "queued"
    assert job["model"] == "dsp-hpss"
