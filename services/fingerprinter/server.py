"""Entry point of the fingerprinter: `python -m services.fingerprinter`."""

from __future__ import annotations

import asyncio

from services.fingerprinter.servicer import FingerprinterServicer
from services.fingerprinter.settings import FingerprinterSettings
from tunescout.common import settings as env
from tunescout.common.grpc_server import ServiceBinding, serve
from tunescout.common.logs import setup_logging
from tunescout.common.memory import tune_malloc
from tunescout.common.metrics import start_metrics
from tunescout.fingerprinter.v1 import fingerprinter_pb2 as pb
from tunescout.fingerprinter.v1 import fingerprinter_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["FingerprinterService"].full_name


def binding(servicer: FingerprinterServicer) -> ServiceBinding:
    return ServiceBinding(
        SERVICE_NAME, lambda server: pb_grpc.add_FingerprinterServiceServicer_to_server(servicer, server)
    )


def main() -> None:
    settings = FingerprinterSettings.from_env(env.environ())
    setup_logging("fingerprinter", settings.log_format)
    tune_malloc()
    start_metrics(settings.metrics_port)
    servicer = FingerprinterServicer(settings)
    asyncio.run(
        serve(
            [binding(servicer)],
            settings.host,
            settings.port,
            servicer.start,
            servicer.close,
            settings.grace_s,
        )
    )


if __name__ == "__main__":
    main()
