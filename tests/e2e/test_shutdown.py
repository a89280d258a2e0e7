"""SIGTERM on a service: health turns NOT_SERVING at once, the call in flight still finishes, the process
exits cleanly within its grace period."""

from __future__ import annotations

import io
import threading
import time
import wave

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tunescout.cli.up import Child, _grpc_serving, free_port
from tunescout.fingerprinter.v1 import fingerprinter_pb2 as pb
from tunescout.fingerprinter.v1 import fingerprinter_pb2_grpc as pb_grpc


def _long_wav(seconds: float, rate: int = 44_100) -> bytes:
    rng = np.random.default_rng(0)
    pcm = (rng.standard_normal(int(seconds * rate)) * 0.2 * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()


def test_sigterm_lets_the_call_in_flight_finish(tmp_path):
    port = free_port()
    env = {"TUNESCOUT_PORT": str(port), "TUNESCOUT_WORKERS": "1", "TUNESCOUT_GRACE_S": "30"}
    child = Child("fingerprinter", "services.fingerprinter", env, f"127.0.0.1:{port}")
    child.start()
    try:
        deadline = time.monotonic() + 300
        while not _grpc_serving(child.address):
            assert child.alive() and time.monotonic() < deadline
            time.sleep(0.2)
        data = _long_wav(600.0)  # ten minutes: seconds of decoding and fingerprinting
        outcome: dict = {}

        def call() -> None:
            with grpc.insecure_channel(
                child.address, options=[("grpc.max_receive_message_length", 1 << 28)]
            ) as ch:
                requests = [pb.FingerprintRequest(options=pb.FingerprintOptions(role=pb.ROLE_REFERENCE))]
                requests += [
                    pb.FingerprintRequest(audio_chunk=data[i : i + (1 << 20)])
                    for i in range(0, len(data), 1 << 20)
                ]
                try:
                    outcome["reply"] = pb_grpc.FingerprinterServiceStub(ch).Fingerprint(
                        iter(requests), timeout=120
                    )
                except grpc.RpcError as exc:
                    outcome["error"] = exc

        caller = threading.Thread(target=call)
        caller.start()
        time.sleep(1.0)  # the upload is in the worker now
        began = time.monotonic()
        child.stop()  # SIGTERM
        with grpc.insecure_channel(child.address) as ch:
            try:
                status = (
                    health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2).status
                )
            except grpc.RpcError:
                status = None  # already stopped listening: also not serving
        assert status != health_pb2.HealthCheckResponse.SERVING
        caller.join(120)
        assert "error" not in outcome, outcome.get("error")
        assert abs(outcome["reply"].duration_s - 600.0) < 0.1 and outcome["reply"].fingerprint.hashes_u32le
        child.wait(60)
        assert child.process.returncode == 0
        assert time.monotonic() - began < 60
    finally:
        child.stop()
        child.wait(10)
