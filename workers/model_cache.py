"""Per-process model cache: each worker process loads a model once per device and reuses it.

Loading can take seconds (checkpoints) and gigabytes (GPU memory), so a separator outlives the
task that first needed it. The lock only matters for threaded pools; prefork children each hold
their own cache (a fork gives a child a copy, never a share, of the parent's).

Neural models read their files through a model store built from the settings (`MSS_MODEL_DIR`,
pulling on demand or not, allowed sources) and run with the configured compute dtype,
`torch.compile` and test-time augmentation. A first job for a model not yet pulled downloads
it here (when allowed); the lock makes a second thread wait for that download instead of
starting its own.
"""

from __future__ import annotations

import threading

import torch

from mss_jobs.models.base import Separator
from mss_jobs.models.neural import parse_dtype
from mss_jobs.models.registry import create_separator, get_spec
from mss_jobs.models.weights import ModelStore, model_store_from_settings
from mss_jobs.runner import resolve_device
from mss_jobs.settings import Settings, get_settings

__all__ = ["ModelCache"]


class ModelCache:
    """Separators keyed by (model name, device), created on first use.

    `settings` configure neural models; None reads the process settings when the first neural
    model is loaded (built-in models never need them).
    """

    def __init__(self, *, device: str = "auto", settings: Settings | None = None) -> None:
        self.device: torch.device = resolve_device(device)
        self._settings = settings
        self._store: ModelStore | None = None
        self._models: dict[tuple[str, str], Separator] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Separator:
        """The separator `name` on this cache's device; raises `UnknownModelError`, and for
        neural models `ModelUnavailableError` / `ModelDownloadError` / `CheckpointError`."""
        key = (name, str(self.device))
        with self._lock:
            separator = self._models.get(key)
            if separator is None:
                separator = self._create(name)
                self._models[key] = separator
            return separator

    def _create(self, name: str) -> Separator:
        if get_spec(name).kind != "neural":
            return create_separator(name, device=self.device)
        settings = self._settings or get_settings()
        if self._store is None:
            self._store = model_store_from_settings(settings)
        dtype = parse_dtype(settings.model_dtype) if self.device.type == "cuda" else torch.float32
        return create_separator(
            name,
            device=self.device,
            store=self._store,
            dtype=dtype,
            compile=settings.model_compile,
            tta=settings.model_tta,
        )

    def __len__(self) -> int:
        return len(self._models)
