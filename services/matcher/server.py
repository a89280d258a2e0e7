"""Entry point of the matcher: `python -m services.matcher`."""

from __future__ import annotations

import asyncio

from services.matcher.servicer import MatcherServicer
from services.matcher.settings import MatcherSettings
from tunescout.common import settings as env
from tunescout.common.config import load_config
from tunescout.common.grpc_server import ServiceBinding, serve
from tunescout.common.logs import setup_logging
from tunescout.common.memory import tune_malloc
from tunescout.common.metrics import start_metrics
from tunescout.matcher.v1 import matcher_pb2 as pb
from tunescout.matcher.v1 import matcher_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["MatcherService"].full_name


def binding(servicer: MatcherServicer) -> ServiceBinding:
    return ServiceBinding(
        SERVICE_NAME, lambda server: pb_grpc.add_MatcherServiceServicer_to_server(servicer, server)
    )


def main() -> None:
    settings = MatcherSettings.from_env(env.environ())
    setup_logging("matcher", settings.log_format)
    tune_malloc()
    start_metrics(settings.metrics_port)
    config = load_config(settings.config_path, env.environ())
    servicer = MatcherServicer(config, settings)
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
