"""`tunescout recognize` against a stand-in TuneScout API served over real HTTP (uvicorn in a thread).

The stand-in decodes nothing: b"known clip" matches two tracks, b"not audio" is bad audio, anything else
matches nothing. It echoes the start/duration form fields it got.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from tests.cli.standin import serve
from tunescout.cli.main import main
from tunescout.cli.recognize import format_offset

NO_MATCH = "No match found: the clip matches no stored track with enough confidence"
MATCHES = [
    {
        "song_name": "Knolls",
        "title": "Knolls",
        "artist": "Ketsa",
        "album": "",
        "year": None,
        "offset_seconds": 83.46,
        "confidence": 0.875,
        "blob_sha1": "ab" * 20,
    },
    {
        "song_name": "battle-epic",
        "title": "",
        "artist": "",
        "offset_seconds": 2.0,
        "confidence": 0.031,
        "blob_sha1": "cd" * 20,
    },
]


def stand_in_app() -> FastAPI:
    app = FastAPI()

    @app.post("/api/recognize")
    async def recognize(request: Request) -> JSONResponse:
        form = await request.form()
        upload = form["file"]
        assert isinstance(upload, UploadFile)
        content = await upload.read()
        if content == b"not audio":
            message = "Could not decode audio: no audio stream in the upload"
            return JSONResponse({"status": "error", "message": message, "error": message}, 400)
        body: dict[str, Any] = {"status": "success", "token": None, "message": NO_MATCH, "results": []}
        if content == b"known clip":
            body.update(results=MATCHES, token="result-token", message="Recognised 'Knolls' at 83.5 s")
        body["received"] = {
            "file_name": upload.filename,
            "start": form.get("start"),
            "duration": form.get("duration"),
        }
        return JSONResponse(body)

    return app


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with serve(stand_in_app()) as base_url:
        yield base_url


def _clip(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "clip.m4a"
    path.write_bytes(content)
    return path


def test_match_prints_a_table(url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["recognize", str(_clip(tmp_path, b"known clip")), "--url", url])

    assert code == 0
    header, first, second = capsys.readouterr().out.splitlines()
    assert header.split() == ["#", "title", "artist", "offset", "confidence"]
    assert first.split() == ["1", "Knolls", "Ketsa", "1:23.5", "87.5%"]
    assert second.split() == ["2", "battle-epic", "0:02.0", "3.1%"]  # no title: the song name


def test_json_prints_the_answer_and_start_duration_are_sent(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = _clip(tmp_path, b"known clip")

    code = main(["recognize", str(clip), "--url", url, "--start", "12.5", "--duration", "8", "--json"])

    assert code == 0
    body = json.loads(capsys.readouterr().out)
    assert body["results"] == MATCHES
    assert body["received"] == {"file_name": "clip.m4a", "start": "12.5", "duration": "8.0"}


def test_no_match_exits_1_with_the_message(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["recognize", str(_clip(tmp_path, b"unknown clip")), "--url", url])

    assert code == 1
    assert capsys.readouterr().out == f"No match: {NO_MATCH}\n"


def test_no_match_with_json_exits_1(url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["recognize", str(_clip(tmp_path, b"unknown clip")), "--url", url, "--json"])

    assert code == 1
    body = json.loads(capsys.readouterr().out)
    assert body["results"] == []
    assert body["received"] == {"file_name": "clip.m4a", "start": None, "duration": None}


def test_server_error_exits_2_with_its_message_on_stderr(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["recognize", str(_clip(tmp_path, b"not audio")), "--url", url])

    assert code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "HTTP 400: Could not decode audio: no audio stream in the upload" in captured.err


def test_missing_file_and_unreachable_api_exit_2(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["recognize", str(tmp_path / "missing.mp3"), "--url", url]) == 2
    assert "cannot read" in capsys.readouterr().err

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    clip = _clip(tmp_path, b"known clip")
    assert main(["recognize", str(clip), "--url", f"http://127.0.0.1:{closed_port}"]) == 2
    assert "cannot reach" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0, "0:00.0"), (83.46, "1:23.5"), (59.96, "1:00.0"), (3600.04, "60:00.0"), (-2.5, "-0:02.5")],
)
def test_format_offset(seconds: float, text: str) -> None:
    assert format_offset(seconds) == text
