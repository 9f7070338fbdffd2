"""Static checks of docker-compose.yaml, the Dockerfile and .env.example.

There is no Docker engine on the development and CI machines, so the compose setup cannot be run
here; these tests catch the mistakes that would only show up on a user's machine: components with
different JWT secrets, bind mounts of paths that do not exist, COPY of missing files, connections
nobody documented, a database the init script never creates, ports open to the network.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"
GITIGNORE = REPO / ".gitignore"
COMMON_ANCHOR_KEY = "x-airflow-common"
AIRFLOW_VERSION = "3.3.2"
EXECUTION_API_URL = "http://airflow-apiserver:8080/execution/"
REQUIRED_SERVICES = {
    "postgres",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "redis",
    "flower",
    "sandbox",
}
# Bind-mount sources created at run time (by Docker / airflow-init), so they must be gitignored
# rather than present in the repository.
RUNTIME_PREFIXES = ("./.airflow-docker/",)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", ...] form
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _services_using_common_anchor() -> set[str]:
    """Services whose ``<<:`` merge key is an alias of the ``x-airflow-common`` anchor."""
    root = yaml.compose(COMPOSE_FILE.read_text(encoding="utf-8"))
    top = {key.value: value for key, value in root.value}
    common = top[COMMON_ANCHOR_KEY]
    using = set()
    for name_node, service_node in top["services"].value:
        for key, value in service_node.value:
            if key.value == "<<" and value is common:
                using.add(name_node.value)
    return using


def _bind_sources(services: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """(service, host path) of every relative bind mount, short or long volume syntax."""
    found = []
    for name, service in services.items():
        for volume in service.get("volumes") or []:
            if isinstance(volume, dict):
                source = volume.get("source", "") if volume.get("type") == "bind" else ""
            else:
                source = str(volume).split(":", 1)[0]
            if source.startswith("."):
                found.append((name, source))
    return found


def _dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with comments dropped and line continuations joined."""
    logical, current = [], ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    if current:
        logical.append(current)
    result = []
    for entry in logical:
        instruction, _, args = entry.partition(" ")
        result.append((instruction.upper(), args.strip()))
    return result


def _build_contexts(services: dict[str, dict[str, Any]]) -> dict[Path, Path]:
    """Build context -> Dockerfile for every service that builds an image."""
    contexts = {}
    for service in services.values():
        build = service.get("build")
        if build is None:
            continue
        if isinstance(build, str):
            context, dockerfile = build, "Dockerfile"
        else:
            context, dockerfile = build.get("context", "."), build.get("dockerfile", "Dockerfile")
        context_path = (REPO / context).resolve()
        contexts[context_path] = context_path / dockerfile
    return contexts


