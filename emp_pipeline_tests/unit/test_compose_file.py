"""docker-compose.yml, deploy/dagster.yaml, the Dockerfile and Prometheus's files agree with each other,
and the root dagster.yaml is the embedded local instance.

No Docker engine runs here, so the deployment is checked by reading it; the e2e production rehearsal then
starts the Dagster services with the commands read from this same compose file.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from emp_pipeline_tests.e2e.conftest import (
    COMPOSE_FILE,
    LOCAL_INSTANCE_FILE,
    PRODUCTION_INSTANCE_FILE,
    PRODUCTION_WORKSPACE_FILE,
    REHEARSED_ONE_SHOT,
    REHEARSED_SERVICES,
    REPO_ROOT,
)

ENV_EXAMPLE = REPO_ROOT / ".env.example"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN_KEY|API_KEY")
SUBSTITUTION = re.compile(r"\$\{([A-Z0-9_]+)(?::?[-?][^}]*)?\}")


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return _load(COMPOSE_FILE)


@pytest.fixture(scope="module")
def instance() -> dict:
    return _load(PRODUCTION_INSTANCE_FILE)


@pytest.fixture(scope="module")
def local_instance() -> dict:
    return _load(LOCAL_INSTANCE_FILE)


def _env_example() -> dict[str, str]:
    pairs = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def _environment(service: dict) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {key: str(value) for key, value in environment.items()}


def test_the_stack_has_every_service_of_the_issue(compose):
    assert set(compose["services"]) == {
        "postgres",
        "redis",
        "emp_migrate",
        "emp_user_code",
        "dagster_webserver",
        "dagster_daemon",
        "emp_metrics",
        "prometheus",
    }


def test_the_rehearsal_starts_exactly_the_dagster_services(compose):
    dagster_services = {
        name
        for name, service in compose["services"].items()
        if service.get("command")
        and service["command"][0] in {"dagster", "dagster-webserver", "dagster-daemon"}
    }
    assert dagster_services == set(REHEARSED_SERVICES)
    commands = {name: compose["services"][name]["command"] for name in REHEARSED_SERVICES}
    assert commands["emp_user_code"][:3] == ["dagster", "code-server", "start"]
    assert commands["emp_user_code"][commands["emp_user_code"].index("-m") + 1] == "emp_pipeline.definitions"
    assert commands["dagster_webserver"][0] == "dagster-webserver"
    assert commands["dagster_daemon"][:2] == ["dagster-daemon", "run"]
    # The registry migration the rehearsal runs first is the one-shot service the code server waits for.
    assert compose["services"][REHEARSED_ONE_SHOT]["command"] == ["emp", "db", "upgrade"]
    code_server_waits_for = compose["services"]["emp_user_code"]["depends_on"][REHEARSED_ONE_SHOT]
    assert code_server_waits_for == {"condition": "service_completed_successfully"}


def test_published_ports_listen_on_loopback_only(compose):
    published = [
        (name, port) for name, service in compose["services"].items() for port in service.get("ports", [])
    ]
    assert {name for name, _ in published} == {"dagster_webserver", "emp_metrics", "prometheus"}
    for name, port in published:
        assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_every_long_running_service_has_a_health_check(compose):
    for name, service in compose["services"].items():
        if name == "emp_migrate":
            assert service["restart"] == "no"
            continue
        check = service.get("healthcheck", {}).get("test")
        assert check and check[0] in {"CMD", "CMD-SHELL"}, name


def test_redis_persists_the_token_across_restarts(compose):
    redis = compose["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and "--dir /data" in command
    assert "redis_data:/data" in redis["volumes"]
    assert "redis_data" in compose["volumes"]
    assert "--requirepass" in command


def test_secrets_come_from_the_env_file_never_from_the_compose_file(compose):
    example = _env_example()
    for name, service in compose["services"].items():
        for key, value in _environment(service).items():
            if SECRET_NAME.search(key):
                assert value.startswith("${"), f"{name}.{key} is a literal secret"
            for variable in SUBSTITUTION.findall(value):
                assert variable in example, f"{name}.{key} uses ${{{variable}}}, missing from .env.example"
    for key, value in example.items():
        if SECRET_NAME.search(key):
            assert value == "", f".env.example ships a value for {key}"
    for ignore_file in (".gitignore", ".dockerignore"):
        assert ".env" in (REPO_ROOT / ignore_file).read_text().split(), ignore_file


REQUIRED = re.compile(r"\$\{([A-Z0-9_]+):\?([^}]*)\}")


def _refusals(environment: dict[str, str]) -> dict[str, str]:
    """What `docker compose up` refuses with this .env: ${VAR:?message} stops when VAR is unset or empty."""
    return {
        name: message
        for name, message in REQUIRED.findall(COMPOSE_FILE.read_text())
        if not environment.get(name)
    }


def test_compose_refuses_to_start_with_the_unedited_env_example():
    example = _env_example()
    assert "change-me" not in ENV_EXAMPLE.read_text()  # no placeholder that would start as a password
    refused = _refusals(example)
    assert {"DAGSTER_PG_PASSWORD", "REDIS_PASSWORD"} <= set(refused)
    assert refused["DAGSTER_PG_PASSWORD"] == "set DAGSTER_PG_PASSWORD in .env"
    # Every password the stack uses is required that way, wherever compose substitutes it.
    compose_text = COMPOSE_FILE.read_text()
    for name in ("DAGSTER_PG_PASSWORD", "REDIS_PASSWORD"):
        assert compose_text.count(f"${{{name}") == compose_text.count(f"${{{name}:?")
    # docs/deployment.md's first start fills them in; then compose has nothing left to refuse.
    filled = {**example, "DAGSTER_PG_PASSWORD": "a" * 48, "REDIS_PASSWORD": "b" * 48}
    assert _refusals(filled) == {}


def test_instance_storage_reads_every_connection_setting_from_the_environment(instance):
    database = instance["storage"]["postgres"]["postgres_db"]
    assert {key: database[key] for key in ("hostname", "port", "username", "password", "db_name")} == {
        "hostname": {"env": "DAGSTER_PG_HOST"},
        "port": {"env": "DAGSTER_PG_PORT"},
        "username": {"env": "DAGSTER_PG_USER"},
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "db_name": {"env": "DAGSTER_PG_DB"},
    }


@pytest.mark.parametrize("config", ["instance", "local_instance"])
def test_queued_runs_allow_one_live_execution_at_a_time(config, request):
    coordinator = request.getfixturevalue(config)["run_coordinator"]
    assert coordinator["class"] == "QueuedRunCoordinator"
    assert {"key": "emp/live-execution", "limit": 1} in coordinator["config"]["tag_concurrency_limits"]


@pytest.mark.parametrize("config", ["instance", "local_instance"])
def test_run_monitoring_marks_dead_runs_failed_and_telemetry_is_off(config, request):
    settings = request.getfixturevalue(config)
    assert settings["run_monitoring"]["enabled"] is True
    assert settings["run_monitoring"]["start_timeout_seconds"] > 0
    assert settings["telemetry"] == {"enabled": False}


def test_the_local_instance_needs_no_server_and_no_environment_variable(local_instance):
    """`dagster dev` in the root must just work: SQLite under .emp, nothing read from the environment."""
    assert local_instance["storage"] == {"sqlite": {"base_dir": ".emp/dagster_home"}}
    for key in ("local_artifact_storage", "compute_logs"):
        assert local_instance[key]["config"]["base_dir"].startswith(".emp/dagster_home"), key
    assert "env:" not in LOCAL_INSTANCE_FILE.read_text()
    launcher = local_instance["run_launcher"]
    assert (launcher["module"], launcher["class"]) == (
        "emp_pipeline.instance.run_launcher",
        "LocalProcessRunLauncher",
    )


def test_the_local_workspace_names_the_code_location_emp_pipeline():
    (entry,) = _load(REPO_ROOT / "workspace.yaml")["load_from"]
    assert entry == {
        "python_module": {"module_name": "emp_pipeline.definitions", "location_name": "emp_pipeline"}
    }
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    assert 'module_name = "emp_pipeline.definitions"' in pyproject
    assert 'code_location_name = "emp_pipeline"' in pyproject


def test_docker_run_launcher_matches_the_compose_network_volumes_and_image(compose, instance):
    launcher = instance["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_docker", "DockerRunLauncher")
    config = launcher["config"]
    networks = {spec.get("name", key) for key, spec in compose["networks"].items()}
    assert set(config["networks"]) <= networks
    volume_names = {(spec or {}).get("name", key) for key, spec in compose["volumes"].items()}
    for mount in config["container_kwargs"]["volumes"]:
        assert mount.split(":")[0] in volume_names, mount
    daemon = compose["services"]["dagster_daemon"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in daemon["volumes"]
    code_server = compose["services"]["emp_user_code"]
    assert _environment(code_server)["DAGSTER_CURRENT_IMAGE"] == code_server["image"]


def test_run_containers_get_every_setting_the_pipeline_reads(compose, instance):
    """A variable Settings reads but the launcher does not pass would silently fall back to its default in
    run containers while the code server uses the configured value."""
    read = set(
        re.findall(r'env\.get\("([A-Z0-9_]+)"', (REPO_ROOT / "emp_pipeline" / "settings.py").read_text())
    )
    not_for_runs = {
        "DATABASE_URL",  # an alias: compose sets EMP_DATABASE_URL
        "CTRADER_REFRESH_TOKEN",  # spent once by `emp token authorize --from-refresh-token`, never by a run
    }
    passed = set(instance["run_launcher"]["config"]["env_vars"])
    assert read - not_for_runs <= passed, sorted(read - not_for_runs - passed)
    defined = set(_environment(compose["services"]["dagster_daemon"])) | set(_env_example())
    assert passed <= defined, sorted(passed - defined)


def test_workspace_points_at_the_code_server_service(compose):
    workspace = _load(PRODUCTION_WORKSPACE_FILE)
    (entry,) = workspace["load_from"]
    command = compose["services"]["emp_user_code"]["command"]
    assert entry["grpc_server"]["host"] == "emp_user_code"
    assert str(entry["grpc_server"]["port"]) == command[command.index("-p") + 1]
    assert entry["grpc_server"]["location_name"] == command[command.index("--location-name") + 1]


def test_the_image_installs_the_instance_and_workspace_files_the_services_use(compose):
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert re.search(r"DAGSTER_HOME=/\S+", dockerfile)
    assert "COPY deploy/dagster.yaml ${DAGSTER_HOME}/dagster.yaml" in dockerfile
    for name in ("dagster_webserver", "dagster_daemon"):
        command = compose["services"][name]["command"]
        workspace = command[command.index("-w") + 1]
        assert f"COPY deploy/workspace.yaml {workspace}" in dockerfile, name
    # deploy/ is kept out of the build context but for the two files the image copies.
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    assert "deploy" in ignored
    assert {"!deploy/dagster.yaml", "!deploy/workspace.yaml"} <= set(ignored)
    # The image installs the deploy extra (the Docker run launcher) at the locked versions.
    assert 'pip install -c constraints.txt ".[deploy]"' in dockerfile
    assert "COPY setup.py pyproject.toml constraints.txt ./" in dockerfile


def test_prometheus_scrapes_the_exporter_and_loads_the_alert_rules(compose):
    prometheus = _load(REPO_ROOT / "deploy" / "prometheus.yml")
    exporter_command = compose["services"]["emp_metrics"]["command"]
    port = exporter_command[exporter_command.index("--port") + 1]
    targets = [
        target
        for job in prometheus["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    ]
    assert f"emp_metrics:{port}" in targets
    mounts = compose["services"]["prometheus"]["volumes"]
    mounted_rules = {mount.split(":")[1] for mount in mounts if mount.startswith("./deploy/")}
    assert set(prometheus["rule_files"]) <= mounted_rules
    alerts = {
        rule["alert"]: rule["expr"]
        for group in _load(REPO_ROOT / "deploy" / "alerts.yml")["groups"]
        for rule in group["rules"]
    }
    assert re.search(
        r"emp_token_seconds_to_expiry\s*<\s*24\s*\*\s*3600", alerts["CTraderTokenExpiresWithin24h"]
    )
    assert "emp_market_last_bar_timestamp_seconds" in alerts["MarketDataStale"]
