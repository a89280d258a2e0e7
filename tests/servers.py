"""Reaching the real servers the tests use: skip with a reason when absent, fail in CI (CI=true)."""

from __future__ import annotations

import os

import pytest
import redis

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


def require_redis(db: int = 0) -> redis.Redis:
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db, socket_timeout=1, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Redis is required in CI at {REDIS_HOST}:{REDIS_PORT}: {exc}")
        pytest.skip(f"no Redis at {REDIS_HOST}:{REDIS_PORT} ({exc})")
    return client


MYSQL_HOST, MYSQL_PORT, MYSQL_USER = "127.0.0.1", 3306, "root"


def require_mysql() -> None:
    import pymysql

    try:
        pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER, connect_timeout=2).close()
    except pymysql.MySQLError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"MySQL/MariaDB is required in CI at {MYSQL_HOST}:{MYSQL_PORT}: {exc}")
        pytest.skip(f"no MySQL/MariaDB at {MYSQL_HOST}:{MYSQL_PORT} ({exc})")


def drop_mysql_database(name: str) -> None:
    import pymysql

    conn = pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER)
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        conn.close()


CLICKHOUSE_HOST, CLICKHOUSE_HTTP_PORT = "127.0.0.1", 8123


def require_clickhouse() -> None:
    import urllib.request

    try:
        with urllib.request.urlopen(
            f"http://{CLICKHOUSE_HOST}:{CLICKHOUSE_HTTP_PORT}/ping", timeout=2
        ) as answer:
            answer.read()
    except OSError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"ClickHouse is required in CI at {CLICKHOUSE_HOST}:{CLICKHOUSE_HTTP_PORT}: {exc}")
        pytest.skip(
            f"no ClickHouse at {CLICKHOUSE_HOST}:{CLICKHOUSE_HTTP_PORT} ({exc}); .ci/clickhouse.sh starts one"
        )


def drop_clickhouse_database(name: str) -> None:
    import clickhouse_connect

    client = clickhouse_connect.get_client(host=CLICKHOUSE_HOST, port=CLICKHOUSE_HTTP_PORT, compress=False)
    try:
        client.command(f"DROP DATABASE IF EXISTS {name}")
    finally:
        client.close()


class PrivateMariaDB:
    """A MariaDB server of the test's own, in a temporary directory, that the test can stop and start again
    (to take a shard's server away and bring it back). Skips when the binaries are missing."""

    def __init__(self, directory) -> None:
        import shutil
        import socket

        if shutil.which("mariadbd") is None or shutil.which("mariadb-install-db") is None:
            pytest.skip("mariadbd / mariadb-install-db are not installed")
        self.dir = directory
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.process = None
        import getpass
        import subprocess

        self._user = getpass.getuser()
        subprocess.run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={directory}/data",
                "--skip-test-db",
                "--auth-root-authentication-method=normal",
                f"--user={self._user}",
            ],
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        import subprocess
        import time

        import pymysql

        self.process = subprocess.Popen(
            [
                "mariadbd",
                "--no-defaults",
                f"--datadir={self.dir}/data",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--socket={self.dir}/mysqld.sock",
                f"--user={self._user}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(f"{self.dir}/server.log", "a"),
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                pymysql.connect(host="127.0.0.1", port=self.port, user="root", connect_timeout=1).close()
                return
            except pymysql.MySQLError:
                assert self.process.poll() is None, f"mariadbd exited; see {self.dir}/server.log"
                assert time.monotonic() < deadline, "mariadbd did not start"
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(60)
        self.process = None


class PrivateRedis:
    """A Redis server of the test's own (no persistence) that the test can stop and start again."""

    def __init__(self, directory) -> None:
        import shutil
        import socket

        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed")
        self.dir = directory
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.process = None

    def start(self) -> None:
        import subprocess
        import time

        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                return
            except redis.RedisError:
                assert self.process.poll() is None and time.monotonic() < deadline, (
                    "redis-server did not start"
                )
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(20)
        self.process = None
