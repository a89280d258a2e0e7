"""`tunescout index`: fingerprint files and folders through the REST API, resumably.

Each file that finishes (fingerprinted now, or already there: a 409) is appended to a state file at once, so
a run stopped with Ctrl-C, a crash or a failed upload picks up where it left off; a file is known by its
absolute path, size and mtime, so an edited file is uploaded again. A file the API rejects for its content
(HTTP 400: not audio, too short, no audio stream) is recorded too: the next run skips it and says so
(`retry_rejected` sends it again), where other failures (the API down, a timeout, an unreadable file, too
large for the server's limit) are tried again. `jobs` uploads are in flight at a time, on one event loop
sharing one HTTP client.

Exit codes: 0 every file done or already there (or rejected in an earlier run), 1 some files failed or were
rejected in this run, 2 nothing could run (no token, token refused, fingerprinting disabled, API
unreachable, unreadable state file), 130 interrupted by Ctrl-C.
"""

from __future__ import annotations

import asyncio
import email.utils
import enum
import hashlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import httpx
from tqdm import tqdm

from tunescout.common.fingerprint_token import token_path

AUDIO_EXTENSIONS = frozenset(
    {
        ".mp3", ".wav", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac",
        ".mp4", ".m4v", ".mov", ".webm", ".mkv", ".wma", ".aif", ".aiff",
    }
)  # fmt: skip
STATE_VERSION = 1  # the `v` of every line of the state file
STATE_DIR = Path("~/.cache/tunescout")
# fingerprinting a long file takes a while: the read timeout covers the server's whole decode + store
UPLOAD_TIMEOUT = httpx.Timeout(300.0, connect=10.0)
_UNAVAILABLE_CODES = frozenset({502, 503, 504})  # the backend (or a proxy before it) is down: try again later


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one upload tries before it counts as failed."""

    rate_limited_tries: int = 5  # 429s honoured per file (each waits the server's Retry-After)
    unavailable_tries: int = 4  # tries per file on 502/503/504 or a connection error
    backoff_s: float = 1.0  # wait after the first 502/503/504 or connection error; doubles each time
    max_wait_s: float = 300.0  # cap on one wait, whatever Retry-After says
    default_retry_after_s: float = 1.0  # a 429 without a usable Retry-After header


class Outcome(enum.Enum):
    DONE = "done"
    ALREADY_THERE = "already there"
    FAILED = "failed"
    REJECTED = "rejected"  # the API refused the file's content (HTTP 400): sending it again cannot help


@dataclass(frozen=True)
class TrackFile:
    """A local audio/video file to fingerprint; `path` is absolute."""

    path: Path
    size_bytes: int
    mtime_ns: int

    @property
    def key(self) -> tuple[str, int, int]:
        return (str(self.path), self.size_bytes, self.mtime_ns)


@dataclass
class Summary:
    done: int = 0
    already_there: int = 0
    skipped: int = 0  # recorded as finished by an earlier run: not uploaded
    skipped_rejected: int = 0  # recorded as rejected by an earlier run: not uploaded
    to_upload: int = 0
    uploaded: int = 0  # of `to_upload`, those with an answer (done, already there, failed or rejected)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), rejections included


class RunStopped(Exception):
    """An answer that every other upload would get too (wrong token, fingerprinting off, no API)."""


class StateFileError(Exception):
    """The state file cannot be used (unknown version, unreadable)."""


def default_state_path(url: str) -> Path:
    """One state file per API: the same files indexed into two servers are tracked apart."""
    digest = hashlib.sha1(url.encode()).hexdigest()[:12]
    return STATE_DIR.expanduser() / f"index-{digest}.jsonl"


class StateFile:
    """JSON lines, one per finished or rejected file: {"v": 1, "path", "size_bytes", "mtime_ns", "outcome",
    "file_sha1" or "reason", "finished_at"}; the last line of a file wins.

    Lines are only appended and flushed one by one, so an interrupted run leaves at worst a torn last line,
    which the next run ignores.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def outcomes(self) -> dict[tuple[str, int, int], Outcome]:
        """The recorded outcome of each file (by key); lines without a known one count as done."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise StateFileError(f"cannot read the state file {self.path}: {exc}") from exc
        outcomes: dict[tuple[str, int, int], Outcome] = {}
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                version = record["v"]
            except (ValueError, TypeError, KeyError):
                continue  # a line torn by a crash mid-write: that file is simply uploaded again
            if version != STATE_VERSION:
                raise StateFileError(
                    f"the state file {self.path} has a line of version {version!r} (line {number}); this "
                    f"tunescout reads version {STATE_VERSION}. Delete the file, or pass --state with another"
                )
            try:
                key = (str(record["path"]), int(record["size_bytes"]), int(record["mtime_ns"]))
            except (KeyError, TypeError, ValueError):
                continue
            rejected = record.get("outcome") == Outcome.REJECTED.value
            outcomes[key] = Outcome.REJECTED if rejected else Outcome.DONE
        return outcomes

    def record(self, track: TrackFile, outcome: Outcome, detail: str | None) -> None:
        """Appends `track`'s outcome; `detail` is its file_sha1, or for a rejection the API's reason."""
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        line = {
            "v": STATE_VERSION,
            "path": str(track.path),
            "size_bytes": track.size_bytes,
            "mtime_ns": track.mtime_ns,
            "outcome": outcome.value,
            ("reason" if outcome is Outcome.REJECTED else "file_sha1"): detail,
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        self._file.write(json.dumps(line, ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _walk(folder: Path, failures: list[tuple[str, str]]) -> Iterator[Path]:
    """Audio/video files under `folder`, depth first, each folder's entries sorted by name."""

    def on_error(exc: OSError) -> None:
        failures.append((str(exc.filename or folder), f"cannot list the folder: {exc.strerror or exc}"))

    for root, dirs, files in os.walk(folder, onerror=on_error):
        dirs.sort()
        for name in sorted(files):
            if Path(name).suffix.lower() in AUDIO_EXTENSIONS:
                yield Path(root, name)


