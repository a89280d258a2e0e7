"""`tunescout up` refuses a gateway port it cannot listen on before it starts anything."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import pytest

from tunescout.cli import up
from tunescout.cli.up import run_up, unusable_port


def test_a_taken_port_stops_up_at_once_with_the_reason(tmp_path, caplog, monkeypatch):
    # the service's logging set-up would replace pytest's handlers (and stay for later tests)
    monkeypatch.setattr(up, "setup_logging", lambda service: None)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert unusable_port("127.0.0.1", port)
        began = time.monotonic()
        with caplog.at_level(logging.ERROR, logger="tunescout.up"):
            assert run_up(None, tmp_path / "data", "127.0.0.1", port, None) == 2
        assert time.monotonic() - began < 5  # no service was started and waited for
    assert f"cannot listen on 127.0.0.1:{port}" in caplog.text
    assert "--port" in caplog.text
    assert not (tmp_path / "data").exists()  # nothing created either


def test_a_free_port_is_usable():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert unusable_port("127.0.0.1", port) is None


@pytest.mark.skipif(
    Path("/proc/sys/net/ipv4/ip_nonlocal_bind").is_file()
    and Path("/proc/sys/net/ipv4/ip_nonlocal_bind").read_text().strip() != "0",
    reason="this machine lets a socket bind addresses it does not have (net.ipv4.ip_nonlocal_bind)",
)
def test_an_address_of_another_machine_is_not_usable():
    assert unusable_port("192.0.2.1", 8000)  # TEST-NET-1: never an address of this machine
