"""A client written only from protos/: stubs generated here with grpcio-tools, run in a process
that cannot import the blockrag package, ingests a document and streams an answer."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

PROTOS = Path(__file__).resolve().parents[2] / "protos"

CLIENT = textwrap.dedent('''
    import sys
    # no access to the installed blockrag package: drop its editable-install finder, put the
    # freshly generated stubs first
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()
                        and "editable" not in getattr(f, "__name__", "").lower()]
    sys.path.insert(0, sys.argv[1])
    import grpc
    import blockrag
    assert blockrag.__file__ is None or blockrag.__file__.startswith(sys.argv[1]), blockrag.__file__
    try:
        import blockrag.attention
    except ImportError:
        pass
    else:
        raise SystemExit("the blockrag library is importable: this is not a protos-only client")
    from blockrag.v1 import generation_pb2 as pb, generation_pb2_grpc

    md = (("application", "generation"),)
    stub = generation_pb2_grpc.GenerationServiceStub(grpc.insecure_channel(sys.argv[2]))
    doc = pb.Document(id="lighthouse", text="The Tolvik lighthouse was painted red in 1931.")
    ingested = stub.Ingest(pb.IngestRequest(collection="protos-only", documents=[doc]), metadata=md)
    block_id = ingested.documents[0].block_ids[0]
    answer, usage = "", None
    request = pb.GenerateRequest(question="What colour is the lighthouse?", max_new_tokens=8,
                                 context=[pb.ContextBlock(block_id=block_id)])
    for reply in stub.Generate(request, metadata=md):
        answer += reply.text
        usage = reply.usage if reply.done else usage
    print("BLOCK", block_id)
    print("ANSWER", answer.strip())
    print("TIERS", dict(usage.blocks_by_tier))
''')


def _generate(out: Path) -> None:
    spec = importlib.util.spec_from_file_location("generate_protos", PROTOS / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.generate(out)


def test_client_from_protos_alone(platform, tmp_path):
    stubs = tmp_path / "stubs"
    _generate(stubs)
    (stubs / "blockrag" / "__init__.py").write_text("")
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    result = subprocess.run([sys.executable, str(script), str(stubs), platform.grpc], capture_output=True,
                            text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert lines["BLOCK"].startswith("blk_") and lines["ANSWER"]
    assert lines["TIERS"] == "{'store': 1}"