def collect_tracks(paths: Iterable[Path]) -> tuple[list[TrackFile], list[tuple[str, str]]]:
    """The files to fingerprint, each once, in the order given; and (path, reason) for those that cannot be.

    A file named on the command line is taken whatever its extension (the server says if it is not audio);
    folders contribute only files with an audio/video extension.
    """
    tracks: list[TrackFile] = []
    failures: list[tuple[str, str]] = []
    seen: set[Path] = set()
    for given in paths:
        if given.is_dir():
            candidates: Iterable[Path] = _walk(given, failures)
        elif given.is_file():
            candidates = [given]
        elif given.exists():
            failures.append((str(given), "not a regular file or folder"))
            continue
        else:
            failures.append((str(given), "no such file or folder"))
            continue
        for candidate in candidates:
            path = candidate.resolve()
            if path in seen:
                continue
            seen.add(path)
            try:
                stat = path.stat()
            except OSError as exc:
                failures.append((str(candidate), f"cannot read: {exc.strerror or exc}"))
                continue
            tracks.append(TrackFile(path, stat.st_size, stat.st_mtime_ns))
    return tracks, failures


def _server_message(response: httpx.Response) -> str:
    """`HTTP <code>: <the server's message>`, from the JSON error body when there is one."""
    message = ""
    try:
        body = response.json()
        if isinstance(body, dict):
            message = str(body.get("message") or body.get("error") or "")
    except ValueError:
        message = response.text.strip()[:200]
    return f"HTTP {response.status_code}: {message or response.reason_phrase}"


def _retry_after_s(response: httpx.Response, policy: RetryPolicy) -> float:
    """Retry-After in seconds (a number or an HTTP date), capped at `policy.max_wait_s`."""
    raw = response.headers.get("retry-after", "").strip()
    seconds = policy.default_retry_after_s
    if raw:
        try:
            seconds = float(raw)
        except ValueError:
            try:
                seconds = email.utils.parsedate_to_datetime(raw).timestamp() - time.time()
            except (TypeError, ValueError):
                pass
    return min(max(seconds, 0.0), policy.max_wait_s)


def _stop_reason(response: httpx.Response, url: str) -> str | None:
    """Why the whole run must stop after this answer, or None when only this file is concerned."""
    message = _server_message(response)
    if response.status_code == 401:
        return (
            f"the server refused the fingerprint token ({message}). Pass the right one with --token, or "
            "point --data-dir at the folder where `tunescout up` writes fingerprint_token"
        )
    if response.status_code == 403:
        return f"the server does not accept fingerprinting ({message})"
    if response.status_code in (404, 405):
        return f"{url} does not look like a TuneScout API ({message}); check --url"
    return None


