"""Generates the Python gRPC code for every proto under protos/ into the `tunescout` package.

Run `make protos` (or `python protos/generate.py [OUT_DIR]`). Output goes to OUT_DIR (default: the repo root),
so `protos/tunescout/matcher/v1/matcher.proto` becomes `tunescout/matcher/v1/matcher_pb2.py` and friends,
importable as `tunescout.matcher.v1`. The generated files are committed and never edited by hand; a test
regenerates them into a temporary directory and compares.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PROTO_ROOT.parent


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Writes *_pb2.py, *_pb2.pyi and *_pb2_grpc.py (plus package __init__.py files); returns them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    include = str(Path(protoc.__file__).parent / "_proto")  # google/protobuf/*.proto shipped with grpc_tools
    rel = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            *rel,
        ]
    )
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    written: list[Path] = []
    for proto in rel:
        package_dir = out_dir / Path(proto).parent
        for parent in [package_dir, *package_dir.relative_to(out_dir).parents]:
            init = out_dir / parent / "__init__.py"
            if parent != Path(".") and not init.exists():
                init.write_text('"""Generated from protos/ by `make protos`; do not edit."""\n')
        stem = Path(proto).stem
        written += [
            package_dir / f"{stem}_pb2.py",
            package_dir / f"{stem}_pb2.pyi",
            package_dir / f"{stem}_pb2_grpc.py",
        ]
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO_ROOT
    for path in generate(target):
        print(path.relative_to(target))
