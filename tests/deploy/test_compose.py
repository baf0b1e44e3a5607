"""deploy/: the compose stack, its env file and the image, checked without docker.

`deploy/compose.yaml` is parsed with PyYAML (anchors and `<<` merges resolved as Compose does),
then interpolated with `deploy/.env.example` by a small re-implementation of Compose's
`${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `${VAR?error}` and `$$` rules.
Every mss-jobs service's `MSS_*` environment must then pass `mss_jobs.settings.load_settings`
as keyword arguments, where an unknown name is refused (the environment source would ignore a
misspelt variable silently, which is exactly the mistake worth catching here).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from mss_jobs.settings import Settings, env_var, load_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
REPO = DEPLOY.parent
COMPOSE_FILE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / ".env.example"
DOCKERFILE = DEPLOY / "Dockerfile"
README = DEPLOY / "README.md"

MSS_SERVICES = ("migrate", "api", "worker", "worker-gpu", "flower")
"""Services run from the mss-jobs images (`build.dockerfile: deploy/Dockerfile`)."""
TARGETS = {
    "migrate": "api",
    "api": "api",
    "flower": "api",
    "worker": "worker",
    "worker-gpu": "worker",
}
"""The Dockerfile target each service is built from: only workers carry torch."""
REQUIRED_SERVICES = {"redis", "postgres", "minio", "minio-init", *MSS_SERVICES}
ONE_SHOT_SERVICES = {"migrate", "minio-init"}
CLI_COMMANDS = {"api", "worker", "flower", "migrate"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
SHARED_STATE_PREFIXES = (
    "MSS_DATABASE_",
    "MSS_BROKER_",
    "MSS_STORAGE_",
    "MSS_S3_",
    "MSS_QUEUE_",
    "MSS_JOB_",
    "MSS_VISIBILITY_",
)
"""Settings that the API, workers and Flower must agree on, or jobs go where no one looks."""


# -- a minimal Compose interpolation ----------------------------------------------------------


class UnsetVariableError(ValueError):
    """A `${VAR}` with no value and no default: Compose would substitute "" (or stop)."""


_DOLLAR = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|-|:\?|\?)(?P<arg>.*))?", re.S)


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """`text` with Compose's substitutions applied from `env`; an unset variable raises."""

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            name, op, arg = match["named"], None, ""
        else:
            inner = _BRACED.fullmatch(match["braced"])
            if inner is None or "${" in (inner["arg"] or ""):
                raise ValueError(f"unsupported substitution {match[0]!r}")
            name, op, arg = inner["name"], inner["op"], inner["arg"] or ""
        value = env.get(name)
        empty = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in (":-", "-") and empty:
            return arg
        if value is None or (empty and op in (":?", "?")):
            raise UnsetVariableError(f"{match[0]!r}: {name} is unset{f' ({arg})' if arg else ''}")
        return value

    return _DOLLAR.sub(substitute, text)


def interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    """Interpolate every string value (not key) of a parsed YAML document, as Compose does."""
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(item, env) for item in node]
    return node


def parse_env_file(text: str) -> dict[str, str]:
    """`KEY=VALUE` lines; blank lines and `#` comments skipped; anything else is an error."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f".env.example line {number} is not KEY=VALUE: {raw!r}")
        if key in values:
            raise ValueError(f".env.example line {number} sets {key} a second time")
        values[key] = value
    return values


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return parse_env_file(ENV_EXAMPLE.read_text())


@pytest.fixture(scope="module")
def raw_compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def compose(raw_compose: dict[str, Any], env_example: dict[str, str]) -> dict[str, Any]:
    result = interpolate_tree(raw_compose, env_example)
    assert isinstance(result, dict)
    return result


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose.get("services")
    assert isinstance(found, dict), "compose.yaml has no services mapping"
    return found


@pytest.fixture
def no_mss_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings must come from the compose file alone, not from this process's MSS_* variables."""
    for name in list(os.environ):
        if name.upper().startswith("MSS_"):
            monkeypatch.delenv(name)


