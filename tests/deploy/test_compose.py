"""docker-compose.yml, checked offline: its services, what is published, health-gated start-up, named
volumes, secrets that must be set, the mounted config.json loading, and every variable a service is given
being one it reads (its settings, or a ${VAR} of the config.json it mounts)."""

import re
from pathlib import Path

import yaml

from tunescout.common.config import load_config

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
OURS = ("fingerprinter", "matcher", "results", "gateway")


def _settings_reads(service: str) -> set[str]:
    text = (ROOT / "services" / service / "settings.py").read_text()
    return {f"TUNESCOUT_{name}" for name in re.findall(r'env, "([A-Z_]+)"', text)}


def test_services_and_what_is_published():
    services = COMPOSE["services"]
    assert set(services) == {*OURS, "redis", "clickhouse", "mariadb"}
    published = {name for name, s in services.items() if s.get("ports")}
    assert published == {"gateway"} and services["gateway"]["ports"] == ["8000:8000"]


def test_start_up_waits_for_health_and_volumes_are_named():
    services = COMPOSE["services"]
    for name, service in services.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert condition == {"condition": "service_healthy"}, (name, dependency)
            assert dependency in services
    for name in ("redis", "clickhouse", "mariadb"):
        assert "healthcheck" in services[name]
    dockerfile = (ROOT / "Dockerfile").read_text()
    for name in OURS:
        target = services[name]["build"]["target"]
        assert re.search(rf"^FROM runtime AS {target}$", dockerfile, re.M)
        assert re.search(
            rf"^FROM runtime AS {target}\n(?:.*\n)*?HEALTHCHECK", dockerfile, re.M
        )  # gates depends_on
    declared = set(COMPOSE["volumes"])
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith("./") or source in declared, volume


def test_secrets_must_be_set_and_the_config_loads():
    text = (ROOT / "docker-compose.yml").read_text()
    references = re.findall(r"\$\{([A-Z_]+)([^}]*)\}", text)
    assert references and all(rest.startswith("?") for _, rest in references), references
    example = {line.split("=")[0] for line in (ROOT / ".env.example").read_text().splitlines() if "=" in line}
    assert {name for name, _ in references} <= example
    mounts = [v for v in COMPOSE["services"]["matcher"]["volumes"] if v.endswith(":/app/config.json:ro")]
    config_path = ROOT / mounts[0].split(":")[0]
    env = {name: "x" for name in example}
    config = load_config(config_path, env)
    assert {s.database_type for s in config.instances} == {"embedded", "clickhouse", "mysql"}
    assert config.redis is not None and config.redis.host == "redis"


def test_every_variable_given_to_a_service_is_read_by_it():
    config_text = (ROOT / "deploy/compose/config.json").read_text()
    from_config = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", config_text))
    for name in OURS:
        service = COMPOSE["services"][name]
        reads = _settings_reads(name)
        mounts_config = any(v.endswith(":/app/config.json:ro") for v in service.get("volumes", []))
        for variable in service.get("environment", {}):
            assert variable in reads or (mounts_config and variable in from_config), (name, variable)


def test_the_file_validates_against_the_compose_specification():
    from compose_spec import PyCompose  # the compose_spec Rust parser: the Compose specification, strictly

    text = (ROOT / "docker-compose.yml").read_text()
    assert set(PyCompose.from_yaml(text).service_names()) == set(COMPOSE["services"])
    broken = text.replace("restart: unless-stopped", "restart: sometimes", 1)
    try:
        PyCompose.from_yaml(broken)
    except ValueError as exc:
        assert "restart" in str(exc)
    else:
        raise AssertionError("the validator accepted an invalid restart policy")
