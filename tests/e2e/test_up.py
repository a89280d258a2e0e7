"""`tunescout up`: one command starts everything on the embedded default, prints the token it created,
restarts a crashed service, and stops everything on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.services.clips import DATA
from tunescout.cli.up import free_port


def _children(pid: int) -> dict[str, int]:
    """Service name -> pid of the child processes of `pid`."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            for part in cmdline:
                if part.startswith(b"services."):
                    found[part.decode().split(".")[1]] = int(entry.name)
    return found


def _wait_healthy(url: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the service did not become healthy"
        time.sleep(0.3)


def test_up_runs_restarts_and_stops(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data_dir = tmp_path / "data"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tunescout.cli.main",
            "up",
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        first_line = process.stdout.readline()
        token = (data_dir / "fingerprint_token").read_text().strip()
        assert len(token) >= 22 and token in first_line and "new" in first_line
        assert oct((data_dir / "fingerprint_token").stat().st_mode & 0o777) == "0o600"
        _wait_healthy(url)
        r = httpx.post(
            f"{url}/api/fingerprint",
            headers={"Authorization": f"Bearer {token}"},
            files={"file": ("knolls.opus", (DATA / "knolls.opus").read_bytes())},
            timeout=60,
        )
        assert r.status_code == 200, r.text

        matcher = _children(process.pid)["matcher"]
        os.kill(matcher, signal.SIGKILL)  # a crash
        deadline = time.monotonic() + 120
        while _children(process.pid).get("matcher") in (None, matcher):
            assert time.monotonic() < deadline, "the matcher was not restarted"
            time.sleep(0.3)
        _wait_healthy(url)
        r = httpx.post(
            f"{url}/api/recognize",
            files={"file": ("k.opus", (DATA / "knolls.opus").read_bytes())},
            data={"start": "3", "duration": "8"},
            timeout=60,
        )
        assert r.json()["results"][0]["song_name"] == "knolls"  # stored data survived the crash

        children = set(_children(process.pid).values())
        assert len(children) == 4
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        assert not any(Path(f"/proc/{pid}").exists() for pid in children)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