async def _upload(
    client: httpx.AsyncClient,
    url: str,
    token: str,
    track: TrackFile,
    policy: RetryPolicy,
    note: Callable[[str], None],
) -> tuple[Outcome, str | None]:
    """(outcome, the file_sha1 when stored or already there, else why it failed or was rejected);
    RunStopped when fatal."""
    rate_limited = unavailable = 0
    while True:
        try:
            with track.path.open("rb") as f:
                response = await client.post(
                    f"{url}/api/fingerprint",
                    headers={"Authorization": f"Bearer {token}"},
                    files={"file": (track.path.name, f)},
                )
        except OSError as exc:
            return Outcome.FAILED, f"cannot read: {exc.strerror or exc}"
        except httpx.TransportError as exc:
            unavailable += 1
            reason = str(exc) or type(exc).__name__
            if unavailable >= policy.unavailable_tries:
                if isinstance(exc, httpx.ConnectError):
                    raise RunStopped(f"cannot reach {url} ({reason}); is `tunescout up` running?") from exc
                return Outcome.FAILED, f"no answer after {unavailable} tries: {reason}"
            wait_s = min(policy.backoff_s * 2 ** (unavailable - 1), policy.max_wait_s)
            note(f"{reason}: retrying in {wait_s:g} s")
            await asyncio.sleep(wait_s)
            note("")
            continue

        code = response.status_code
        if code in (200, 409):
            try:
                body = response.json()
            except ValueError:
                body = None
            sha1 = body.get("file_sha1") if isinstance(body, dict) else None
            return (Outcome.DONE if code == 200 else Outcome.ALREADY_THERE), sha1
        if code == 429 and rate_limited < policy.rate_limited_tries:
            rate_limited += 1
            wait_s = _retry_after_s(response, policy)
            note(f"rate limited: waiting {wait_s:g} s")
            await asyncio.sleep(wait_s)
            note("")
            continue
        if code in _UNAVAILABLE_CODES and unavailable + 1 < policy.unavailable_tries:
            unavailable += 1
            wait_s = min(policy.backoff_s * 2 ** (unavailable - 1), policy.max_wait_s)
            note(f"server unavailable (HTTP {code}): retrying in {wait_s:g} s")
            await asyncio.sleep(wait_s)
            note("")
            continue
        stop = _stop_reason(response, url)
        if stop is not None:
            raise RunStopped(stop)
        return (Outcome.REJECTED if code == 400 else Outcome.FAILED), _server_message(response)


async def _index_all(
    tracks: list[TrackFile],
    url: str,
    token: str,
    jobs: int,
    policy: RetryPolicy,
    state: StateFile,
    summary: Summary,
    bar: tqdm,
) -> None:
    """Uploads `tracks`, `jobs` at a time, recording each as it finishes; RunStopped stops them all."""
    pending = iter(tracks)  # shared by the workers: each next() hands a file to exactly one of them

    async def worker(client: httpx.AsyncClient) -> None:
        for track in pending:
            outcome, detail = await _upload(client, url, token, track, policy, bar.set_postfix_str)
            if outcome is not Outcome.FAILED:  # a rejection is recorded too: the next run skips it
                state.record(track, outcome, detail)
            if outcome in (Outcome.FAILED, Outcome.REJECTED):
                summary.failures.append((str(track.path), detail or "unknown error"))
                bar.write(f"{outcome.value}: {track.path}: {detail}", file=sys.stderr)
            elif outcome is Outcome.DONE:
                summary.done += 1
            else:
                summary.already_there += 1
            summary.uploaded += 1
            bar.update(1)

    # Ctrl-C through the loop's own handler: it wakes the loop (set_wakeup_fd) whichever thread the signal
    # lands on; asyncio.run's default handler does not, and could leave the loop asleep in epoll for minutes
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    interrupted = False

    def on_sigint() -> None:
        nonlocal interrupted
        interrupted = True
        if main is not None:
            main.cancel()

    try:
        loop.add_signal_handler(signal.SIGINT, on_sigint)
        handled = True
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals here
        handled = False
    stopped: RunStopped | None = None
    limits = httpx.Limits(max_connections=jobs, max_keepalive_connections=jobs)
    try:
        async with httpx.AsyncClient(timeout=UPLOAD_TIMEOUT, limits=limits) as client:
            try:
                async with asyncio.TaskGroup() as group:
                    for _ in range(min(jobs, len(tracks))):
                        group.create_task(worker(client))
            except* RunStopped as errors:
                stopped = RunStopped(str(errors.exceptions[0]))
    except asyncio.CancelledError:
        if interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        if handled:
            loop.remove_signal_handler(signal.SIGINT)
    if stopped is not None:
        raise stopped


