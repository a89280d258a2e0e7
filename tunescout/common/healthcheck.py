"""`python -m tunescout.common.healthcheck PORT`: exit 0 when the gRPC server on localhost:PORT says
SERVING on the standard health service (container HEALTHCHECKs; Kubernetes uses its native gRPC probe)."""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main(argv: list[str]) -> int:
    port = int(argv[1]) if len(argv) > 1 else 50051
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3.0)
        except grpc.RpcError:
            return 1
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
