"""Routes of the `models` resource: what can be asked for, read from the torch-free catalog."""

from __future__ import annotations

from fastapi import APIRouter

from mss_jobs.api.deps import SettingsDep
from mss_jobs.api.schemas import ModelOut, ModelsOut
from mss_jobs.models.catalog import is_available, list_model_infos

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("")
def list_models(settings: SettingsDep) -> ModelsOut:
    """Every model with its stems, whether its files are on this service (`available`, from
    the API's `MSS_MODEL_DIR`, which should be the workers' shared one), and the model used
    when a job names none."""
    return ModelsOut(
        models=[
            ModelOut(
                name=info.name,
                description=info.description,
                stems=list(info.stems),
                kind=info.kind,
                architecture=info.architecture,
                available=is_available(info.name, model_dir=settings.model_dir),
                license=info.license,
            )
            for info in list_model_infos()
        ],
        default=settings.default_model,
    )
