"""The endpoint a user would write instead of a model server: FastAPI + ONNX Runtime, no batching.

A peer for benchmarks/serve.py. It speaks the JSON of the Open Inference Protocol's infer route
(the same requests as the servers it is compared with), decodes with orjson into numpy, runs
the session in FastAPI's thread pool, and answers with orjson. It runs in its own virtual
environment (.venv-peers, made by ``make bench-peers``) so FastAPI stays out of the project's
lock:

    .venv-peers/bin/python benchmarks/fastapi_onnx.py --model model.onnx --port 8000
"""

from __future__ import annotations

import argparse

import numpy as np
import onnxruntime as ort
import orjson
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool

DTYPES = {"INT64": np.int64, "INT32": np.int32, "FP32": np.float32, "FP16": np.float16}
NAMES = {np.dtype(dtype): name for name, dtype in DTYPES.items()}
PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider"]}


def make_app(model: str, name: str, backend: str) -> FastAPI:
    session = ort.InferenceSession(model, providers=PROVIDERS[backend])
    output_names = [output.name for output in session.get_outputs()]
    app = FastAPI()

    @app.get("/v2/health/ready")
    @app.get(f"/v2/models/{name}/ready")
    async def ready() -> Response:
        return Response(status_code=200)

    @app.post(f"/v2/models/{name}/infer")
    async def infer(request: Request) -> Response:
        body = orjson.loads(await request.body())
        feed = {
            tensor["name"]: np.asarray(tensor["data"], dtype=DTYPES[tensor["datatype"]]).reshape(
                tensor["shape"]
            )
            for tensor in body["inputs"]
        }
        results = await run_in_threadpool(session.run, None, feed)
        outputs = [
            {"name": n, "shape": list(r.shape), "datatype": NAMES[r.dtype], "data": r.ravel()}
            for n, r in zip(output_names, results, strict=True)
        ]
        answer = {"model_name": name, "outputs": outputs}
        return Response(
            orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY),
            media_type="application/json",
        )

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--name", default="bench")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--backend", default="cpu", choices=sorted(PROVIDERS))
    args = parser.parse_args()
    app = make_app(args.model, args.name, args.backend)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