def _stages(dockerfile: Path) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(name, FROM image or stage, instructions after FROM) per build stage, in file order.

    An unnamed stage is named by its index, as ``docker build --target`` cannot pick it anyway.
    """
    stages: list[tuple[str, str, list[tuple[str, str]]]] = []
    for instruction, args in _dockerfile_instructions(dockerfile):
        if instruction == "FROM":
            words = args.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append((name, words[0], []))
        elif stages:
            stages[-1][2].append((instruction, args))
    return stages


def _stage_chain(dockerfile: Path, target: str | None) -> tuple[str, list[tuple[str, str]]]:
    """The base image a target (default: the last stage) is built on, and all instructions of its chain."""
    stages = _stages(dockerfile)
    by_name = {name: (base, instructions) for name, base, instructions in stages}
    name = target or stages[-1][0]
    assert name in by_name, f"{dockerfile.name} has no stage {name!r}"
    instructions: list[tuple[str, str]] = []
    base = name
    while base in by_name:  # FROM <earlier stage>: follow it down to an image
        base, own = by_name[base]
        instructions = own + instructions
    return base, instructions


def _service_build(service: dict[str, Any]) -> tuple[Path, str | None]:
    """(Dockerfile, target) a service builds."""
    build = service["build"]
    if isinstance(build, str):
        return (REPO / build).resolve() / "Dockerfile", None
    context = (REPO / build.get("context", ".")).resolve()
    return context / build.get("dockerfile", "Dockerfile"), build.get("target")


def _env_example_keys() -> dict[str, str]:
    keys = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if match:
            value = match.group(2).strip()
            keys[match.group(1)] = shlex.split(value)[0] if value else ""
    return keys


def test_required_services_exist(services: dict[str, dict[str, Any]]) -> None:
    missing = REQUIRED_SERVICES - set(services)
    assert not missing, f"docker-compose.yaml lacks services {sorted(missing)}"


def test_airflow_services_share_jwt_secret_and_execution_api(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    using = _services_using_common_anchor()
    airflow_services = {name for name in services if name.startswith("airflow-")}
    assert airflow_services <= using, (
        f"Airflow services not built on the {COMMON_ANCHOR_KEY} anchor: {sorted(airflow_services - using)}"
    )
    common_env = _environment(compose[COMMON_ANCHOR_KEY])
    secret = common_env.get("AIRFLOW__API_AUTH__JWT_SECRET")
    assert secret, "the common environment must set AIRFLOW__API_AUTH__JWT_SECRET"
    for name in sorted(using):
        env = _environment(services[name])
        assert env.get("AIRFLOW__API_AUTH__JWT_SECRET") == secret, (
            f"service {name!r} has a different AIRFLOW__API_AUTH__JWT_SECRET: task tokens would not verify"
        )
        assert env.get("AIRFLOW__CORE__EXECUTION_API_SERVER_URL") == EXECUTION_API_URL, (
            f"service {name!r}: AIRFLOW__CORE__EXECUTION_API_SERVER_URL must be {EXECUTION_API_URL}"
        )
        assert env.get("AIRFLOW__CORE__EXECUTOR") == "CeleryExecutor", f"service {name!r}: executor"


def test_execution_api_url_points_at_the_api_server(services: dict[str, dict[str, Any]]) -> None:
    url = urlsplit(EXECUTION_API_URL)
    api = services[url.hostname]
    assert api.get("command") == "api-server"
    assert any(str(port).endswith(f":{url.port}") for port in api.get("ports", [])), (
        f"{url.hostname} does not publish port {url.port}"
    )
    assert "/api/v2/version" in " ".join(api["healthcheck"]["test"])


@pytest.mark.parametrize(
    ("service", "source"),
    [
        pytest.param(s, p, id=f"{s}:{p}")
        for s, p in _bind_sources(yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))["services"])
        if not p.startswith(RUNTIME_PREFIXES)
    ],
)
def test_bind_mount_sources_exist(service: str, source: str) -> None:
    assert (REPO / source).exists(), f"service {service!r} bind-mounts {source}, which is not in the repo"


def test_runtime_bind_mounts_are_gitignored(services: dict[str, dict[str, Any]]) -> None:
    runtime = [p for _, p in _bind_sources(services) if p.startswith(RUNTIME_PREFIXES)]
    assert runtime, "expected the logs bind mount under ./.airflow-docker/"
    patterns = [
        line.strip()
        for line in GITIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith(("#", "!"))
    ]
    for source in runtime:
        top = source.removeprefix("./").split("/", 1)[0]
        ignored = any(fnmatch.fnmatch(top, pattern.strip("/")) for pattern in patterns)
        assert ignored, f"{source} is created at run time; add '{top}/' to .gitignore"


def test_dockerfile_is_based_on_the_official_image(services: dict[str, dict[str, Any]]) -> None:
    contexts = _build_contexts(services)
    assert contexts, "no service builds the project image"
    for dockerfile in contexts.values():
        assert dockerfile.is_file(), f"build context has no {dockerfile.name}"
        froms = [args for instr, args in _dockerfile_instructions(dockerfile) if instr == "FROM"]
        assert froms, f"{dockerfile} has no FROM"
    built = {_service_build(service) for service in services.values() if service.get("build") is not None}
    for dockerfile, target in sorted(built, key=str):
        image, _ = _stage_chain(dockerfile, target)  # the image under the stage (chain) that is built
        assert image.startswith(f"apache/airflow:{AIRFLOW_VERSION}"), f"{dockerfile}: FROM {image}"
        assert image.endswith("-python3.11"), f"{dockerfile}: the project targets Python 3.11, not {image}"
    pins = (REPO / "requirements.txt").read_text(encoding="utf-8")
    assert f"apache-airflow=={AIRFLOW_VERSION}\n" in pins, "requirements.txt pins another Airflow"


def test_airflow_services_run_an_image_without_the_sandbox(services: dict[str, dict[str, Any]]) -> None:
    """The sandbox and devtools (dev/) are only in the sandbox service's image, never in the Airflow one."""

    def installs_dev(instructions: list[tuple[str, str]]) -> bool:
        return any(
            instr in {"COPY", "ADD", "RUN"} and re.search(r"(^|[\s/])dev(/|\s|$)", args) for instr, args in instructions
        )

    for name in sorted(n for n in services if n.startswith("airflow-")):
        dockerfile, target = _service_build(services[name])
        _, instructions = _stage_chain(dockerfile, target)
        assert any(instr == "COPY" and "include/" in args for instr, args in instructions), (
            f"service {name!r}: its image does not contain the product package"
        )
        assert not installs_dev(instructions), f"service {name!r}: its image copies or installs dev/ (the sandbox)"
    dockerfile, target = _service_build(services["sandbox"])
    assert installs_dev(_stage_chain(dockerfile, target)[1]), "the sandbox service's image lacks dev/"
    _, default_instructions = _stage_chain(dockerfile, None)
    assert not installs_dev(default_instructions), "a plain `docker build .` (the last stage) must not contain dev/"


