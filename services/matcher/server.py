"""Entry point of the matcher: `python -m services.matcher`."""

from __future__ import annotations

from services.matcher.servicer import MatcherServicer
from services.matcher.settings import MatcherSettings
from tunescout.common import settings as env
from tunescout.common.config import load_config
from tunescout.common.grpc_server import ServiceBinding
from tunescout.common.process import run_grpc_service, start_process
from tunescout.matcher.v1 import matcher_pb2 as pb
from tunescout.matcher.v1 import matcher_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["MatcherService"].full_name


def binding(servicer: MatcherServicer) -> ServiceBinding:
    return ServiceBinding(
        SERVICE_NAME, lambda server: pb_grpc.add_MatcherServiceServicer_to_server(servicer, server)
    )


def main() -> None:
    settings = MatcherSettings.from_env(env.environ())
    start_process("matcher", settings)
    servicer = MatcherServicer(load_config(settings.config_path, env.environ()), settings)
    run_grpc_service(binding(servicer), settings, servicer)


if __name__ == "__main__":
    main()
