"""Model files: safe checkpoint reading, the cache layout, downloads over HTTP (a loopback server)
and S3 (a moto server), digests, and which failures are worth a retry."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch
from fresh_python import assert_python_succeeds
from real_services import new_bucket, s3_storage
from safetensors.torch import save_file

from mss_jobs.errors import (
    CheckpointError,
    ConfigError,
    ModelDownloadError,
    ModelUnavailableError,
    PermanentError,
    TransientError,
)
from mss_jobs.models.checkpoints import extract_state_dict, load_state_dict
from mss_jobs.models.weights import (
    ModelStore,
    Resource,
    cache_path,
    model_store_from_settings,
)
from mss_jobs.settings import load_settings
from mss_jobs.storage import ObjectStorage

ACCESS_KEY_ID = "MSSMODELTESTKEY00001"
SECRET_ACCESS_KEY = "mss-model-test-secret-do-not-print-00000"
PAYLOAD = b"checkpoint bytes " * 100_000  # 1.7 MB: more than one 1 MiB read
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


def _state() -> dict[str, torch.Tensor]:
    return {"layer.weight": torch.arange(6.0).reshape(2, 3), "layer.bias": torch.ones(2)}


def _assert_state(state: dict[str, torch.Tensor]) -> None:
    assert set(state) == {"layer.weight", "layer.bias"}
    assert torch.equal(state["layer.weight"], torch.arange(6.0).reshape(2, 3))


# -- reading checkpoints ------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".pth", ".th", ".bin"])
def test_plain_state_dict_in_every_torch_suffix(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"model{suffix}"
    torch.save(_state(), path)
    _assert_state(load_state_dict(path))


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: {"state_dict": s, "epoch": 3, "hparams": {"lr": 1e-4}},
        lambda s: {"state_dict": {f"module.{k}": v for k, v in s.items()}},
        lambda s: {"model": {f"model.{k}": v for k, v in s.items()}, "optimizer": {}},
        lambda s: {"state": s, "best": 12.5},
        lambda s: {"model_state_dict": {f"module.model.{k}": v for k, v in s.items()}},
        lambda s: {**s, "_metadata": {"version": 1}},
    ],
)
def test_containers_and_prefixes_are_unwrapped(tmp_path: Path, wrap: Any) -> None:
    path = tmp_path / "model.ckpt"
    torch.save(wrap(_state()), path)
    _assert_state(load_state_dict(path))


def test_a_prefix_only_some_keys_share_is_kept() -> None:
    state = {"model.a": torch.ones(1), "b": torch.ones(1)}
    assert set(extract_state_dict(state, source="x")) == {"model.a", "b"}


def test_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file({f"module.{k}": v for k, v in _state().items()}, str(path))
    _assert_state(load_state_dict(path))
    path.write_bytes(b"not safetensors at all")
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        load_state_dict(path)


class Recorder:
    """A class a malicious pickle could name; loading must never construct it."""

    created = 0

    def __init__(self) -> None:
        Recorder.created += 1


def test_pickles_that_need_other_globals_are_refused_naming_them(tmp_path: Path) -> None:
    path = tmp_path / "package.th"
    torch.save({"klass": Recorder, "state": _state(), "segment": Fraction(39, 5)}, path)
    with pytest.raises(CheckpointError, match=r"package\.th") as error:
        load_state_dict(path)
    assert "test_weights.Recorder" in str(error.value)
    assert isinstance(error.value, PermanentError)
    assert error.value.code == "model.checkpoint_invalid"
    assert Recorder.created == 0


def test_unreadable_and_empty_checkpoints(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*corrupt\.ckpt"):
        load_state_dict(corrupt)
    empty = tmp_path / "empty.pt"
    torch.save({"epoch": 3, "config": {"dim": 4}}, empty)
    with pytest.raises(CheckpointError, match="no tensors"):
        load_state_dict(empty)
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.ones(3), tensor)
    with pytest.raises(CheckpointError, match="Tensor, not a state dict"):
        load_state_dict(tensor)
    with pytest.raises(CheckpointError, match="unknown suffix"):
        load_state_dict(tmp_path / "model.onnx")


# -- resources and the cache layout -------------------------------------------------------------


def test_resource_validation() -> None:
    with pytest.raises(ConfigError, match="sha256"):
        Resource("https://h/x.ckpt", sha256="XYZ")
    with pytest.raises(ConfigError, match="sha256"):
        Resource("https://h/x.ckpt", sha256="abc")  # under 8 hex digits
    with pytest.raises(ConfigError, match="unsupported model source"):
        Resource("ftp://h/x.ckpt")
    with pytest.raises(ConfigError, match="empty"):
        Resource("")
    assert Resource("https://h/a/My%20Model%3F.ckpt?download=1").name == "My_Model_.ckpt"
    assert Resource("https://h/a/..", filename="../../etc/passwd").name == "etc_passwd"


def test_cache_layout(tmp_path: Path) -> None:
    full = Resource("https://h/m.ckpt", sha256=DIGEST)
    assert cache_path(tmp_path, full) == tmp_path / "sha256" / DIGEST / "m.ckpt"
    prefix = Resource("https://h/955717e8-8726e21a.th", sha256="8726e21a")
    by_url = cache_path(tmp_path, prefix)
    assert by_url.parent.parent == tmp_path / "url"
    assert by_url.name == "955717e8-8726e21a.th"
    other = cache_path(tmp_path, Resource("https://other/955717e8-8726e21a.th"))
    assert other != by_url  # keyed by URL, not by name
    local = tmp_path / "mine.ckpt"
    assert cache_path(tmp_path / "cache", Resource(str(local))) == local
    assert cache_path(tmp_path, Resource(local.as_uri())) == local


# -- HTTP ---------------------------------------------------------------------------------------


@dataclass
class Route:
    status: int = 200
    body: bytes = PAYLOAD
    headers: dict[str, str] = field(default_factory=dict)
    declared_length: int | None = None
    """Content-Length to announce (more than `body`: the connection closes early)."""


class LoopbackServer:
    """A tiny HTTP server on 127.0.0.1 with canned routes; counts the requests per path."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                route = server.routes.get(self.path, Route(status=404, body=b"no"))
                self.send_response(route.status)
                for name, value in route.headers.items():
                    self.send_header(name, value)
                length = route.declared_length or len(route.body)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(route.body)
                if route.declared_length:
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture(scope="module")
def http_server() -> Iterator[LoopbackServer]:
    server = LoopbackServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
        server.thread.join(timeout=10)


