"""Entry point of the results service: `python -m services.results`."""

from __future__ import annotations

from services.results.servicer import ResultsServicer
from services.results.settings import ResultsSettings
from tunescout.common import settings as env
from tunescout.common.config import load_config
from tunescout.common.grpc_server import ServiceBinding
from tunescout.common.process import run_grpc_service, start_process
from tunescout.results.v1 import results_pb2 as pb
from tunescout.results.v1 import results_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ResultsService"].full_name


def binding(servicer: ResultsServicer) -> ServiceBinding:
    return ServiceBinding(
        SERVICE_NAME, lambda server: pb_grpc.add_ResultsServiceServicer_to_server(servicer, server)
    )


def main() -> None:
    settings = ResultsSettings.from_env(env.environ())
    start_process("results", settings)
    servicer = ResultsServicer(load_config(settings.config_path, env.environ()), settings)
    run_grpc_service(binding(servicer), settings, servicer)


if __name__ == "__main__":
    main()
