"""Edge: reading checkpoint files into plain state dicts, safely.

Reading (`load_state_dict`) goes through `torch.load(weights_only=True)`: tensors, containers
and plain values only. A pickle that names other globals (a class, a function) would run code on
load, so it is refused with the global it asked for; `.safetensors` files hold no code at all.
Training checkpoints are unwrapped (`state_dict`, `model`, `state` containers) and the
`module.` / `model.` prefixes that DataParallel and Lightning add are dropped.

torch (and safetensors) are imported only inside the functions: `mss_jobs.models.weights`
re-exports these names, and the API imports that module and must stay torch-free.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from mss_jobs.errors import CheckpointError

if TYPE_CHECKING:
    import torch

__all__ = ["CHECKPOINT_SUFFIXES", "extract_state_dict", "load_state_dict"]

CHECKPOINT_SUFFIXES: Final = (".ckpt", ".pt", ".pth", ".th", ".bin", ".safetensors")
_PICKLE_SUFFIXES: Final = (".ckpt", ".pt", ".pth", ".th", ".bin")
_CONTAINER_KEYS: Final = ("state_dict", "model_state_dict", "model", "state", "module")
_STRIPPED_PREFIXES: Final = ("module.", "model.")
_UNSUPPORTED_GLOBAL_RE = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The plain state dict stored in `path` (on the CPU), whatever container it comes in.

    `.safetensors` through the `safetensors` package; `.ckpt`/`.pt`/`.pth`/`.th`/`.bin` through
    `torch.load(weights_only=True)` (refusing pickles that need other globals). Raises
    `CheckpointError` naming the file.
    """
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _load_safetensors(path)
    if suffix not in _PICKLE_SUFFIXES:
        raise CheckpointError(
            f"cannot read checkpoint {path}: unknown suffix {suffix!r}; expected one of "
            f"{', '.join(CHECKPOINT_SUFFIXES)}"
        )
    return extract_state_dict(_load_pickle(path), source=str(path))


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"cannot read safetensors file {path}: {exc}") from exc
    return extract_state_dict(tensors, source=str(path))


def _load_pickle(path: Path) -> Any:
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _UNSUPPORTED_GLOBAL_RE.search(str(exc))
        if found is None and "Weights only load failed" not in str(exc):
            raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
        named = f" (it asks for {found.group(1)})" if found else ""
        raise CheckpointError(
            f"refusing to load {path}: it is a pickle that needs Python globals beyond tensors"
            f"{named}, and loading it would run code from the file. Convert it to a plain "
            "state dict or .safetensors (demucs .th packages have their own loader)"
        ) from exc
    except Exception as exc:  # a corrupt pickle fails in any way (IndexError, KeyError …)
        raise CheckpointError(
            f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}"
        ) from exc


def extract_state_dict(obj: object, *, source: str) -> dict[str, torch.Tensor]:
    """Unwrap a loaded checkpoint into `{parameter name: tensor}`.

    Descends through `state_dict` / `model_state_dict` / `model` / `state` / `module` containers
    until a mapping holds tensors; drops non-tensor entries beside them (an `epoch`, a
    `_metadata`); then strips a `module.` or `model.` prefix that every key shares.
    """
    import torch

    current = obj
    for _ in range(4):
        if not isinstance(current, Mapping):
            break
        if any(isinstance(value, torch.Tensor) for value in current.values()):
            break
        inner = next(
            (current[key] for key in _CONTAINER_KEYS if isinstance(current.get(key), Mapping)),
            None,
        )
        if inner is None:
            break
        current = inner
    if not isinstance(current, Mapping):
        raise CheckpointError(f"{source} holds a {type(current).__name__}, not a state dict")
    tensors = {str(key): value for key, value in current.items() if isinstance(value, torch.Tensor)}
    if not tensors:
        keys = ", ".join(sorted(map(str, current))[:8])
        raise CheckpointError(f"{source} holds no tensors (top-level keys: {keys or 'none'})")
    return _strip_common_prefix(tensors)


def _strip_common_prefix(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    changed = True
    while changed:
        changed = False
        for prefix in _STRIPPED_PREFIXES:
            if all(key.startswith(prefix) for key in tensors):
                tensors = {key.removeprefix(prefix): value for key, value in tensors.items()}
                changed = True
    return tensors