@pytest.fixture
def server(http_server: LoopbackServer, monkeypatch: pytest.MonkeyPatch) -> LoopbackServer:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    http_server.routes.clear()
    http_server.hits.clear()
    return http_server


def _store(root: Path, **options: Any) -> ModelStore:
    return ModelStore(root, allow_http=True, timeout_seconds=10.0, **options)


def _no_partials(root: Path) -> None:
    leftovers = [p for p in root.rglob("*") if p.is_file() and "mss-part" in p.name]
    assert leftovers == []


def test_download_verifies_and_caches_by_digest(server: LoopbackServer, tmp_path: Path) -> None:
    server.routes["/m.ckpt"] = Route()
    resource = Resource(server.url("/m.ckpt"), sha256=DIGEST)
    store = _store(tmp_path)
    assert store.cached(resource) is None
    seen: list[tuple[int, int | None]] = []
    path = store.fetch(resource, progress=lambda done, total: seen.append((done, total)))
    assert path == tmp_path / "sha256" / DIGEST / "m.ckpt"
    assert path.read_bytes() == PAYLOAD
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert store.get(resource) == path  # cached: no second request
    assert store.fetch(resource) == path
    assert server.hits["/m.ckpt"] == 1
    store.fetch(resource, force=True)
    assert server.hits["/m.ckpt"] == 2
    _no_partials(tmp_path)


def test_redirects_are_followed_and_digest_prefixes_checked(
    server: LoopbackServer, tmp_path: Path
) -> None:
    server.routes["/real.th"] = Route()
    server.routes["/moved.th"] = Route(status=302, body=b"", headers={"Location": "/real.th"})
    resource = Resource(server.url("/moved.th"), sha256=DIGEST[:8])
    path = _store(tmp_path).fetch(resource)
    assert path.read_bytes() == PAYLOAD
    assert path.parent.parent == tmp_path / "url"


def test_checksum_mismatch_leaves_nothing(server: LoopbackServer, tmp_path: Path) -> None:
    server.routes["/m.ckpt"] = Route(body=b"tampered weights")
    resource = Resource(server.url("/m.ckpt"), sha256=DIGEST)
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        _store(tmp_path).fetch(resource)
    assert not cache_path(tmp_path, resource).exists()
    _no_partials(tmp_path)


