"""The committed gRPC code is exactly what `make protos` generates from protos/ (never edited by hand)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location("protos_generate", ROOT / "protos" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_code_is_current(tmp_path):
    written = _generator().generate(tmp_path)
    assert len(written) == 9  # three services, three files each
    for path in written:
        rel = path.relative_to(tmp_path)
        committed = ROOT / rel
        assert committed.exists(), f"{rel} is not committed; run `make protos`"
        assert committed.read_bytes() == path.read_bytes(), f"{rel} differs from protos/; run `make protos`"


def test_every_rpc_has_its_own_request_and_response():
    from tunescout.fingerprinter.v1 import fingerprinter_pb2
    from tunescout.matcher.v1 import matcher_pb2
    from tunescout.results.v1 import results_pb2

    for module in (fingerprinter_pb2, matcher_pb2, results_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            assert service.full_name.startswith("tunescout.") and ".v1." in service.full_name
            for method in service.methods:
                assert method.input_type.name == f"{method.name}Request"
                assert method.output_type.name == f"{method.name}Response"
