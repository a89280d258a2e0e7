"""`tunescout index` against a stand-in TuneScout API served over real HTTP (uvicorn in a thread).

The stand-in decodes nothing: a file's sha1 is its identity, b"not audio" is bad audio, and file names
starting with busy / flaky / down / slow get a 429 once / a 503 once / 503 always / a held answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from tests.cli.standin import serve
from tunescout.cli.index import STATE_VERSION, RetryPolicy, run_index
from tunescout.cli.main import main

TOKEN = "right-token"
FAST_RETRY = RetryPolicy(unavailable_tries=3, backoff_s=0.01)


def _error(code: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"status": "error", "message": message, "error": message}, code, headers=headers)


@dataclass
class StandIn:
    requests: int = 0  # every POST /api/fingerprint, refused ones included
    uploads: list[str] = field(default_factory=list)  # file names that got past the token check
    stored: set[str] = field(default_factory=set)  # sha1 of what is fingerprinted
    answered_once: set[str] = field(default_factory=set)
    slow_arrived: threading.Event = field(default_factory=threading.Event)
    release_slow: threading.Event = field(default_factory=threading.Event)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/api/fingerprint")
        async def fingerprint(request: Request) -> JSONResponse:
            self.requests += 1
            if request.headers.get("authorization") != f"Bearer {TOKEN}":
                return _error(401, "Token invalid")
            upload = (await request.form())["file"]
            assert isinstance(upload, UploadFile) and upload.filename
            content = await upload.read()
            name = upload.filename
            self.uploads.append(name)
            if name.startswith("busy") and name not in self.answered_once:
                self.answered_once.add(name)
                return _error(429, "Too many requests: 10 per second", **{"Retry-After": "1"})
            if name.startswith("flaky") and name not in self.answered_once:
                self.answered_once.add(name)
                return _error(503, "Fingerprinter unavailable, retry later")
            if name.startswith("down"):
                return _error(503, "Fingerprinter unavailable, retry later")
            if name.startswith("slow"):
                self.slow_arrived.set()
                while not self.release_slow.is_set():
                    await asyncio.sleep(0.01)
            if content == b"not audio":
                return _error(400, "Could not decode audio: no audio stream in the upload")
            sha1 = hashlib.sha1(content).hexdigest()
            fields = {"file_sha1": sha1, "blob_sha1": sha1, "song_name": Path(name).stem}
            if sha1 in self.stored:
                return JSONResponse(
                    {"status": "already_fingerprinted", "message": "Already fingerprinted", **fields}, 409
                )
            self.stored.add(sha1)
            return JSONResponse({"status": "success", "message": "Fingerprinted", **fields})

        return app


@pytest.fixture
def api() -> Iterator[tuple[StandIn, str]]:
    stand_in = StandIn()
    with serve(stand_in.app()) as url:
        yield stand_in, url
    stand_in.release_slow.set()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data directory as `tunescout up` leaves it: the token in fingerprint_token."""
    directory = tmp_path / "data"
    directory.mkdir()
    (directory / "fingerprint_token").write_text(TOKEN + "\n")
    return directory