def test_dockerfile_copy_sources_exist(services: dict[str, dict[str, Any]]) -> None:
    for context, dockerfile in _build_contexts(services).items():
        ignored = []
        if (context / ".dockerignore").is_file():
            ignored = [
                line.strip().rstrip("/")
                for line in (context / ".dockerignore").read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.startswith("#")
            ]
        copies = [args for instr, args in _dockerfile_instructions(dockerfile) if instr in {"COPY", "ADD"}]
        assert copies, f"{dockerfile} copies nothing"
        for args in copies:
            if args.startswith("["):
                parts = json.loads(args)
            else:
                parts = [p for p in shlex.split(args) if not p.startswith("--")]
            if "--from=" in args:
                continue  # from another build stage, not from the context
            for source in parts[:-1]:
                relative = source.rstrip("/")
                assert (context / relative).exists(), f"{dockerfile.name}: COPY {source} does not exist"
                assert not any(fnmatch.fnmatch(relative, pattern) for pattern in ignored), (
                    f"{dockerfile.name}: COPY {source} is excluded by .dockerignore"
                )


def test_connections_are_documented_and_valid(services: dict[str, dict[str, Any]]) -> None:
    documented = _env_example_keys()
    conns: dict[str, str] = {}
    for service in services.values():
        conns.update({k: v for k, v in _environment(service).items() if k.startswith("AIRFLOW_CONN_")})
    assert {"AIRFLOW_CONN_HUB_DB", "AIRFLOW_CONN_ERP_DB", "AIRFLOW_CONN_ALLEGRO_SANDBOX"} <= set(conns)
    undocumented = sorted(set(conns) - set(documented))
    assert not undocumented, f"connections used in docker-compose.yaml but not in .env.example: {undocumented}"
    for key, value in {**conns, **{k: v for k, v in documented.items() if k.startswith("AIRFLOW_CONN_")}}.items():
        if value.lstrip().startswith("{"):
            conn = json.loads(value)
            assert conn.get("conn_type"), f"{key}: JSON connection without conn_type"
            assert "://" in conn.get("host", ""), f"{key}: host must be a base URL with scheme"
        else:
            assert urlsplit(value).scheme, f"{key}: not a connection URI: {value!r}"


