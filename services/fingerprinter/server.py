"""Entry point of the fingerprinter: `python -m services.fingerprinter`."""

from __future__ import annotations

from services.fingerprinter.servicer import FingerprinterServicer
from services.fingerprinter.settings import FingerprinterSettings
from tunescout.common import settings as env
from tunescout.common.grpc_server import ServiceBinding
from tunescout.common.process import run_grpc_service, start_process
from tunescout.fingerprinter.v1 import fingerprinter_pb2 as pb
from tunescout.fingerprinter.v1 import fingerprinter_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["FingerprinterService"].full_name


def binding(servicer: FingerprinterServicer) -> ServiceBinding:
    return ServiceBinding(
        SERVICE_NAME, lambda server: pb_grpc.add_FingerprinterServiceServicer_to_server(servicer, server)
    )


def main() -> None:
    settings = FingerprinterSettings.from_env(env.environ())
    start_process("fingerprinter", settings)
    servicer = FingerprinterServicer(settings)
    run_grpc_service(binding(servicer), settings, servicer)


if __name__ == "__main__":
    main()