def _read_token(token: str | None, data_dir: Path) -> str | None:
    if token:
        return token.strip()
    try:
        return token_path(data_dir).read_text(encoding="utf-8").strip() or None
    except (FileNotFoundError, NotADirectoryError):
        return None


def _print_summary(summary: Summary) -> None:
    line = f"{summary.done} done, {summary.already_there} already there, {len(summary.failures)} failed"
    if summary.skipped:
        line += f" ({summary.skipped} skipped: finished in an earlier run)"
    if summary.skipped_rejected:
        line += (
            f"; {summary.skipped_rejected} skipped: rejected in an earlier run (not usable audio; "
            "--retry-rejected sends them again)"
        )
    print(line)
    if summary.failures:
        print("Failed:")
        for path, reason in summary.failures:
            print(f"  {path}: {reason}")


def run_index(
    paths: list[Path],
    url: str,
    token: str | None,
    data_dir: Path,
    jobs: int,
    state_path: Path | None,
    *,
    retry: RetryPolicy | None = None,
    retry_rejected: bool = False,
) -> int:
    """Fingerprints `paths` (files, and folders recursively) through the API at `url`; the exit code.
    `retry_rejected`: also send the files an earlier run's API rejected (HTTP 400)."""
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        print(f"tunescout index: --url must start with http:// or https://, got {url!r}", file=sys.stderr)
        return 2
    if jobs < 1:
        print(f"tunescout index: --jobs must be 1 or more, got {jobs}", file=sys.stderr)
        return 2
    resolved_token = _read_token(token, data_dir)
    if resolved_token is None:
        print(
            f"tunescout index: no fingerprint token: none given with --token and none in "
            f"{token_path(data_dir)}. `tunescout up` prints the token when it starts and writes it to "
            "data/fingerprint_token (pass --data-dir if it runs elsewhere, or --token).",
            file=sys.stderr,
        )
        return 2
    state = StateFile(state_path if state_path is not None else default_state_path(url))
    try:
        recorded = state.outcomes()
    except StateFileError as exc:
        print(f"tunescout index: {exc}", file=sys.stderr)
        return 2
    summary = Summary()
    stopped: str | None = None
    try:
        tracks, summary.failures = collect_tracks(paths)
        todo = []
        for track in tracks:
            outcome = recorded.get(track.key)
            if outcome is None or (outcome is Outcome.REJECTED and retry_rejected):
                todo.append(track)
            elif outcome is Outcome.REJECTED:
                summary.skipped_rejected += 1
            else:
                summary.skipped += 1
        summary.to_upload = len(todo)
        if not tracks and not summary.failures:
            print("tunescout index: no audio or video files found", file=sys.stderr)
        with tqdm(total=len(todo), unit="file", desc="fingerprinting", file=sys.stderr, disable=None) as bar:
            policy = retry or RetryPolicy()
            try:
                asyncio.run(_index_all(todo, url, resolved_token, jobs, policy, state, summary, bar))
            except RunStopped as exc:
                stopped = str(exc)
    except KeyboardInterrupt:
        left = summary.to_upload - summary.uploaded
        print(
            f"Interrupted with {left} file(s) left; run the same command to resume (state: {state.path})",
            file=sys.stderr,
        )
        _print_summary(summary)
        return 130
    finally:
        state.close()
    if stopped is not None:
        print(f"tunescout index: stopped: {stopped}", file=sys.stderr)
        _print_summary(summary)
        return 2
    _print_summary(summary)
    return 1 if summary.failures else 0
