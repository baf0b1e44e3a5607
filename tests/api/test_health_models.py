"""Liveness, readiness, the model list, OpenAPI, and the API's import weight (no torch)."""

from __future__ import annotations

import httpx
from fresh_python import assert_python_succeeds

from mss_jobs.settings import Settings


def test_api_never_imports_torch() -> None:
    code = (
        "import sys\n"
        "import mss_jobs.api.main\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'workers.tasks' not in sys.modules, 'workers.tasks was imported'\n"
    )
    assert_python_succeeds(code, timeout=60)


def test_healthz(client: httpx.Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_with_every_service_up(client: httpx.Client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ready"] is True
    assert {name for name, check in body["checks"].items() if check["ok"]} == {
        "database",
        "broker",
        "storage",
    }


def test_readyz_names_a_broker_on_a_closed_port(broker_down_client: httpx.Client) -> None:
    response = broker_down_client.get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["broker"]["ok"] is False
    assert checks["broker"]["detail"]
    assert checks["database"]["ok"] is True
    assert checks["storage"]["ok"] is True


def test_models_lists_the_builtin_models(client: httpx.Client) -> None:
    response = client.get("/v1/models")
    assert response.status_code == 200
    models = {model["name"]: model for model in response.json()["models"]}
    assert models["identity"]["stems"] == ["mixture"]
    assert models["dsp-hpss"]["stems"] == ["harmonic", "percussive"]
    assert models["dsp-hpss"]["kind"] == "builtin"
    assert models["dsp-hpss"]["available"] is True
    assert response.json()["default"] == "dsp-hpss"


def test_models_lists_the_community_models_with_availability(
    client: httpx.Client, settings: Settings
) -> None:
    from mss_jobs.models.known import KNOWN_MODELS
    from mss_jobs.models.weights import cache_path

    models = {model["name"]: model for model in client.get("/v1/models").json()["models"]}
    for name, known in KNOWN_MODELS.items():
        assert models[name]["kind"] == "neural"
        assert models[name]["architecture"] == known.architecture
        assert models[name]["stems"] == list(known.stems)
        assert models[name]["license"]
        assert models[name]["available"] is False  # the test's model dir is empty

    # A model is available once every file it needs is in the cache.
    pulled = [cache_path(settings.model_dir, r) for r in KNOWN_MODELS["htdemucs"].resources]
    try:
        for path in pulled:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"weights")
        models = {model["name"]: model for model in client.get("/v1/models").json()["models"]}
        assert models["htdemucs"]["available"] is True
        assert models["htdemucs_ft"]["available"] is False
    finally:
        for path in pulled:
            path.unlink(missing_ok=True)


def test_openapi_documents_the_routes(client: httpx.Client) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in ("/v1/jobs", "/v1/jobs/upload", "/v1/jobs/{job_id}", "/v1/models", "/readyz"):
        assert path in paths


def test_catalog_matches_the_registry() -> None:
    from mss_jobs.models.catalog import list_model_infos
    from mss_jobs.models.registry import list_models  # imports torch: fine in the test process

    catalog = {(m.name, m.description, tuple(m.stems)) for m in list_model_infos()}
    registry = {(m.name, m.description, tuple(m.stems)) for m in list_models()}
    assert catalog == registry