@pytest.mark.parametrize(
    ("route", "error", "retry"),
    [
        (Route(status=404, body=b"gone"), ModelUnavailableError, False),
        (Route(status=403, body=b"no"), ModelUnavailableError, False),
        (Route(status=500, body=b"oops"), ModelDownloadError, True),
        (Route(status=503, body=b"busy"), ModelDownloadError, True),
        (Route(status=429, body=b"slow down"), ModelDownloadError, True),
        (Route(declared_length=len(PAYLOAD) * 2), ModelDownloadError, True),
    ],
    ids=["404", "403", "500", "503", "429", "truncated"],
)
def test_failures_say_whether_to_retry(
    server: LoopbackServer, tmp_path: Path, route: Route, error: type[Exception], retry: bool
) -> None:
    server.routes["/m.ckpt"] = route
    resource = Resource(server.url("/m.ckpt"))
    with pytest.raises(error) as raised:
        _store(tmp_path).fetch(resource)
    assert isinstance(raised.value, TransientError) is retry
    assert not cache_path(tmp_path, resource).exists()
    _no_partials(tmp_path)


def test_connection_refused_is_transient(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ModelDownloadError, match="ConnectError"):
        _store(tmp_path).fetch(Resource(f"http://127.0.0.1:{port}/m.ckpt"))


def test_plain_http_is_refused_unless_allowed(server: LoopbackServer, tmp_path: Path) -> None:
    server.routes["/m.ckpt"] = Route()
    store = ModelStore(tmp_path)  # allow_http defaults to False
    with pytest.raises(ModelUnavailableError, match="MSS_MODEL_SOURCES_ALLOW_HTTP"):
        store.fetch(Resource(server.url("/m.ckpt")))
    assert server.hits == {}


def test_get_pulls_only_when_allowed(server: LoopbackServer, tmp_path: Path) -> None:
    server.routes["/m.ckpt"] = Route()
    resource = Resource(server.url("/m.ckpt"), sha256=DIGEST)
    with pytest.raises(ModelUnavailableError, match="models pull"):
        _store(tmp_path, pull=False).get(resource)
    assert server.hits == {}
    assert _store(tmp_path, pull=True).get(resource).read_bytes() == PAYLOAD
    assert _store(tmp_path, pull=False).get(resource).read_bytes() == PAYLOAD  # now cached


# -- local files ---------------------------------------------------------------------------------


def test_local_files_are_used_in_place(tmp_path: Path) -> None:
    path = tmp_path / "mine.ckpt"
    path.write_bytes(PAYLOAD)
    store = _store(tmp_path / "cache")
    assert store.fetch(Resource(str(path), sha256=DIGEST)) == path
    assert store.get(Resource(path.as_uri())) == path
    with pytest.raises(CheckpointError, match="checksum"):
        store.fetch(Resource(str(path), sha256="0" * 64))
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        store.get(Resource(str(tmp_path / "missing.ckpt")))
    assert not (tmp_path / "cache").exists()


# -- S3 -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3(moto_endpoint: str) -> tuple[str, str]:
    bucket = new_bucket(
        moto_endpoint,
        name_prefix="mss-models",
        access_key_id=ACCESS_KEY_ID,
        secret=SECRET_ACCESS_KEY,
    )
    return moto_endpoint, bucket


def test_s3_sources_go_through_the_storage_layer(s3: tuple[str, str], tmp_path: Path) -> None:
    endpoint, bucket = s3
    source = tmp_path / "upload.ckpt"
    source.write_bytes(PAYLOAD)
    uploader = s3_storage(
        endpoint,
        bucket,
        prefix="x",
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
    )
    uploader.upload_file(source, "weights/model v1.ckpt")
    asked: list[str] = []

    def factory(name: str) -> ObjectStorage:
        asked.append(name)
        return s3_storage(
            endpoint,
            name,
            prefix="",
            access_key_id=ACCESS_KEY_ID,
            secret_access_key=SECRET_ACCESS_KEY,
        )

    store = ModelStore(tmp_path / "cache", s3=factory)
    resource = Resource(f"s3://{bucket}/weights/model v1.ckpt", sha256=DIGEST)
    path = store.fetch(resource)
    assert path.read_bytes() == PAYLOAD
    assert asked == [bucket]
    with pytest.raises(CheckpointError, match="checksum"):
        store.fetch(Resource(f"s3://{bucket}/weights/model v1.ckpt", sha256="1" * 64))
    with pytest.raises(ModelUnavailableError, match="not found"):
        store.fetch(Resource(f"s3://{bucket}/weights/missing.ckpt"))
    with pytest.raises(ModelUnavailableError, match="no S3"):
        ModelStore(tmp_path / "other").fetch(Resource(f"s3://{bucket}/weights/x.ckpt"))
    _no_partials(tmp_path)


