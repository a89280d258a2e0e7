"""Entry point of the results service: `python -m services.results`."""

from __future__ import annotations

import asyncio

from services.results.servicer import ResultsServicer
from services.results.settings import ResultsSettings
from tunescout.common import settings as env
from tunescout.common.config import load_config
from tunescout.common.grpc_server import ServiceBinding, serve
from tunescout.common.logs import setup_logging
from tunescout.common.memory import tune_malloc
from tunescout.common.metrics import start_metrics
from tunescout.results.v1 import results_pb2 as pb
from tunescout.results.v1 import results_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ResultsService"].full_name


def binding(servicer: ResultsServicer) -> ServiceBinding:
    return ServiceBinding(
        SERVICE_NAME, lambda server: pb_grpc.add_ResultsServiceServicer_to_server(servicer, server)
    )


def main() -> None:
    settings = ResultsSettings.from_env(env.environ())
    setup_logging("results", settings.log_format)
    tune_malloc()
    start_metrics(settings.metrics_port)
    config = load_config(settings.config_path, env.environ())
    servicer = ResultsServicer(config, settings)
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
