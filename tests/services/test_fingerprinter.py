"""FingerprinterService on a real server: streamed uploads, both roles, refusals with reasons, and a
worker that dies without taking the service down."""

import os
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from services.fingerprinter import servicer as servicer_module
from services.fingerprinter import worker
from services.fingerprinter.server import binding
from services.fingerprinter.servicer import FingerprinterServicer
from services.fingerprinter.settings import FingerprinterSettings
from tests.services.harness import ServerThread
from tunescout.common import wire
from tunescout.common.grpc_errors import error_reason
from tunescout.engine import verify
from tunescout.engine.fingerprint import fingerprint_audio
from tunescout.engine.params import DEFAULT_PARAMS, FINGERPRINT_VERSION
from tunescout.engine.peaks import Role
from tunescout.fingerprinter.v1 import fingerprinter_pb2 as pb
from tunescout.fingerprinter.v1 import fingerprinter_pb2_grpc as pb_grpc

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA = REPO_ROOT / "tests" / "data"
CLIP = DATA / "knolls.opus"
CRASH_MARK = b"CRASH-THE-WORKER"


def crashing_job(source, query, start_s, duration_s):
    """Runs in a worker: dies like a decoder crash on a marked upload, fingerprints anything else."""
    if isinstance(source, bytes) and source.startswith(CRASH_MARK):
        os._exit(139)
    return worker.fingerprint_file(source, query, start_s, duration_s)


@pytest.fixture(scope="module")
def stub(tmp_path_factory):
    settings = FingerprinterSettings(
        host="127.0.0.1", port=0, workers=1, max_upload_bytes=12 * 1024 * 1024,
        spool_dir=tmp_path_factory.mktemp("spool"), grace_s=1.0,
    )  # fmt: skip
    servicer = FingerprinterServicer(settings)
    servicer._job = crashing_job  # a test-only job: the real one wrapped with a crash trigger
    with ServerThread([binding(servicer)], servicer.start, servicer.close) as server:
        yield pb_grpc.FingerprinterServiceStub(server.channel())


def _call(stub, data: bytes, role, chunk=64 * 1024, **options):
    def requests():
        yield pb.FingerprintRequest(options=pb.FingerprintOptions(role=role, **options))
        for i in range(0, len(data), chunk):
            yield pb.FingerprintRequest(audio_chunk=data[i : i + chunk])

    return stub.Fingerprint(requests(), timeout=120)


def test_reference_fingerprint_equals_the_engine(stub):
    reply = _call(stub, CLIP.read_bytes(), pb.ROLE_REFERENCE, file_name="knolls.opus")
    expected = fingerprint_audio(CLIP, role=Role.REFERENCE)
    assert reply.file_sha1 == expected.file_sha1
    assert reply.fingerprint_version == FINGERPRINT_VERSION and reply.sample_rate_hz == 8000
    assert abs(reply.duration_s - expected.duration_s) < 1e-6
    assert np.array_equal(
        wire.from_bytes(reply.fingerprint.hashes_u32le, wire.U32, "h"), expected.fingerprint.hashes
    )
    assert np.array_equal(
        wire.from_bytes(reply.fingerprint.offsets_frames_i32le, wire.I32, "o"), expected.fingerprint.offsets
    )
    assert reply.fingerprint.peaks == verify.encode(expected.peaks, DEFAULT_PARAMS)  # stored with the track


def test_query_returns_the_peaks_of_the_requested_range(stub):
    reply = _call(stub, CLIP.read_bytes(), pb.ROLE_QUERY, start_s=12.35, duration_s=5.0)
    expected = fingerprint_audio(CLIP, role=Role.QUERY, start_s=12.35, duration_s=5.0)
    assert reply.WhichOneof("result") == "peaks"
    assert abs(reply.duration_s - 5.0) < 0.01
    assert np.array_equal(wire.from_bytes(reply.peaks.frames_i32le, wire.I32, "t"), expected.peaks.t)
    assert np.array_equal(wire.from_bytes(reply.peaks.freq_hz_f64le, wire.F64, "f"), expected.peaks.freq_hz)
    assert reply.peaks.n_frames == expected.peaks.n_frames


def test_large_upload_is_spooled_and_gives_the_same_answer(stub, monkeypatch):
    monkeypatch.setattr(servicer_module, "IN_MEMORY_LIMIT", 100_000)  # force the spool-file path
    data = CLIP.read_bytes()
    assert len(data) > 100_000
    reply = _call(stub, data, pb.ROLE_REFERENCE)
    assert reply.file_sha1 == fingerprint_audio(CLIP, role=Role.REFERENCE).file_sha1


@pytest.mark.parametrize(
    ("data", "options", "reason"),
    [
        (b"this is not audio at all" * 100, {}, "NOT_AUDIO"),
        (b"", {}, "EMPTY"),
        (None, {"start_s": 100.0}, "START_BEYOND_END"),
        (None, {"start_s": 0.0, "duration_s": 0.5}, "CLIP_TOO_SHORT"),
    ],
)
def test_bad_audio_is_invalid_argument_with_a_reason(stub, data, options, reason):
    with pytest.raises(grpc.RpcError) as caught:
        _call(stub, CLIP.read_bytes() if data is None else data, pb.ROLE_QUERY, **options)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(caught.value) == reason
    assert caught.value.details()


def test_stream_without_options_or_role(stub):
    with pytest.raises(grpc.RpcError) as caught:
        stub.Fingerprint(iter([pb.FingerprintRequest(audio_chunk=b"x")]), timeout=10)
    assert (
        caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and error_reason(caught.value) == "NO_OPTIONS"
    )
    with pytest.raises(grpc.RpcError) as caught:
        _call(stub, CLIP.read_bytes(), pb.ROLE_UNSPECIFIED)
    assert error_reason(caught.value) == "NO_ROLE"


def test_upload_over_the_cap_is_resource_exhausted(stub):
    with pytest.raises(grpc.RpcError) as caught:
        _call(stub, b"\0" * (13 * 1024 * 1024), pb.ROLE_QUERY, chunk=1024 * 1024)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_worker_crash_kills_the_worker_not_the_service(stub):
    with pytest.raises(grpc.RpcError) as caught:
        _call(stub, CRASH_MARK + b"\0" * 1000, pb.ROLE_QUERY)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(caught.value) == "DECODER_CRASHED"
    reply = _call(stub, CLIP.read_bytes(), pb.ROLE_QUERY, duration_s=3.0)  # the service goes on
    assert len(reply.peaks.frames_i32le) > 0


def test_warm_up_loads_every_kernel_an_upload_needs() -> None:
    # in a fresh process: kernels loaded by earlier tests would hide one that warm_up leaves to the first
    # upload (it compiles, or loads from numba's cache, while the user waits)
    code = f"""
from numba.core.registry import CPUDispatcher
import tunescout.engine.kernels, tunescout.engine.resample
from services.fingerprinter import worker

def loaded():
    return {{
        f"{{module.__name__}}.{{name}}": len(d.signatures)
        for module in (tunescout.engine.kernels, tunescout.engine.resample)
        for name, d in vars(module).items() if isinstance(d, CPUDispatcher)
    }}

worker.warm_up()
before = loaded()
for query in (False, True):
    worker.fingerprint_file({str(CLIP)!r}, query, 0.0, None)
print(sorted(name for name, count in loaded().items() if count != before[name]))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=True
    )
    assert done.stdout.strip() == "[]", f"kernels left for the first upload: {done.stdout}"