def environment_of(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's `environment`, in either Compose form (mapping or `KEY=VALUE` list)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.partition("=") for item in env)
        return {key: value for key, _, value in pairs}
    return {key: "" if value is None else str(value) for key, value in env.items()}


def depends_on_of(service: Mapping[str, Any]) -> dict[str, str]:
    """`depends_on` as {service: condition}; the short list form means `service_started`."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def settings_kwargs(env: Mapping[str, str]) -> dict[str, str]:
    """`MSS_FOO=bar` → `foo="bar"`, the field names `load_settings` takes."""
    return {name.removeprefix("MSS_").lower(): value for name, value in env.items()}


# -- the interpolation helper itself ----------------------------------------------------------


def test_interpolation_follows_compose_rules() -> None:
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate("a${SET}b$SET", env) == "avbv"
    assert interpolate("${MISSING:-d} ${EMPTY:-d} ${EMPTY-d} ${SET:-d}", env) == "d d  v"
    assert interpolate("$${SET} $$SET", env) == "${SET} $SET"
    with pytest.raises(UnsetVariableError, match="MISSING"):
        interpolate("${MISSING}", env)
    with pytest.raises(UnsetVariableError, match="see the docs"):
        interpolate("${EMPTY:?see the docs}", env)
    assert interpolate("${EMPTY?must be set}", env) == ""


def test_env_file_parser_refuses_malformed_lines() -> None:
    assert parse_env_file("# c\n\nA=1\nB=x=y\n") == {"A": "1", "B": "x=y"}
    with pytest.raises(ValueError, match="line 1"):
        parse_env_file("export A\n")
    with pytest.raises(ValueError, match="second time"):
        parse_env_file("A=1\nA=2\n")


# -- compose.yaml -----------------------------------------------------------------------------


def test_compose_file_follows_the_compose_specification(raw_compose: dict[str, Any]) -> None:
    assert "version" not in raw_compose, "the Compose Specification has no `version:` key"
    assert isinstance(raw_compose.get("x-mss-env"), dict), "the shared x-mss-env block is gone"


def test_every_required_service_exists(services: dict[str, dict[str, Any]]) -> None:
    missing = REQUIRED_SERVICES - services.keys()
    assert not missing, f"compose.yaml lacks services {sorted(missing)}"


def test_mss_services_are_exactly_those_built_from_the_image(
    services: dict[str, dict[str, Any]],
) -> None:
    built = {
        name
        for name, service in services.items()
        if isinstance(service.get("build"), dict)
        and service["build"].get("dockerfile") == "deploy/Dockerfile"
    }
    assert built == set(MSS_SERVICES)
    assert {name: services[name]["build"].get("target") for name in MSS_SERVICES} == TARGETS
    for target in set(TARGETS.values()):
        images = {services[n]["image"] for n, t in TARGETS.items() if t == target}
        assert len(images) == 1, f"services of target {target} should share one image: {images}"
    assert services["api"]["image"] != services["worker"]["image"]
    for name in MSS_SERVICES:
        assert "entrypoint" not in services[name], f"{name} overrides the mss-jobs entrypoint"


@pytest.mark.usefixtures("no_mss_environment")
@pytest.mark.parametrize("name", MSS_SERVICES)
def test_mss_environment_validates_as_production_settings(
    name: str, services: dict[str, dict[str, Any]], env_example: dict[str, str]
) -> None:
    env = environment_of(services[name])
    foreign = sorted(key for key in env if not key.startswith("MSS_"))
    assert not foreign, f"{name}: non-MSS_ variables {foreign} reach the service"

    settings = load_settings(**settings_kwargs(env))  # ConfigError names any bad variable

    assert settings.storage_backend == "s3"
    assert settings.database_url.startswith("postgresql://")
    assert settings.broker_url is not None
    assert settings.broker_url.startswith("redis://")
    assert not settings.embedded
    assert settings.s3_bucket == env_example["S3_BUCKET"]
    assert settings.s3_endpoint_url is not None
    assert settings.s3_access_key_id is not None
    assert settings.s3_secret_access_key is not None


@pytest.mark.parametrize("name", MSS_SERVICES)
def test_time_limits_nest_soft_below_hard_below_visibility(
    name: str, services: dict[str, dict[str, Any]]
) -> None:
    env = environment_of(services[name])

    def limit(field: str) -> int:
        value = env.get(env_var(field))
        default = Settings.model_fields[field].default
        return int(value) if value is not None else int(default)

    soft = limit("job_soft_time_limit_seconds")
    hard = limit("job_hard_time_limit_seconds")
    visibility = limit("visibility_timeout_seconds")
    assert visibility > hard > soft, f"{name}: {soft=} {hard=} {visibility=} must nest"


def test_services_share_database_broker_and_storage(services: dict[str, dict[str, Any]]) -> None:
    def shared(name: str) -> dict[str, str]:
        env = environment_of(services[name])
        return {k: v for k, v in env.items() if k.startswith(SHARED_STATE_PREFIXES)}

    reference = shared("api")
    for name in MSS_SERVICES:
        assert shared(name) == reference, f"{name} disagrees with api; use the x-mss-env anchor"


def test_commands_use_only_the_cli_sub_commands(services: dict[str, dict[str, Any]]) -> None:
    used: set[str] = set()
    for name in MSS_SERVICES:
        command = services[name].get("command")
        assert isinstance(command, list), f"{name}: command must be an exec-form list"
        assert command, f"{name}: empty command"
        assert command[0] in CLI_COMMANDS, f"{name}: unknown sub-command {command[0]!r}"
        used.add(command[0])
    assert used == CLI_COMMANDS


def test_api_listens_on_all_interfaces_at_the_published_port(
    services: dict[str, dict[str, Any]],
) -> None:
    command = services["api"]["command"]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    port = command[command.index("--port") + 1]
    assert any(str(mapping).endswith(f":{port}") for mapping in services["api"]["ports"])


@pytest.mark.parametrize("name", ["worker", "worker-gpu"])
def test_workers_consume_both_queues(name: str, services: dict[str, dict[str, Any]]) -> None:
    command = services[name]["command"]
    queues = set(command[command.index("--queues") + 1].split(","))
    env = environment_of(services[name])
    expected = {
        env.get(env_var(field), Settings.model_fields[field].default)
        for field in ("queue_interactive", "queue_bulk")
    }
    assert queues == expected
    assert "--concurrency" in command


def test_flower_requires_basic_auth(services: dict[str, dict[str, Any]]) -> None:
    auth = [arg for arg in services["flower"]["command"] if arg.startswith("--basic-auth=")]
    assert len(auth) == 1
    user, sep, password = auth[0].removeprefix("--basic-auth=").partition(":")
    assert user, "--basic-auth must be user:password"
    assert sep, "--basic-auth must be user:password"
    assert password, "--basic-auth must be user:password"


def test_depends_on_names_existing_services_with_valid_conditions(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        for target, condition in depends_on_of(service).items():
            assert target in services, f"{name} depends on unknown service {target!r}"
            assert condition in CONDITIONS, f"{name} → {target}: bad condition {condition!r}"
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits on {target}'s health"
            if condition == "service_completed_successfully":
                assert target in ONE_SHOT_SERVICES, f"{name} waits for {target} to exit"
            if not service.get("profiles"):
                assert not services[target].get("profiles"), (
                    f"{name} is always started but {target} only with a profile"
                )


def test_dependencies_have_no_cycle(services: dict[str, dict[str, Any]]) -> None:
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"dependency cycle: {' → '.join((*path, name))}"
        if name in done:
            return
        for target in depends_on_of(services[name]):
            visit(target, (*path, name))
        done.add(name)

    for name in services:
        visit(name, ())


@pytest.mark.parametrize("name", ["api", "worker", "worker-gpu"])
def test_long_running_services_wait_for_schema_and_bucket(
    name: str, services: dict[str, dict[str, Any]]
) -> None:
    deps = depends_on_of(services[name])
    assert deps.get("migrate") == "service_completed_successfully"
    assert deps.get("minio-init") == "service_completed_successfully"
    assert deps.get("postgres") == "service_healthy"
    assert deps.get("redis") == "service_healthy"


def test_migrate_waits_for_a_healthy_database(services: dict[str, dict[str, Any]]) -> None:
    assert depends_on_of(services["migrate"]).get("postgres") == "service_healthy"
    assert depends_on_of(services["minio-init"]).get("minio") == "service_healthy"


@pytest.mark.parametrize("name", sorted(ONE_SHOT_SERVICES))
def test_one_shot_services_are_not_restarted(
    name: str, services: dict[str, dict[str, Any]]
) -> None:
    # `unless-stopped` would rerun a finished migration forever.
    assert services[name].get("restart", "no") == "no"


@pytest.mark.parametrize("name", ["redis", "postgres", "minio", "api"])
def test_healthchecks_exist(name: str, services: dict[str, dict[str, Any]]) -> None:
    check = services[name].get("healthcheck")
    assert isinstance(check, dict), f"{name} has no healthcheck"
    assert check.get("test"), f"{name}'s healthcheck has no test"


def test_api_healthcheck_probes_healthz_with_python(services: dict[str, dict[str, Any]]) -> None:
    test = services["api"]["healthcheck"]["test"]
    assert isinstance(test, list)
    assert test[0] == "CMD"
    text = " ".join(test[1:])
    assert test[1] == "python", "the image has python but no curl"
    assert "curl" not in text
    assert "wget" not in text
    assert "/healthz" in text


def test_postgres_keeps_its_data_in_a_named_volume(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    mounts = compose["services"]["postgres"].get("volumes") or []
    sources = {str(mount).split(":", 1)[0] for mount in mounts}
    assert sources & declared, "postgres data must live in a declared volume"
    for name, service in compose["services"].items():
        for mount in service.get("volumes") or []:
            source = str(mount).split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name} mounts undeclared volume {source!r}"


def test_gpu_worker_reserves_nvidia_devices_under_a_profile(
    services: dict[str, dict[str, Any]],
) -> None:
    gpu = services["worker-gpu"]
    assert gpu.get("profiles") == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    assert not services["worker"].get("profiles"), "the CPU worker runs by default"


def test_minio_init_creates_the_bucket_and_account_the_services_use(
    services: dict[str, dict[str, Any]],
) -> None:
    init = services["minio-init"]
    assert str(init["image"]).startswith("minio/mc")
    init_env = environment_of(init)
    api_env = environment_of(services["api"])
    assert init_env["S3_BUCKET"] == api_env["MSS_S3_BUCKET"]
    assert init_env["S3_ACCESS_KEY_ID"] == api_env["MSS_S3_ACCESS_KEY_ID"]
    assert init_env["S3_SECRET_ACCESS_KEY"] == api_env["MSS_S3_SECRET_ACCESS_KEY"]
    script = " ".join(init.get("command") or [])
    assert "mc mb --ignore-existing" in script
    assert "mc admin user add" in script


# -- .env.example -----------------------------------------------------------------------------


def test_env_example_defines_every_variable_compose_reads(env_example: dict[str, str]) -> None:
    text = COMPOSE_FILE.read_text().replace("$$", "")
    referenced = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    referenced |= set(re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", text))
    missing = referenced - env_example.keys()
    assert not missing, f".env.example does not document {sorted(missing)}"


def test_env_example_credentials_are_obvious_placeholders(env_example: dict[str, str]) -> None:
    secrets = {k: v for k, v in env_example.items() if re.search(r"PASSWORD|SECRET|AUTH", k)}
    assert secrets, "no credentials found in .env.example"
    for key, value in secrets.items():
        assert "change-me" in value, f"{key} must be an obvious placeholder"


def test_env_example_names_are_not_settings(env_example: dict[str, str]) -> None:
    # MSS_* names in .env could be confused with the settings, and a developer's exported MSS_*
    # variables would override them during interpolation. MSS_IMAGE names the image, no setting.
    images = {"MSS_IMAGE", "MSS_API_IMAGE"}
    clashes = {key for key in env_example if key.startswith("MSS_")} - images
    assert not clashes
    assert "image" not in Settings.model_fields


# -- image ------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, args = stripped.partition(" ")
            instructions.append((keyword.upper(), args.strip()))
    return instructions


def stages() -> dict[str, list[tuple[str, str]]]:
    """Each named stage's instructions, its FROM first."""
    found: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for keyword, args in dockerfile_instructions():
        if keyword == "FROM":
            current = []
            words = args.split()
            found[words[2] if len(words) > 2 and words[1].upper() == "AS" else str(len(found))] = (
                current
            )
        current.append((keyword, args))
    assert found, "Dockerfile has no FROM"
    return found


def final_stage(target: str) -> list[tuple[str, str]]:
    """A target's instructions with those of the stages it is built FROM, base first."""
    chain = stages()
    assert target in chain, f"Dockerfile has no target {target}"
    instructions: list[tuple[str, str]] = []
    while target in chain:
        instructions = chain[target] + instructions
        target = chain[target][0][1].split()[0]
    return instructions


@pytest.fixture(params=sorted(set(TARGETS.values())))
def target(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_image_is_python_slim_and_runs_the_cli(target: str) -> None:
    stage = final_stage(target)
    assert stage[0][1].split()[0] == "python:3.11-slim"
    entrypoints = [args for keyword, args in stage if keyword == "ENTRYPOINT"]
    assert entrypoints, "the final stage has no ENTRYPOINT"
    assert json.loads(entrypoints[-1]) == ["mss-jobs"]


def test_image_does_not_run_as_root(target: str) -> None:
    users = [args for keyword, args in final_stage(target) if keyword == "USER"]
    assert users, "the final stage has no USER line, so it runs as root"
    user = users[-1].split(":", 1)[0]
    assert user not in {"root", "0"}


def test_image_ships_the_migrations_where_migrate_looks(target: str) -> None:
    stage = final_stage(target)
    env_lines = " ".join(args for keyword, args in stage if keyword == "ENV")
    match = re.search(r"MSS_MIGRATIONS_DIR=(\S+)", env_lines)
    assert match, "MSS_MIGRATIONS_DIR is not set in the image"
    copies = [args.split() for keyword, args in stage if keyword == "COPY"]
    assert ["migrations", match[1]] in copies


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    patterns = {
        line.strip().rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in (".venv", ".git", ".mss-data", "demo", "**/__pycache__", "**/.env"):
        assert needed in patterns, f".dockerignore should exclude {needed}"
    for kept in ("mss_jobs", "workers", "migrations", "pyproject.toml", "README.md"):
        assert kept not in patterns, f".dockerignore must not exclude {kept}"


def test_readme_documents_every_setting() -> None:
    text = README.read_text()
    missing = [env_var(field) for field in Settings.model_fields if env_var(field) not in text]
    assert not missing, f"deploy/README.md does not mention {missing}"


def test_images_install_from_the_lock() -> None:
    chain = stages()
    runs = {name: [a for k, a in chain[name] if k == "RUN"] for name in chain}
    for name, commands in runs.items():
        for command in commands:
            if "uv sync" in command:
                assert "--frozen" in command, f"stage {name} syncs without --frozen: {command}"
            if "pip install" in command:
                assert "--require-hashes" in command, f"stage {name}: unpinned pip: {command}"
    assert all("--extra worker" not in c for c in runs["build-api"]), "the api image gets torch"
    assert any("--extra worker" in c for c in runs["build-worker"])
    copies = {name: [a.split() for k, a in chain[name] if k == "COPY"] for name in chain}
    assert ["--from=build-api", "/opt/venv", "/opt/venv"] in copies["api"]
    assert ["--from=build-worker", "/opt/venv", "/opt/venv"] in copies["worker"]