def test_env_example_documents_every_variable() -> None:
    expected = {
        "HUB_DATABASE_URL",
        "ERP_DATABASE_URL",
        "COMMERCE_SYNC_DATA_DIR",
        "COMMERCE_SYNC_CONFIG_DIR",
        "AIRFLOW_CONN_HUB_DB",
        "AIRFLOW_CONN_ERP_DB",
        "AIRFLOW_CONN_SUPPLIER_ACME",
        "AIRFLOW_CONN_SUPPLIER_BRAVO",
        "AIRFLOW_CONN_ALLEGRO_SANDBOX",
        "AIRFLOW_CONN_EBAY_SANDBOX",
        "AIRFLOW_CONN_AMAZON_SANDBOX",
        "AIRFLOW_JWT_SECRET",
        "AIRFLOW__OPENLINEAGE__TRANSPORT",
    }
    missing = expected - set(_env_example_keys())
    assert not missing, f".env.example lacks {sorted(missing)}"
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    for index, line in enumerate(lines):
        if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", line):
            assert index > 0 and lines[index - 1].startswith("#"), f".env.example: no comment above {line!r}"


def test_openlineage_transport_is_a_file_on_a_volume(services: dict[str, dict[str, Any]]) -> None:
    mounts = [str(v).split(":")[1] for s in services.values() for v in s.get("volumes") or [] if ":" in str(v)]
    for name, service in services.items():
        value = _environment(service).get("AIRFLOW__OPENLINEAGE__TRANSPORT")
        if value is None:
            continue
        transport = json.loads(value)
        assert transport["type"] == "file", f"{name}: OpenLineage transport type {transport['type']!r}"
        path = transport["log_file_path"]
        assert any(path.startswith(m.rstrip("/") + "/") for m in mounts), (
            f"{name}: OpenLineage file {path} is not on a mounted volume and would be lost"
        )
    assert _environment(services["airflow-scheduler"]).get("AIRFLOW__OPENLINEAGE__TRANSPORT")
    documented = json.loads(_env_example_keys()["AIRFLOW__OPENLINEAGE__TRANSPORT"])
    assert documented["type"] == "file"


def test_published_ports_are_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    assert services["postgres"].get("ports"), "postgres must be published for the non-Docker path"
    for name, service in services.items():
        for port in service.get("ports") or []:
            if isinstance(port, dict):
                host_ip = port.get("host_ip", "")
            else:
                host_ip = str(port).split(":")[0] if str(port).count(":") == 2 else ""
            assert host_ip == "127.0.0.1", f"service {name!r} publishes {port!r} beyond 127.0.0.1"


def test_init_script_creates_the_databases_the_connections_use(services: dict[str, dict[str, Any]]) -> None:
    init_dirs = [
        REPO / str(v).split(":")[0]
        for v in services["postgres"].get("volumes") or []
        if "/docker-entrypoint-initdb.d" in str(v)
    ]
    assert init_dirs, "postgres has no /docker-entrypoint-initdb.d mount"
    sql = " ".join(p.read_text(encoding="utf-8") for d in init_dirs for p in sorted(d.glob("*.sql")))
    created = set(re.findall(r"CREATE DATABASE\s+(\w+)", sql, flags=re.IGNORECASE))
    created.add(_environment(services["postgres"]).get("POSTGRES_DB", "postgres"))
    env = _environment(services["airflow-scheduler"])
    for key in ("HUB_DATABASE_URL", "AIRFLOW_CONN_HUB_DB", "AIRFLOW_CONN_ERP_DB"):
        url = urlsplit(env[key])
        assert url.hostname == "postgres", f"{key} must point at the postgres service"
        assert url.path.lstrip("/") in created, f"{key}: database {url.path} is not created by the init script"


def test_sandbox_serves_the_ports_the_connections_use(services: dict[str, dict[str, Any]]) -> None:
    command = services["sandbox"]["command"]
    args = shlex.split(command) if isinstance(command, str) else list(command)
    assert args[:3] == ["python", "-m", "commerce_sync_sandbox"]
    flags = ("--feeds-port", "--allegro-port", "--ebay-port", "--amazon-port")
    ports = {int(args[args.index(flag) + 1]) for flag in flags}
    env = _environment(services["airflow-scheduler"])
    keys = (
        "AIRFLOW_CONN_SUPPLIER_ACME",
        "AIRFLOW_CONN_SUPPLIER_BRAVO",
        "AIRFLOW_CONN_ALLEGRO_SANDBOX",
        "AIRFLOW_CONN_EBAY_SANDBOX",
        "AIRFLOW_CONN_AMAZON_SANDBOX",
    )
    for key in keys:
        host = urlsplit(json.loads(env[key])["host"])
        assert host.hostname == "sandbox", f"{key} must point at the sandbox service"
        assert host.port in ports, f"{key}: the sandbox does not serve port {host.port}"


