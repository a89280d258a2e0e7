"""deploy/k8s, checked offline: every overlay renders with `kubectl kustomize`, every object validates
against the Kubernetes schemas (kubernetes-validate), and the security settings, probes, autoscaling and
network policies are what operators expect."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tunescout.common.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = sorted(p.name for p in (ROOT / "deploy/k8s/overlays").iterdir() if p.is_dir())
INTERNAL = {"fingerprinter": 50051, "matcher": 50052, "results": 50053}


def _render(overlay: str) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("kubectl is required in CI (Debian's kubectl package)")
        pytest.skip("kubectl is not installed (Debian's kubectl package renders the overlays)")
    out = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "deploy/k8s/overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="module", params=OVERLAYS)
def objects(request):
    return _render(request.param)


def _of(objects, kind):
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def test_overlays_exist():
    assert {"local", "production"} <= set(OVERLAYS)


def test_every_object_validates_against_the_kubernetes_schemas(objects):
    for obj in objects:
        kubernetes_validate.validate(obj, "1.30", strict=True)


def test_deployments_are_hardened_probed_and_bounded(objects):
    deployments = _of(objects, "Deployment")
    assert set(deployments) == {*INTERNAL, "gateway"}
    for name, dep in deployments.items():
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        (container,) = pod["containers"]
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert (
            {"cpu", "memory"}
            <= set(container["resources"]["requests"])
            <= set(container["resources"]["limits"])
        )
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert pod["terminationGracePeriodSeconds"] > float(env["TUNESCOUT_GRACE_S"])
        if name in INTERNAL:
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                assert container[probe]["grpc"]["port"] == INTERNAL[name], (name, probe)
        else:
            assert container["readinessProbe"]["httpGet"]["path"] == "/api/health"
        assert any(
            m["mountPath"] == "/tmp" for m in container["volumeMounts"]
        )  # writable: the root fs is not


def test_services_name_their_ports(objects):
    services = _of(objects, "Service")
    for name in INTERNAL:
        assert "grpc" in {p["name"] for p in services[name]["spec"]["ports"]}
    assert "http" in {p["name"] for p in services["gateway"]["spec"]["ports"]}


def test_autoscaling_disruption_budgets_and_ingress(objects):
    assert set(_of(objects, "HorizontalPodAutoscaler")) == {"fingerprinter", "matcher"}
    assert {*INTERNAL, "gateway"} <= set(_of(objects, "PodDisruptionBudget"))
    (ingress,) = _of(objects, "Ingress").values()
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == "gateway"


def test_network_policies_fence_the_internal_services_and_the_databases(objects):
    policies = _of(objects, "NetworkPolicy")
    deny = policies["default-deny-ingress"]["spec"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"] and "ingress" not in deny
    internal = policies["internal-from-gateway"]["spec"]
    assert set(internal["podSelector"]["matchExpressions"][0]["values"]) == set(INTERNAL)
    assert internal["ingress"][0]["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/component": "gateway"}}}
    ]
    databases = policies["fingerprint-db-from-matcher"]["spec"]
    assert databases["ingress"][0]["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/component": "matcher"}}}
    ]


def test_config_map_holds_a_config_json_that_loads(objects):
    (config_map,) = _of(objects, "ConfigMap").values()
    raw = json.loads(config_map["data"]["config.json"])
    config = parse_config(raw)
    assert config.instances and all(
        s.database_type != "embedded" for s in config.instances
    )  # pods are stateless
