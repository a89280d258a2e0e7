"""Logging set-up shared by the services: one line per record on stderr, prefixed with the service name."""

from __future__ import annotations

import logging
import sys


def setup_logging(service: str, level: int | str = logging.INFO) -> None:
    """Configure the root logger once for a service process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("numba", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