def test_every_connection_the_shipped_config_uses_is_provided(services: dict[str, dict[str, Any]]) -> None:
    """A channel, supplier or ERP enabled in include/config without its connection fails at run time."""
    from commerce_sync.config import load_config

    config = load_config(REPO / "include" / "config")
    conn_ids = {getattr(config.erp, "conn_id", None)}
    conn_ids |= {getattr(s.transport, "conn_id", None) for s in config.suppliers if s.enabled}
    conn_ids |= {c.conn_id for c in config.channels if c.enabled}
    conn_ids |= {getattr(c.feed, "target_conn_id", None) for c in config.channels if c.enabled and c.feed}
    env = _environment(services["airflow-scheduler"])
    missing = sorted(f"AIRFLOW_CONN_{c.upper()}" for c in conn_ids if c and f"AIRFLOW_CONN_{c.upper()}" not in env)
    assert not missing, f"docker-compose.yaml lacks the connections the shipped config uses: {missing}"


def _workers(services: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Celery worker services and their command, as argv."""
    found = {}
    for name, service in services.items():
        command = service.get("command") or []
        argv = shlex.split(command) if isinstance(command, str) else [str(part) for part in command]
        if argv[:2] == ["celery", "worker"]:
            found[name] = argv
    return found


def test_celery_executor_with_redis_broker_and_postgres_results(compose: dict[str, Any]) -> None:
    env = {str(k): str(v) for k, v in compose[COMMON_ANCHOR_KEY]["environment"].items()}
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    broker = urlsplit(env["AIRFLOW__CELERY__BROKER_URL"])
    assert (broker.scheme, broker.hostname, broker.port) == ("redis", "redis", 6379)
    backend = env["AIRFLOW__CELERY__RESULT_BACKEND"]
    assert backend.startswith("db+postgresql") and urlsplit(backend.removeprefix("db+")).hostname == "postgres"
    depends = compose[COMMON_ANCHOR_KEY]["depends_on"]
    assert depends["redis"] == {"condition": "service_healthy"}


def test_at_least_two_named_workers_consume_both_queues(services: dict[str, dict[str, Any]]) -> None:
    from commerce_sync.airflow_glue import HUB_QUEUE, MARKETPLACE_QUEUE

    workers = _workers(services)
    assert len(workers) >= 2, f"expected two or more Celery worker services, found {sorted(workers)}"
    names = set()
    for service, argv in workers.items():
        assert service in _services_using_common_anchor(), f"{service} must share the Airflow settings"
        queues = set(argv[argv.index("-q") + 1].split(",")) if "-q" in argv else {"default"}
        assert {HUB_QUEUE, MARKETPLACE_QUEUE} <= queues, f"{service} consumes {sorted(queues)}"
        names.add(argv[argv.index("-H") + 1])
        assert services[service]["environment"]["DUMB_INIT_SETSID"] == "0", "warm shutdown needs DUMB_INIT_SETSID=0"
        assert services[service].get("healthcheck"), service
    assert len(names) == len(workers), "each worker needs its own Celery hostname (-H)"


def test_flower_and_redis_are_not_published_beyond_loopback(services: dict[str, dict[str, Any]]) -> None:
    assert services["flower"]["command"] == "celery flower"
    assert services["flower"]["ports"] == ["127.0.0.1:5555:5555"]
    assert not services["redis"].get("ports"), "the broker stays on the compose network"


def test_init_creates_the_marketplace_pools(services: dict[str, dict[str, Any]]) -> None:
    script = "\n".join(services["airflow-init"]["command"])
    assert "commerce-sync pools --format airflow" in script and "airflow pools import" in script
