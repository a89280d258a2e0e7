"""Logging set-up shared by the services: one record per line on stderr, JSON for machines (the default
when stderr is not a terminal: containers, Kubernetes) or text for people; every record carries the
service name and, while a request is served, its request id."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from tunescout.common.request_id import REQUEST_ID

_base_factory = logging.getLogRecordFactory()


def _record_with_request_id(*args: object, **kwargs: object) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    record.request_id = REQUEST_ID.get()
    return record


class JsonFormatter(logging.Formatter):
    """{"timestamp", "severity", "service", "logger", "message", "request_id"?, "exception"?} per line."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "severity": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid:
            entry["request_id"] = rid
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        rid = getattr(record, "request_id", None)
        return f"{line} [{rid}]" if rid else line


def setup_logging(service: str, log_format: str = "auto", level: int | str = logging.INFO) -> None:
    """Configure the root logger once for a service process. `log_format`: json, text or auto."""
    logging.setLogRecordFactory(_record_with_request_id)
    use_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if use_json else TextFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("numba", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
