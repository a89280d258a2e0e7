"""The TuneScout API end to end: real processes, real clips, through REST, as existing clients use it."""

from __future__ import annotations

import io
import re
import wave

import numpy as np
import pytest

from tests.e2e.conftest import FINGERPRINT_TOKEN
from tests.media import encoded_bytes
from tests.services.clips import DATA
from tunescout.engine.decode import decode_all

STORED = ["battle-epic", "breaking_the_chains", "elvish-theme"]
UNSTORED = "knolls"
AUTH = {"Authorization": f"Bearer {FINGERPRINT_TOKEN}"}
LEGACY_FIELDS = {
    "song_id": int, "song_name": str, "blob_sha1": str, "offset": int, "offset_seconds": float,
    "input_total_hashes": int, "fingerprinted_hashes_in_db": int, "hashes_matched_in_input": int,
    "input_confidence": float, "fingerprinted_confidence": float,
}  # fmt: skip
RATE = 16_000


def clip(name: str) -> bytes:
    return (DATA / f"{name}.opus").read_bytes()


def wav_bytes(pcm: np.ndarray, rate: int = RATE) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def excerpt(name: str, start_s: float, seconds: float) -> np.ndarray:
    pcm, _ = decode_all(DATA / f"{name}.opus", sample_rate_hz=RATE)
    return pcm[int(start_s * RATE) : int((start_s + seconds) * RATE)]


def assert_error(response, code: int) -> dict:
    assert response.status_code == code, response.text
    body = response.json()
    assert body["status"] == "error" and body["message"], body
    return body


