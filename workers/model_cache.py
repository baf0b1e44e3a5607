"""Per-process model cache: each worker process loads a model once per device and reuses it.

Loading can take seconds (checkpoints) and gigabytes (GPU memory), so a separator outlives the
task that first needed it. The lock only matters for threaded pools; prefork children each hold
their own cache (a fork gives a child a copy, never a share, of the parent's).
"""

from __future__ import annotations

import threading

import torch

from mss_jobs.models.base import Separator
from mss_jobs.models.registry import create_separator
from mss_jobs.runner import resolve_device

__all__ = ["ModelCache"]


class ModelCache:
    """Separators keyed by (model name, device), created on first use."""

    def __init__(self, *, device: str = "auto") -> None:
        self.device: torch.device = resolve_device(device)
        self._models: dict[tuple[str, str], Separator] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Separator:
        """The separator `name` on this cache's device; raises `UnknownModelError`."""
        key = (name, str(self.device))
        with self._lock:
            separator = self._models.get(key)
            if separator is None:
                separator = create_separator(name, device=self.device)
                self._models[key] = separator
            return separator

    def __len__(self) -> int:
        return len(self._models)
