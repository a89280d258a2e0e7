"""`tunescout recognize`: which track is this clip, through the REST API.

Prints a short table of the best matches (or the API's JSON with --json). Exit codes: 0 a match, 1 no
match, 2 an error (no such file, API unreachable, or the server's error message, printed to stderr).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx

# recognising reads, decodes and matches the whole clip server-side before answering
RECOGNIZE_TIMEOUT = httpx.Timeout(120.0, connect=10.0)
_MAX_TITLE_CHARS = 40  # longer titles and artists are cut so a row fits a terminal


def format_offset(seconds: float) -> str:
    """`m:ss.s`, e.g. 83.46 -> "1:23.5"; negative when the clip starts before the track."""
    sign = "-" if seconds < 0 else ""
    minutes, tenths = divmod(round(abs(seconds) * 10), 600)
    return f"{sign}{minutes}:{tenths / 10:04.1f}"


def _cut(text: str) -> str:
    return text if len(text) <= _MAX_TITLE_CHARS else text[: _MAX_TITLE_CHARS - 1] + "…"


def format_results(results: list[dict[str, Any]]) -> str:
    """The matches as an aligned table: rank, title, artist, offset in the track, confidence in %."""
    rows = [("#", "title", "artist", "offset", "confidence")]
    for rank, result in enumerate(results, 1):
        title = str(result.get("title") or result.get("song_name") or "?")
        offset = result.get("offset_seconds")
        confidence = result.get("confidence")
        rows.append(
            (
                str(rank),
                _cut(title),
                _cut(str(result.get("artist") or "")),
                format_offset(float(offset)) if offset is not None else "?",
                f"{float(confidence) * 100:.1f}%" if confidence is not None else "?",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right_aligned = {0, 3, 4}
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if i in right_aligned else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _error_message(response: httpx.Response, body: Any) -> str:
    message = ""
    if isinstance(body, dict):
        message = str(body.get("message") or body.get("error") or "")
    elif not body:
        message = response.text.strip()[:200]
    return f"HTTP {response.status_code}: {message or response.reason_phrase}"


def run_recognize(
    file: Path, start: float | None, duration: float | None, url: str, json_output: bool
) -> int:
    """Uploads `file` (from `start` s, `duration` s long) to `url`/api/recognize; the exit code."""
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        print(f"tunescout recognize: --url must start with http:// or https://, got {url!r}", file=sys.stderr)
        return 2
    form = {
        name: repr(value) for name, value in (("start", start), ("duration", duration)) if value is not None
    }
    try:
        with file.open("rb") as f, httpx.Client(timeout=RECOGNIZE_TIMEOUT) as client:
            response = client.post(f"{url}/api/recognize", files={"file": (file.name, f)}, data=form)
    except OSError as exc:
        print(f"tunescout recognize: cannot read {file}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except httpx.TransportError as exc:
        reason = str(exc) or type(exc).__name__
        print(
            f"tunescout recognize: cannot reach {url} ({reason}); is `tunescout up` running?", file=sys.stderr
        )
        return 2
    try:
        body = response.json()
    except ValueError:
        body = None
    if json_output and body is not None:
        print(response.text.strip())
    if response.status_code != 200 or not isinstance(body, dict) or body.get("status") != "success":
        print(f"tunescout recognize: {_error_message(response, body)}", file=sys.stderr)
        return 2
    results = body.get("results") or []
    if not results:
        if not json_output:
            print(f"No match: {body.get('message') or 'the clip matches no stored track'}")
        return 1
    if not json_output:
        print(format_results(results))
        if body.get("unavailable_shards"):
            print(f"note: {body.get('message')}", file=sys.stderr)
    return 0
