"""MLServer 1.7.1 serving an ONNX file through a minimal ONNX Runtime custom runtime, with its
adaptive batching: a peer for benchmarks/serve.py.

MLServer ships no ONNX Runtime runtime, so this file is one (``OnnxRuntimeModel``: load the
session, decode the inputs with MLServer's NumpyCodec, run, encode the outputs), and its
``main`` writes the settings MLServer reads from a folder (settings.json, model-settings.json
with ``max_batch_size`` and ``max_batch_time``) and starts ``mlserver start`` on it. Everything
else is MLServer's defaults (one parallel inference worker, orjson, uvloop). It runs in its
own virtual environment (.venv-mlserver, made by ``make bench-peers``; MLServer 1.7.1 needs
``uvloop<0.22``):

    .venv-mlserver/bin/python benchmarks/mlserver_onnx.py --model model.onnx --http-port 8080 \\
        --grpc-port 8081 --max-batch-size 32 --max-batch-delay-ms 2
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
from pathlib import Path

import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider"]}


class OnnxRuntimeModel(MLModel):  # type: ignore[misc]  # MLServer is not in the project's venv
    """One ONNX Runtime session; a batch formed by MLServer arrives as one request."""

    async def load(self) -> bool:
        extra = self.settings.parameters.extra or {}
        self.session = ort.InferenceSession(
            str(self.settings.parameters.uri), providers=PROVIDERS[extra.get("backend", "cpu")]
        )
        self.output_names = [output.name for output in self.session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feed = {tensor.name: NumpyCodec.decode_input(tensor) for tensor in payload.inputs}
        results = self.session.run(None, feed)
        return InferenceResponse(
            model_name=self.name,
            outputs=[
                NumpyCodec.encode_output(name, result)
                for name, result in zip(self.output_names, results, strict=True)
            ],
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--name", default="bench")
    parser.add_argument("--http-port", type=int, default=8080)
    parser.add_argument("--grpc-port", type=int, default=8081)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-batch-delay-ms", type=float, default=2.0)
    parser.add_argument("--backend", default="cpu", choices=sorted(PROVIDERS))
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="gpux-bench-mlserver-"))
    settings = {
        "host": "127.0.0.1",
        "http_port": args.http_port,
        "grpc_port": args.grpc_port,
        "metrics_port": free_port(),
        "debug": False,
    }
    model_settings = {
        "name": args.name,
        "implementation": "mlserver_onnx.OnnxRuntimeModel",
        "max_batch_size": args.max_batch_size,
        "max_batch_time": args.max_batch_delay_ms / 1e3,
        "parameters": {"uri": str(args.model.resolve()), "extra": {"backend": args.backend}},
    }
    (folder / "settings.json").write_text(json.dumps(settings))
    (folder / "model-settings.json").write_text(json.dumps(model_settings))
    # MLServer imports the runtime by name, in its own process and in its inference workers.
    here = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
    mlserver = Path(sys.executable).with_name("mlserver")
    os.execv(mlserver, [str(mlserver), "start", str(folder)])


if __name__ == "__main__":
    main()