@pytest.fixture(scope="module")
def stored(api):
    shas = {}
    for name in STORED:
        fields = {"title": "Elvish Theme", "artist": "Wesnoth", "album": "Battle for Wesnoth", "year": "2005"}
        data = fields if name == "elvish-theme" else {}
        r = api.post(
            "/api/fingerprint", headers=AUTH, files={"file": (f"{name}.opus", clip(name))}, data=data
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "success" and body["file_sha1"] == body["blob_sha1"]
        assert re.fullmatch(r"[0-9a-f]{40}", body["file_sha1"])
        shas[name] = body["file_sha1"]
    return shas


def recognize(api, data: bytes, name="clip.bin", field="file", **form):
    return api.post("/api/recognize", files={field: (name, data)}, data={k: str(v) for k, v in form.items()})


def best(response) -> dict:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success" and body["results"], body
    return body["results"][0]


def test_fingerprint_twice_is_409_already_fingerprinted(api, stored):
    r = api.post("/api/fingerprint", headers=AUTH, files={"file": ("again.opus", clip(STORED[0]))})
    assert r.status_code == 409
    body = r.json()
    assert body["status"] == "already_fingerprinted" and body["message"] == "Already fingerprinted"
    assert body["file_sha1"] == body["blob_sha1"] == stored[STORED[0]]


def test_recognize_names_track_and_offset_with_every_legacy_field(api, stored):
    r = recognize(api, clip(STORED[1]), "song.opus", start="12.35", duration=5)
    top = best(r)
    for field, kind in LEGACY_FIELDS.items():
        assert isinstance(top[field], kind), (field, top[field])
    assert top["song_name"] == STORED[1] and top["blob_sha1"] == stored[STORED[1]]
    assert abs(top["offset_seconds"] - 12.35) < 0.1
    assert abs(top["offset"] * 0.016 - top["offset_seconds"]) < 0.02
    assert 0.9 <= top["confidence"] <= 1.0 and 0 < top["input_confidence"] <= 1
    assert len(r.json()["results"]) <= 3
    token = r.json()["token"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{22,}", token)
    fetched = api.get(f"/api/fetch/{token}")  # at once: read-your-writes
    assert fetched.status_code == 200
    assert fetched.json()["results"] == r.json()["results"] and fetched.json()["token"] == token


def test_metadata_fields_come_back(api, stored):
    top = best(recognize(api, clip("elvish-theme"), start=3, duration=6))
    assert (top["title"], top["song_name"], top["artist"], top["album"], top["year"]) == (
        "Elvish Theme", "Elvish Theme", "Wesnoth", "Battle for Wesnoth", 2005,
    )  # fmt: skip


def test_noisy_mp3_excerpt(api, stored):
    pcm = excerpt(STORED[0], 8.0, 10.0)
    rng = np.random.default_rng(1)
    noise = rng.standard_normal(pcm.size).astype(np.float32)
    noise *= np.sqrt(np.mean(pcm**2) / np.mean(noise**2) / 10 ** (5 / 10))  # SNR 5 dB
    data = encoded_bytes("mp3", "libmp3lame", pcm + noise, RATE)
    top = best(recognize(api, data, "noisy.mp3"))
    assert top["song_name"] == STORED[0] and abs(top["offset_seconds"] - 8.0) < 0.2


def test_browser_microphone_blob_webm_opus_without_extension(api, stored):
    data = encoded_bytes("webm", "libopus", excerpt(STORED[1], 4.0, 8.0), RATE, audio_rate_hz=48_000)
    top = best(recognize(api, data, "blob", field="blob"))
    assert top["song_name"] == STORED[1] and abs(top["offset_seconds"] - 4.0) < 0.2


def test_video_upload(api, stored):
    data = encoded_bytes("mp4", "aac", excerpt(STORED[2], 10.0, 6.0), RATE, video_codec="libx264")
    top = best(recognize(api, data, "clip.mp4"))
    assert top["song_name"] == "Elvish Theme" and abs(top["offset_seconds"] - 10.0) < 0.2


def test_max_duration_truncates_clips(api, stored):
    data = wav_bytes(excerpt(STORED[0], 0.0, 25.0))
    capped = best(recognize(api, data, "long.wav", duration=20))
    ten = best(recognize(api, data, "long.wav", duration=10))
    assert capped["input_total_hashes"] == ten["input_total_hashes"]


def test_unknown_track_is_success_with_no_results_and_no_token(api, stored):
    r = recognize(api, clip(UNSTORED), start=5, duration=10)
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "success" and body["results"] == [] and body["token"] is None
    assert "no match" in body["message"].lower()


@pytest.mark.parametrize(
    ("form", "needle"),
    [({"start": "-1"}, "start"), ({"duration": "0"}, "duration"), ({"start": "abc"}, "start"),
     ({"duration": "nan"}, "duration"), ({"start": "100"}, "end")],
)  # fmt: skip
def test_bad_parameters_are_400(api, stored, form, needle):
    body = assert_error(recognize(api, clip(STORED[0]), **form), 400)
    assert needle in body["message"]


def test_bad_uploads_are_400(api):
    body = assert_error(recognize(api, b"definitely not audio" * 50, "x.mp3"), 400)
    assert body["reason"] == "NOT_AUDIO"
    assert_error(recognize(api, b"", "empty.wav"), 400)
    assert_error(api.post("/api/recognize", data={"start": "1"}), 400)  # no file part
    assert_error(api.post("/api/recognize", files={"other": ("a.wav", b"x")}), 400)
    assert_error(recognize(api, wav_bytes(excerpt(STORED[0], 0, 0.5)), "short.wav"), 400)


def test_every_answer_carries_a_request_id(api):
    mine = api.get("/api/fetch/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", headers={"X-Request-ID": "client-req-1"})
    assert mine.headers["x-request-id"] == "client-req-1"
    fresh = api.get("/api/nothing-here")
    assert len(fresh.headers["x-request-id"]) == 32


def test_unknown_token_and_routes_are_json_404_and_405(api):
    assert_error(api.get("/api/fetch/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), 404)
    assert_error(api.get("/api/nothing-here"), 404)
    assert_error(api.get("/api/recognize"), 405)


def test_fingerprint_needs_the_bearer_token(api):
    assert_error(api.post("/api/fingerprint", files={"file": ("a.opus", clip(UNSTORED))}), 401)
    wrong = {"Authorization": "Bearer wrong-token"}
    assert_error(api.post("/api/fingerprint", headers=wrong, files={"file": ("a.opus", clip(UNSTORED))}), 401)
    body = assert_error(
        api.post("/api/fingerprint", headers=AUTH, files={"file": ("a.opus", b"no audio here" * 10)}), 400
    )
    assert body["reason"] == "NOT_AUDIO"


def test_oversized_uploads_are_413_before_being_read(api):
    big = b"\0" * (2 * 1024 * 1024)  # the limit is 1 MB
    assert_error(api.post("/api/recognize", files={"file": ("big.wav", big)}), 413)

    def chunked():  # no Content-Length: counted as it streams
        boundary = b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'
        yield boundary
        for _ in range(32):
            yield b"\0" * 65536
        yield b"\r\n--b--\r\n"

    r = api.post(
        "/api/recognize", content=chunked(), headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert_error(r, 413)


def test_cors_preflights_and_headers_on_errors(api):
    origin = {"Origin": "http://ui.example"}
    pre = api.options("/api/recognize", headers={**origin, "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "http://ui.example"
    pre = api.options(
        "/api/fingerprint",
        headers={
            **origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert pre.status_code == 200 and "authorization" in pre.headers["access-control-allow-headers"].lower()
    err = api.get("/api/fetch/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", headers=origin)
    assert err.status_code == 404 and err.headers["access-control-allow-origin"] == "http://ui.example"
    other = api.get("/api/fetch/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_openapi_docs(api):
    assert api.get("/docs").status_code == 200
    paths = api.get("/openapi.json").json()["paths"]
    assert {"/api/recognize", "/api/fingerprint", "/api/fetch/{token}"} <= set(paths)


def test_fingerprinting_disallowed_is_403_and_rate_limits_are_429(stack):
    import httpx

    config = {"fingerprinting": {"allow": False, "token": "t"}, "rate_limit": {"recognizing": "2 per minute"}}
    with httpx.Client(base_url=stack.gateway(config), timeout=60) as strict:
        r = strict.post(
            "/api/fingerprint", headers={"Authorization": "Bearer t"}, files={"file": ("a", b"x")}
        )
        assert_error(r, 403)
        codes = [recognize(strict, clip(UNSTORED), duration=2).status_code for _ in range(3)]
        assert codes[:2] == [200, 200]
        limited = recognize(strict, clip(UNSTORED), duration=2)
        body = assert_error(limited, 429)
        assert int(limited.headers["retry-after"]) >= 1 and "limit" in body["message"]


def test_rate_limits_in_redis_and_redis_down_lets_requests_through(stack):
    import uuid

    import httpx

    from tests.servers import REDIS_HOST, REDIS_PORT, require_redis

    client = require_redis(db=3)
    prefix = f"e2e-{uuid.uuid4().hex[:8]}"
    limited = {"redis": {"host": REDIS_HOST, "port": REDIS_PORT, "prefix": prefix},
               "rate_limit": {"fetching_results": "2 per minute", "redis_db_index": 3}}  # fmt: skip
    try:
        with httpx.Client(base_url=stack.gateway(limited), timeout=60) as api:
            codes = [api.get("/api/fetch/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").status_code for _ in range(3)]
            assert codes == [404, 404, 429]
            assert client.keys(f"{prefix}:ratelimit*"), "the counters are not in Redis db 3"
    finally:
        for key in client.keys(f"{prefix}:*"):
            client.delete(key)
    down = {"redis": {"host": "127.0.0.1", "port": 1}, "rate_limit": {"fetching_results": "2 per minute"}}
    with httpx.Client(base_url=stack.gateway(down), timeout=60) as api:
        codes = [api.get("/api/fetch/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").status_code for _ in range(3)]
        assert codes == [404, 404, 404]  # limits are not enforced while their store is down; no 500


def test_concurrent_uploads_lose_nothing_and_a_racing_duplicate_is_409(stack, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    config = {
        "fingerprinting": {"token": FINGERPRINT_TOKEN},
        "rate_limit": {"fingerprinting": "1000 per second"},
    }
    url = stack.gateway(config)
    # four distinct tracks: the shipped clips slowed down 3 % (distinct audio, distinct SHA-1)
    uploads = []
    for name in [*STORED, UNSTORED]:
        pcm = excerpt(name, 0.0, 30.0)
        slowed = np.interp(np.arange(0, pcm.size, 0.97), np.arange(pcm.size), pcm).astype(np.float32)
        uploads.append((f"{name}-slow.wav", wav_bytes(slowed)))
    uploads.append(uploads[0])  # the same audio twice at once

    def post(item):
        with httpx.Client(timeout=120) as client:
            return client.post(f"{url}/api/fingerprint", headers=AUTH, files={"file": item})

    with ThreadPoolExecutor(len(uploads)) as pool:
        answers = list(pool.map(post, uploads))
    codes = sorted(a.status_code for a in answers)
    assert codes == [200, 200, 200, 200, 409], [a.text for a in answers]
    with httpx.Client(base_url=url, timeout=60) as api:
        for name, data in uploads[:4]:
            top = best(recognize(api, data, name, start=5, duration=8))
            assert top["song_name"] == name.removesuffix(".wav")


def test_gateway_metrics_count_requests_by_route(stack):
    import httpx

    from tunescout.cli.up import free_port

    port = free_port()
    config = {"rate_limit": {"recognizing": "1000 per second"}}
    with httpx.Client(base_url=stack.gateway(config, metrics_port=port), timeout=60) as api:
        assert recognize(api, clip(UNSTORED), start=2, duration=4).status_code == 200
        api.get("/api/fetch/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    assert 'tunescout_http_requests_total{method="POST",route="/api/recognize",status="200"} 1.0' in text
    assert 'route="/api/fetch/{token}",status="404"' in text  # the template, never the token
