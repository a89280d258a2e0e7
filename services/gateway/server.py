"""Entry point of the gateway: `python -m services.gateway` (uvicorn serving the FastAPI app)."""

from __future__ import annotations

import logging

import uvicorn

from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from tunescout.common import settings as env
from tunescout.common.config import load_config
from tunescout.common.fingerprint_token import resolve_token
from tunescout.common.process import start_process

logger = logging.getLogger(__name__)


def main() -> None:
    settings = GatewaySettings.from_env(env.environ())
    start_process("gateway", settings)
    config = load_config(settings.config_path, env.environ())
    if settings.fingerprint_token:
        token = settings.fingerprint_token
    else:
        token, created = resolve_token(config, settings.data_dir, create=True)
        if created:
            logger.info("fingerprint token created in %s", settings.data_dir)
    app = create_app(settings, config, token)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,  # keep our logging set-up
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
