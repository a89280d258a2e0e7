"""ResultsService: Put/Get of recognition results over the `results` stores.

A token's home store is a stable hash of it; Put falls back to the next store when the home one fails, and
Get asks the home store first, then the others, so a result stays readable while one store is away.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import grpc

from services.results.settings import ResultsSettings
from services.results.tokens import home_index, is_well_formed, new_token
from tunescout.common.config import Config, ConfigError, StoreConfig
from tunescout.common.grpc_errors import abort
from tunescout.engine.errors import StoreError
from tunescout.results.v1 import results_pb2 as pb
from tunescout.results.v1 import results_pb2_grpc as pb_grpc
from tunescout.store.clickhouse import ClickHouseResultStore
from tunescout.store.mysql import MySQLResultStore
from tunescout.store.results import EmbeddedResultStore

ResultStore = EmbeddedResultStore | MySQLResultStore | ClickHouseResultStore

logger = logging.getLogger(__name__)

MAX_RESULT_BYTES = 1024 * 1024


def open_result_store(store: StoreConfig, data_dir: Path) -> ResultStore:
    """Opens (creating if missing) the result store `store` describes; StoreError when it cannot."""
    db = store.database
    if store.database_type == "clickhouse":
        return ClickHouseResultStore(host=db.host, port=db.port, user=db.user, password=db.password,
                                     database=db.database)  # fmt: skip
    if store.database_type == "mysql":
        return MySQLResultStore(host=db.host, port=db.port or 3306, user=db.user, password=db.password,
                                database=db.database)  # fmt: skip
    if store.database_type != "embedded":
        raise ConfigError(
            f"results store {store.name!r}: database_type {store.database_type!r} is not available; "
            "use embedded, mysql or clickhouse"
        )
    path = Path(db.path or f"results/{store.name}.sqlite")
    return EmbeddedResultStore(path if path.is_absolute() else data_dir / path)


class ResultsServicer(pb_grpc.ResultsServiceServicer):
    def __init__(self, config: Config, settings: ResultsSettings) -> None:
        self._config = config
        self._settings = settings
        self._stores: list[ResultStore] = []

    async def start(self) -> None:
        for store in self._config.results:
            self._stores.append(await asyncio.to_thread(open_result_store, store, self._settings.data_dir))
        logger.info("%d result stores open", len(self._stores))

    async def close(self) -> None:
        for store in self._stores:
            await asyncio.to_thread(store.close)
        self._stores = []

    def _order(self, token: str) -> list[ResultStore]:
        home = home_index(token, len(self._stores))
        return self._stores[home:] + self._stores[:home]

    async def Put(self, request: pb.PutRequest, context: grpc.aio.ServicerContext) -> pb.PutResponse:
        if not self._stores:
            await abort(
                context, grpc.StatusCode.UNAVAILABLE, "STARTING", "the result stores are not open yet"
            )
        if len(request.result_json) > MAX_RESULT_BYTES:
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "RESULT_TOO_LARGE",
                f"a result is at most {MAX_RESULT_BYTES} bytes of JSON",
            )
        try:
            result = json.loads(request.result_json)
            if not isinstance(result, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, "BAD_RESULT", f"result_json: {exc}")
        token = new_token()
        errors = []
        for store in self._order(token):
            try:
                await asyncio.to_thread(store.put, token, result)
                return pb.PutResponse(token=token)
            except (StoreError, ValueError) as exc:
                logger.warning("result store %s failed a put: %s", store.path, exc)
                errors.append(str(exc))
        await abort(
            context,
            grpc.StatusCode.UNAVAILABLE,
            "RESULT_STORE_UNAVAILABLE",
            "no result store accepted the result: " + "; ".join(errors),
        )

    async def Get(self, request: pb.GetRequest, context: grpc.aio.ServicerContext) -> pb.GetResponse:
        if not self._stores:
            await abort(
                context, grpc.StatusCode.UNAVAILABLE, "STARTING", "the result stores are not open yet"
            )
        token = request.token
        if not is_well_formed(token):
            await abort(context, grpc.StatusCode.NOT_FOUND, "TOKEN_NOT_FOUND", "no result has this token")
        failures = []
        for store in self._order(token):
            try:
                found = await asyncio.to_thread(store.get, token)
            except StoreError as exc:
                logger.warning("result store %s failed a get: %s", store.path, exc)
                failures.append(str(exc))
                continue
            if found is not None:
                return pb.GetResponse(
                    result_json=json.dumps(found, ensure_ascii=False, separators=(",", ":"))
                )
        if failures:
            await abort(
                context,
                grpc.StatusCode.UNAVAILABLE,
                "RESULT_STORE_UNAVAILABLE",
                "the result may be in a store that did not answer: " + "; ".join(failures),
            )
        await abort(context, grpc.StatusCode.NOT_FOUND, "TOKEN_NOT_FOUND", "no result has this token")
