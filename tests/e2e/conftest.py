"""The services as real processes on free ports, and gateways in front of them with their own config.json."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tunescout.cli.up import Child, _grpc_serving, _http_serving, free_port

FINGERPRINT_TOKEN = "e2e-token-0123456789"
START_TIMEOUT_S = 300


def _wait(check, child: Child, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not check():
        assert child.alive(), f"{what} exited during start-up"
        assert time.monotonic() < deadline, f"{what} did not start in {START_TIMEOUT_S} s"
        time.sleep(0.2)


class Stack:
    """fingerprinter + matcher + results (on the embedded default unless `config` names stores);
    `gateway(config)` adds a gateway."""

    def __init__(self, data_dir: Path, config: dict | None = None) -> None:
        self.data_dir = data_dir
        common = {"TUNESCOUT_DATA_DIR": str(data_dir), "TUNESCOUT_WORKERS": "2", "TUNESCOUT_GRACE_S": "2"}
        if config is not None:
            data_dir.mkdir(parents=True, exist_ok=True)
            path = data_dir / "stores.json"
            path.write_text(json.dumps(config))
            common["TUNESCOUT_CONFIG"] = str(path)
        self.internal = []
        for name in ("fingerprinter", "matcher", "results"):
            port = free_port()
            env = {**common, "TUNESCOUT_PORT": str(port)}
            self.internal.append(Child(name, f"services.{name}", env, f"127.0.0.1:{port}"))
        self.gateways: list[Child] = []

    def start(self) -> None:
        for child in self.internal:
            child.start()
        for child in self.internal:
            _wait(lambda c=child: _grpc_serving(c.address), child, child.name)

    def gateway(self, config: dict, metrics_port: int = 0) -> str:
        path = self.data_dir / f"config-{len(self.gateways)}.json"
        path.write_text(json.dumps(config))
        port = free_port()
        env = {
            "TUNESCOUT_CONFIG": str(path),
            "TUNESCOUT_DATA_DIR": str(self.data_dir),
            "TUNESCOUT_PORT": str(port),
            "TUNESCOUT_FINGERPRINTER_ADDRESS": self.internal[0].address,
            "TUNESCOUT_MATCHER_ADDRESS": self.internal[1].address,
            "TUNESCOUT_RESULTS_ADDRESS": self.internal[2].address,
            "TUNESCOUT_METRICS_PORT": str(metrics_port),
        }
        child = Child(f"gateway{len(self.gateways)}", "services.gateway", env, f"127.0.0.1:{port}")
        child.start()
        self.gateways.append(child)
        url = f"http://127.0.0.1:{port}"
        _wait(lambda: _http_serving(url), child, child.name)
        return url

    def stop(self) -> None:
        for child in [*self.gateways, *self.internal]:
            child.stop()
        for child in [*self.gateways, *self.internal]:
            child.wait(20)


@pytest.fixture(scope="package")
def stack(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("stack"))
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


MAIN_CONFIG = {
    "fingerprinting": {"allow": True, "token": FINGERPRINT_TOKEN},
    "recognizing": {"max_duration": 10, "max_file_size_mb": 1},
    "rate_limit": {"fetching_results": "1000 per second", "recognizing": "1000 per second",
                   "fingerprinting": "1000 per second"},
    "allowed_origin": ["http://ui.example"],
}  # fmt: skip


@pytest.fixture(scope="package")
def api(stack):
    with httpx.Client(base_url=stack.gateway(MAIN_CONFIG), timeout=60) as client:
        yield client
