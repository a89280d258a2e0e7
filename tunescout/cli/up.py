"""`tunescout up`: the four services as supervised child processes, the gateway on HOST:PORT.

The internal services listen on free loopback ports; the gateway starts once all three say SERVING on the
standard health service. A child that dies is logged and restarted (with a growing pause if it keeps
dying). Ctrl-C or SIGTERM stops the gateway first, then the rest, each with its grace period.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tunescout.common.config import ConfigError, load_config
from tunescout.common.fingerprint_token import resolve_token, token_path
from tunescout.common.logs import setup_logging

logger = logging.getLogger("tunescout.up")

START_TIMEOUT_S = 300.0  # the first start compiles the numba kernels
STOP_TIMEOUT_S = 20.0  # after SIGTERM, before SIGKILL
MAX_RESTART_PAUSE_S = 30.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def unusable_port(host: str, port: int) -> str | None:
    """Why the gateway could not listen on `host:port` (taken, or not an address of this machine); None
    when it can. Bound as uvicorn binds (SO_REUSEADDR), then released at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


@dataclass
class Child:
    name: str
    module: str
    env: dict[str, str]
    address: str  # host:port it serves on
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    next_start: float = 0.0
    failures: list[float] = field(default_factory=list)

    def start(self) -> None:
        env = {**os.environ, **self.env}
        self.process = subprocess.Popen([sys.executable, "-m", self.module], env=env)
        self.started_at = time.monotonic()
        logger.info("started %s (pid %d) on %s", self.name, self.process.pid, self.address)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout_s: float) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop in %.0f s; killing it", self.name, timeout_s)
            self.process.kill()
            self.process.wait()


def _grpc_serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1.0)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def _http_serving(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


class Supervisor:
    def __init__(self, children: list[Child], gateway: Child, url: str) -> None:
        self.internal = children
        self.gateway = gateway
        self.url = url
        self.stopping = False

    def _signal(self, signum: int, frame: object) -> None:
        if not self.stopping:
            logger.info("stopping (signal %d)", signum)
        self.stopping = True

    def _wait_until(self, check: object, what: str, child: Child) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.stopping and time.monotonic() < deadline:
            if not child.alive():
                logger.error(
                    "%s exited during start-up (code %s)", what, child.process and child.process.returncode
                )
                return False
            if check():  # type: ignore[operator]
                return True
            time.sleep(0.2)
        if not self.stopping:
            logger.error("%s did not become ready in %.0f s", what, START_TIMEOUT_S)
        return False

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._signal)
        signal.signal(signal.SIGINT, self._signal)
        try:
            for child in self.internal:
                child.start()
            for child in self.internal:
                if not self._wait_until(lambda c=child: _grpc_serving(c.address), child.name, child):
                    return 0 if self.stopping else 1
            self.gateway.start()
            if not self._wait_until(lambda: _http_serving(self.url), "gateway", self.gateway):
                return 0 if self.stopping else 1
            print(f"tunescout is up: {self.url}  (API docs: {self.url}/docs; Ctrl-C stops it)", flush=True)
            while not self.stopping:
                for child in [*self.internal, self.gateway]:
                    self._supervise(child)
                time.sleep(0.5)
            return 0
        finally:
            self._shutdown()

    def _supervise(self, child: Child) -> None:
        if child.alive() or self.stopping:
            return
        now = time.monotonic()
        if child.process is not None:
            code = child.process.returncode
            child.process = None
            child.failures = [t for t in child.failures if now - t < 300] + [now]
            pause = min(MAX_RESTART_PAUSE_S, 0.5 * 2 ** (len(child.failures) - 1))
            child.next_start = now + pause
            logger.error("%s exited with code %s; restarting it in %.1f s", child.name, code, pause)
        if now >= child.next_start:
            child.restarts += 1
            child.start()

    def _shutdown(self) -> None:
        self.stopping = True
        self.gateway.stop()
        self.gateway.wait(STOP_TIMEOUT_S)
        for child in self.internal:
            child.stop()
        for child in self.internal:
            child.wait(STOP_TIMEOUT_S)
        logger.info("all services stopped")


def run_up(config_path: Path | None, data_dir: Path, host: str, port: int, workers: int | None) -> int:
    setup_logging("up")
    if config_path is None and Path("config.json").is_file():
        config_path = Path("config.json")
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        logger.error("%s", exc)
        return 2
    # checked before anything starts: a port held by another server (another tunescout answers
    # /api/health too) would otherwise surface only as the gateway's exit after the other services start
    problem = unusable_port(host, port)
    if problem is not None:
        logger.error(
            "cannot listen on %s:%d (%s): stop what uses it, or choose another --port", host, port, problem
        )
        return 2
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    token, created = resolve_token(config, data_dir, create=True)
    common = {"TUNESCOUT_DATA_DIR": str(data_dir)}
    if config_path is not None:
        common["TUNESCOUT_CONFIG"] = str(config_path.resolve())
    ports = {name: free_port() for name in ("fingerprinter", "matcher", "results")}
    internal = [
        Child(name, f"services.{name}", {**common, "TUNESCOUT_PORT": str(p)}, f"127.0.0.1:{p}")
        for name, p in ports.items()
    ]
    if workers is not None:
        internal[0].env["TUNESCOUT_WORKERS"] = str(workers)
    gateway = Child(
        "gateway",
        "services.gateway",
        {
            **common,
            "TUNESCOUT_HOST": host,
            "TUNESCOUT_PORT": str(port),
            "TUNESCOUT_FINGERPRINTER_ADDRESS": internal[0].address,
            "TUNESCOUT_MATCHER_ADDRESS": internal[1].address,
            "TUNESCOUT_RESULTS_ADDRESS": internal[2].address,
        },
        f"{host}:{port}",
    )
    if config.fingerprint_token:
        print(f"fingerprint token: the one set in {config.source}", flush=True)
    else:
        kept = token_path(data_dir)
        print(f"fingerprint token ({'new, ' if created else ''}kept in {kept}): {token}", flush=True)
    logger.info("config: %s; data: %s", config.source, data_dir)
    url_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return Supervisor(internal, gateway, f"http://{url_host}:{port}").run()
