"""`tunescout` console script: argument parsing only; each subcommand lives in its own module."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8000"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunescout", description="Music recognition service.")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the four services and the REST gateway")
    up.add_argument(
        "--config",
        type=Path,
        default=None,
        help="config.json (default: ./config.json if it exists, else the embedded default)",
    )
    up.add_argument(
        "--data-dir", type=Path, default=Path("data"), help="embedded stores and token (default: ./data)"
    )
    up.add_argument("--host", default="127.0.0.1", help="address of the REST API (default: 127.0.0.1)")
    up.add_argument("--port", type=int, default=8000, help="port of the REST API (default: 8000)")
    up.add_argument(
        "--workers", type=int, default=None, help="fingerprint worker processes (default: one per core)"
    )

    index = sub.add_parser("index", help="fingerprint files and folders through the REST API")
    index.add_argument(
        "paths", nargs="+", type=Path, help="audio/video files or folders (searched recursively)"
    )
    index.add_argument("--url", default=DEFAULT_URL, help=f"the API (default: {DEFAULT_URL})")
    index.add_argument(
        "--token", default=None, help="fingerprint token (default: read from DATA_DIR/fingerprint_token)"
    )
    index.add_argument(
        "--data-dir",
        type=Path,
        default=Path("data"),
        help="where `tunescout up` keeps its token (default: ./data)",
    )
    index.add_argument("--jobs", type=int, default=4, help="uploads in flight (default: 4)")
    index.add_argument(
        "--state",
        type=Path,
        default=None,
        help="file recording what is done, for resuming (default: under ~/.cache/tunescout)",
    )
    index.add_argument(
        "--retry-rejected",
        action="store_true",
        help="also send files the API rejected in an earlier run (not audio, too short); skipped by default",
    )

    recognize = sub.add_parser("recognize", help="recognise a clip through the REST API")
    recognize.add_argument("file", type=Path)
    recognize.add_argument("--start", type=float, default=None, help="seconds into the file")
    recognize.add_argument("--duration", type=float, default=None, help="seconds to use")
    recognize.add_argument("--url", default=DEFAULT_URL, help=f"the API (default: {DEFAULT_URL})")
    recognize.add_argument("--json", action="store_true", help="print the API's JSON answer")
    offline = "works on the stores directly: stop the services first when an embedded shard is involved"
    for name, what in (
        ("export", "write a shard's tracks and fingerprints to a file"),
        ("import", "store the tracks of an export file in a shard"),
    ):
        cmd = sub.add_parser(name, help=f"{what} ({offline})")
        cmd.add_argument("file", type=Path, help="the export file (a zip)")
        cmd.add_argument("--shard", required=True, help="the instance's name (config.json `name`, or shardN)")
        cmd.add_argument(
            "--config", type=Path, default=None, help="config.json (default: the embedded default)"
        )
        cmd.add_argument(
            "--data-dir", type=Path, default=Path("data"), help="embedded stores (default: ./data)"
        )
    move = sub.add_parser(
        "move", help=f"move tracks from one shard to another of the same config ({offline})"
    )
    move.add_argument("--from", dest="source", required=True, help="the shard to take tracks from")
    move.add_argument("--to", dest="target", required=True, help="the shard to put them in")
    move.add_argument("--limit", type=int, default=None, help="move at most N tracks (default: all)")
    move.add_argument("--config", type=Path, default=None, help="config.json")
    move.add_argument("--data-dir", type=Path, default=Path("data"), help="embedded stores (default: ./data)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "up":
        from tunescout.cli.up import run_up

        return run_up(args.config, args.data_dir, args.host, args.port, args.workers)
    if args.command == "index":
        from tunescout.cli.index import run_index

        return run_index(
            args.paths,
            args.url,
            args.token,
            args.data_dir,
            args.jobs,
            args.state,
            retry_rejected=args.retry_rejected,
        )
    if args.command in ("export", "import", "move"):
        from tunescout.cli.shards import run_shard_command

        return run_shard_command(
            args.command,
            args.config,
            args.data_dir,
            shard=getattr(args, "shard", None),
            file=getattr(args, "file", None),
            source=getattr(args, "source", None),
            target=getattr(args, "target", None),
            limit=getattr(args, "limit", None),
        )
    from tunescout.cli.recognize import run_recognize

    return run_recognize(args.file, args.start, args.duration, args.url, args.json)


if __name__ == "__main__":
    sys.exit(main())