def _write(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _index(url: str, data_dir: Path, state: Path, *paths: Path, jobs: int = 4) -> int:
    argv = ["index", *map(str, paths), "--url", url, "--data-dir", str(data_dir)]
    return main([*argv, "--jobs", str(jobs), "--state", str(state)])


def _state_lines(state: Path) -> list[dict]:
    return [json.loads(line) for line in state.read_text().splitlines()]


def test_folder_is_indexed_recursively_with_each_outcome_in_the_summary(
    api: tuple[StandIn, str], data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stand_in, url = api
    music = tmp_path / "music"
    _write(music / "a.mp3", b"track a")
    _write(music / "sub" / "b.FLAC", b"track b")
    _write(music / "sub" / "copy-of-a.ogg", b"track a")  # same content: one 200, one 409
    bad = _write(music / "bad.wav", b"not audio")
    _write(music / "notes.txt", b"not an audio extension: never uploaded")
    state = tmp_path / "state.jsonl"

    code = _index(url, data_dir, state, music, tmp_path / "missing.mp3")

    out = capsys.readouterr().out
    assert code == 1
    assert "2 done, 1 already there, 2 failed" in out
    assert f"{bad}: HTTP 400: Could not decode audio: no audio stream in the upload" in out
    assert f"{tmp_path / 'missing.mp3'}: no such file or folder" in out
    assert sorted(stand_in.uploads) == ["a.mp3", "b.FLAC", "bad.wav", "copy-of-a.ogg"]
    lines = _state_lines(state)
    assert {Path(line["path"]).name for line in lines} == {"a.mp3", "b.FLAC", "copy-of-a.ogg", "bad.wav"}
    assert all(line["v"] == STATE_VERSION for line in lines)
    assert sorted(line["outcome"] for line in lines) == ["already there", "done", "done", "rejected"]
    rejected = next(line for line in lines if line["outcome"] == "rejected")
    assert rejected["reason"] == "HTTP 400: Could not decode audio: no audio stream in the upload"


def test_second_run_uploads_only_what_is_not_finished(
    api: tuple[StandIn, str], data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stand_in, url = api
    music = tmp_path / "music"
    good = [_write(music / f"{name}.mp3", name.encode()) for name in ("one", "two", "three")]
    _write(music / "bad.mp3", b"not audio")
    state = tmp_path / "state.jsonl"
    assert _index(url, data_dir, state, music) == 1
    capsys.readouterr()
    stand_in.uploads.clear()

    assert _index(url, data_dir, state, music) == 0

    # neither the finished files nor the one the API rejected for its content are sent again
    assert stand_in.uploads == []
    out = capsys.readouterr().out
    assert (
        "0 done, 0 already there, 0 failed (3 skipped: finished in an earlier run); 1 skipped: rejected in "
        "an earlier run (not usable audio; --retry-rejected sends them again)"
    ) in out

    assert main(["index", str(music), "--url", url, "--data-dir", str(data_dir), "--state", str(state),
                 "--retry-rejected"]) == 1  # fmt: skip
    assert stand_in.uploads == ["bad.mp3"]
    assert "0 done, 0 already there, 1 failed (3 skipped" in capsys.readouterr().out

    stand_in.uploads.clear()
    os.utime(good[0], ns=(time.time_ns(), time.time_ns() + 10**9))  # a changed file is a new file
    _write(music / "bad.mp3", b"now it is audio")  # and so is a rejected file that changed
    assert _index(url, data_dir, state, music) == 0
    assert sorted(stand_in.uploads) == ["bad.mp3", "one.mp3"]
    assert "1 done, 1 already there, 0 failed (2 skipped" in capsys.readouterr().out


def test_failures_other_than_rejections_are_tried_again_on_the_next_run(
    api: tuple[StandIn, str], data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stand_in, url = api
    down = _write(tmp_path / "down.mp3", b"the backend is down for this one")
    state = tmp_path / "state.jsonl"
    assert run_index([down], url, TOKEN, data_dir, 1, state, retry=FAST_RETRY) == 1
    capsys.readouterr()
    stand_in.uploads.clear()

    assert run_index([down], url, TOKEN, data_dir, 1, state, retry=FAST_RETRY) == 1

    assert stand_in.uploads == ["down.mp3"] * FAST_RETRY.unavailable_tries
    assert "0 done, 0 already there, 1 failed\n" in capsys.readouterr().out


def test_already_fingerprinted_counts_as_already_there_in_the_default_state_file(
    api: tuple[StandIn, str],
    data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stand_in, url = api
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    track = _write(tmp_path / "known.mp3", b"known track")
    stand_in.stored.add(hashlib.sha1(b"known track").hexdigest())

    assert main(["index", str(track), "--url", url + "/", "--data-dir", str(data_dir)]) == 0

    assert "0 done, 1 already there, 0 failed" in capsys.readouterr().out
    (state,) = (tmp_path / "home" / ".cache" / "tunescout").glob("index-*.jsonl")
    (line,) = _state_lines(state)
    assert line["outcome"] == "already there"
    assert line["file_sha1"] == hashlib.sha1(b"known track").hexdigest()


def test_rate_limited_upload_waits_retry_after_and_retries(
    api: tuple[StandIn, str], data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stand_in, url = api
    track = _write(tmp_path / "busy.mp3", b"busy track")
    started = time.monotonic()

    assert _index(url, data_dir, tmp_path / "state.jsonl", track) == 0

    assert time.monotonic() - started >= 1.0  # Retry-After: 1
    assert stand_in.uploads == ["busy.mp3", "busy.mp3"]
    assert "1 done, 0 already there, 0 failed" in capsys.readouterr().out


def test_unavailable_backend_is_retried_then_the_file_fails_with_the_message(
    api: tuple[StandIn, str], data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stand_in, url = api
    flaky = _write(tmp_path / "flaky.mp3", b"flaky track")
    down = _write(tmp_path / "down.mp3", b"down track")

    code = run_index([flaky, down], url, TOKEN, data_dir, 1, tmp_path / "state.jsonl", retry=FAST_RETRY)

    assert code == 1
    assert stand_in.uploads == ["flaky.mp3", "flaky.mp3", "down.mp3", "down.mp3", "down.mp3"]
    out = capsys.readouterr().out
    assert "1 done, 0 already there, 1 failed" in out
    assert f"{down}: HTTP 503: Fingerprinter unavailable, retry later" in out


def test_wrong_token_stops_the_whole_run(
    api: tuple[StandIn, str], data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stand_in, url = api
    music = tmp_path / "music"
    for n in range(5):
        _write(music / f"{n}.mp3", f"track {n}".encode())
    state = tmp_path / "state.jsonl"

    code = run_index([music], url, "wrong-token", data_dir, 1, state)

    assert code == 2
    assert stand_in.requests == 1  # the other four were never sent
    err = capsys.readouterr().err
    assert "refused the fingerprint token (HTTP 401: Token invalid)" in err
    assert "--token" in err
    assert not state.exists()


def test_missing_token_exits_2_and_says_where_the_token_is(
    api: tuple[StandIn, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stand_in, url = api
    track = _write(tmp_path / "a.mp3", b"track a")

    code = main(["index", str(track), "--url", url, "--data-dir", str(tmp_path / "no-data")])

    assert code == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "no-data" / "fingerprint_token") in err
    assert "tunescout up" in err
    assert stand_in.requests == 0


def test_unreachable_api_stops_the_run(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]  # nothing listens once the socket is closed
    track = _write(tmp_path / "a.mp3", b"track a")

    code = run_index([track], f"http://127.0.0.1:{closed_port}", TOKEN, data_dir, 2, None, retry=FAST_RETRY)

    assert code == 2
    assert "cannot reach" in capsys.readouterr().err


def test_state_file_of_an_unknown_version_is_refused(
    api: tuple[StandIn, str], data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stand_in, url = api
    state = tmp_path / "state.jsonl"
    state.write_text(json.dumps({"v": 99, "path": "/x.mp3", "size_bytes": 1, "mtime_ns": 1}) + "\n")
    track = _write(tmp_path / "a.mp3", b"track a")

    assert _index(url, data_dir, state, track) == 2

    assert "version 99" in capsys.readouterr().err
    assert stand_in.requests == 0


def test_torn_last_line_of_the_state_file_is_ignored(
    api: tuple[StandIn, str], data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stand_in, url = api
    track = _write(tmp_path / "a.mp3", b"track a")
    state = tmp_path / "state.jsonl"
    state.write_text('{"v": 1, "path": "/x.mp3", "si')  # a crash mid-write

    assert _index(url, data_dir, state, track) == 0

    assert stand_in.uploads == ["a.mp3"]


def test_ctrl_c_stops_cleanly_with_a_summary_and_the_next_run_resumes(
    api: tuple[StandIn, str], data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stand_in, url = api
    music = tmp_path / "music"
    _write(music / "a.mp3", b"track a")
    _write(music / "slow.mp3", b"slow track")
    state = tmp_path / "state.jsonl"

    def press_ctrl_c() -> None:
        if stand_in.slow_arrived.wait(60):  # a.mp3 is done, slow.mp3 is in flight
            # the kernel may hand a Ctrl-C to any thread: deliver it to this one, not the main thread
            signal.pthread_kill(threading.get_ident(), signal.SIGINT)
        else:
            stand_in.release_slow.set()  # never hang the suite: the assertions below fail instead

    presser = threading.Thread(target=press_ctrl_c)
    presser.start()
    code = _index(url, data_dir, state, music, jobs=1)
    presser.join()

    assert code == 130
    captured = capsys.readouterr()
    assert "1 done, 0 already there, 0 failed" in captured.out
    assert "Interrupted with 1 file(s) left; run the same command to resume" in captured.err
    assert [Path(line["path"]).name for line in _state_lines(state)] == ["a.mp3"]

    stand_in.release_slow.set()
    stand_in.uploads.clear()
    assert _index(url, data_dir, state, music, jobs=1) == 0
    assert stand_in.uploads == ["slow.mp3"]
    assert "(1 skipped: finished in an earlier run)" in capsys.readouterr().out
