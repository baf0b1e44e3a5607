"""Routes of the `models` resource: what can be asked for, read from the torch-free catalog."""

from __future__ import annotations

from fastapi import APIRouter

from mss_jobs.api.deps import SettingsDep
from mss_jobs.api.schemas import ModelOut, ModelsOut
from mss_jobs.models.catalog import list_model_infos

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("")
def list_models(settings: SettingsDep) -> ModelsOut:
    """The built-in models with their stems, and the model used when a job names none."""
    return ModelsOut(
        models=[
            ModelOut(name=info.name, description=info.description, stems=list(info.stems))
            for info in list_model_infos()
        ],
        default=settings.default_model,
    )