# -- settings -----------------------------------------------------------------------------------


def test_store_from_settings(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    assert settings.model_dir == tmp_path.resolve() / "models"
    assert settings.model_pull_on_demand is True
    assert settings.model_sources_allow_http is False
    assert settings.model_dtype == "float32"
    store = model_store_from_settings(settings)
    assert (store.root, store.pull, store.allow_http) == (settings.model_dir, True, False)
    assert model_store_from_settings(settings, pull=False).pull is False
    custom = load_settings(
        data_dir=tmp_path,
        model_dir=tmp_path / "elsewhere" / ".." / "weights",
        model_pull_on_demand=False,
        model_sources_allow_http=True,
        model_download_timeout_seconds=5,
    )
    store = model_store_from_settings(custom)
    assert store.root == (tmp_path / "weights").resolve()
    assert (store.pull, store.allow_http, store.timeout_seconds) == (False, True, 5.0)


@pytest.mark.parametrize(
    ("field_name", "value", "variable"),
    [
        ("model_download_timeout_seconds", 0, "MSS_MODEL_DOWNLOAD_TIMEOUT_SECONDS"),
        ("model_dtype", "float64", "MSS_MODEL_DTYPE"),
        ("model_tta", "sometimes", "MSS_MODEL_TTA"),
    ],
)
def test_model_settings_are_validated(field_name: str, value: Any, variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        load_settings(**{field_name: value})


def test_nothing_is_downloaded_at_import() -> None:
    code = (
        "import sys, socket\n"
        "def refuse(*a, **k): raise AssertionError('network used at import')\n"
        "socket.socket.connect = refuse\n"
        "import mss_jobs.models.registry, mss_jobs.models.catalog, workers.model_cache\n"
    )
    assert_python_succeeds(code, timeout=120)


# -- the CLI: mss-jobs models list|show|pull ----------------------------------------------------


def test_cli_models_pull_show_and_list(
    server: LoopbackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from mss_jobs.cli import main
    from mss_jobs.models.known import KNOWN_MODELS, KnownModel
    from mss_jobs.settings import get_settings

    server.routes["/cfg.yaml"] = Route(body=b"model: {}\n")
    server.routes["/w.ckpt"] = Route()
    model = KnownModel(
        name="loopback-model",
        architecture="bs_roformer",
        description="served from 127.0.0.1",
        stems=("vocals",),
        config=Resource(server.url("/cfg.yaml")),
        checkpoints=(Resource(server.url("/w.ckpt"), sha256=DIGEST),),
    )
    monkeypatch.setitem(KNOWN_MODELS, model.name, model)
    env = {"MSS_DATA_DIR": str(tmp_path), "MSS_MODEL_SOURCES_ALLOW_HTTP": "true"}
    runner = CliRunner()
    get_settings.cache_clear()
    try:
        listing = runner.invoke(main, ["models"], env=env)
        assert listing.exit_code == 0, listing.output
        assert "  loopback-model" in listing.output  # no star: not pulled
        assert "* dsp-hpss" in listing.output

        pulled = runner.invoke(main, ["models", "pull", "loopback-model", "-q"], env=env)
        assert pulled.exit_code == 0, pulled.output
        assert "loopback-model: ready" in pulled.output
        assert server.hits == {"/cfg.yaml": 1, "/w.ckpt": 1}
        assert (tmp_path / "models" / "sha256" / DIGEST / "w.ckpt").read_bytes() == PAYLOAD

        listing = runner.invoke(main, ["models", "list"], env=env)
        assert "* loopback-model" in listing.output
        shown = runner.invoke(main, ["models", "show", "loopback-model"], env=env)
        assert shown.exit_code == 0, shown.output
        assert "available:    yes" in shown.output
        assert DIGEST in shown.output
        assert "unknown (not published)" in shown.output  # the config's digest

        server.routes["/w.ckpt"] = Route(status=404, body=b"gone")
        failed = runner.invoke(main, ["models", "pull", "--force", "loopback-model"], env=env)
        assert failed.exit_code == 1
        assert "model.unavailable" in failed.output
        unknown = runner.invoke(main, ["models", "pull", "nope"], env=env)
        assert unknown.exit_code == 2
        assert "model.unknown" in unknown.output
    finally:
        get_settings.cache_clear()
