"""The Open Inference Protocol over gRPC (``gpux serve --grpc-port``), driven by Triton's own
gRPC client and by the protocol's generated stub: answers equal the HTTP side's and a bare
ONNX Runtime session's, refusals carry the HTTP side's message, the token and TLS guard it, and
gRPC and HTTP requests share the same dynamic batches."""

from __future__ import annotations

import datetime
import ipaddress
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.cli.expect import BoundCLI, assert_failure
from tests.serve.conftest import EXAMPLES, Server, free_port, start_server, stop_server

pytestmark = [pytest.mark.zoo, pytest.mark.slow]

TOKEN = "s3cret"


def auth() -> dict[str, str]:
    """The token's metadata (a new dict each time: tritonclient.http adds its own headers)."""
    return {"authorization": f"Bearer {TOKEN}"}


IDS = np.array([[101, 7592, 2088, 102, 0, 0], [101, 14246, 2595, 3216, 4275, 102]], np.int64)
MASK = (IDS > 0).astype(np.int64)
MINILM = {"input_ids": IDS, "attention_mask": MASK, "token_type_ids": 0 * IDS}


@dataclass
class Served:
    http: Server
    grpc_port: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def client(self) -> triton_grpc.InferenceServerClient:
        return triton_grpc.InferenceServerClient(self.target)

    def http_client(self) -> triton_http.InferenceServerClient:
        return triton_http.InferenceServerClient(f"127.0.0.1:{self.http.port}")

    def stub(self) -> tuple[grpc.Channel, Any]:
        channel = grpc.insecure_channel(self.target)
        return channel, service_pb2_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> BoundCLI:
    cli = BoundCLI(tmp_path_factory.mktemp("grpc-home"))
    for example in ("minilm-embeddings", "document-orientation"):
        cli.ok("build", str(EXAMPLES / example), "-q")
    return cli


@pytest.fixture(scope="module")
def served(home: BoundCLI) -> Iterator[Served]:
    """Both models behind one batching server with a token, gRPC on its own port."""
    grpc_port = free_port()
    server = start_server(
        home,
        "minilm:1.0",
        "document-orientation:1.0",
        "--backend",
        "cpu",
        "--grpc-port",
        str(grpc_port),
        "--max-batch-size",
        "8",
        "--max-batch-delay-ms",
        "200",
        env={"GPUX_TOKEN": TOKEN},
    )
    yield Served(server, grpc_port)
    assert stop_server(server) == 0, server.log()  # SIGTERM: both protocols drain, exit 0


def bare_onnxruntime(home: BoundCLI, image: str, feed: dict[str, np.ndarray]) -> dict[str, Any]:
    """The image's own model file, run by a plain ONNX Runtime session in this process."""
    import onnxruntime

    from gpux.store import Store, mediatypes

    model = Store(home.home).get(image).layer_path(mediatypes.MODEL)
    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feed), strict=True))


def grpc_inputs(feed: dict[str, np.ndarray]) -> list[triton_grpc.InferInput]:
    inputs = []
    for name, value in feed.items():
        datatype = "INT64" if value.dtype == np.int64 else "FP32"
        tensor = triton_grpc.InferInput(name, list(value.shape), datatype)
        tensor.set_data_from_numpy(value)  # raw_input_contents, as Triton's client sends
        inputs.append(tensor)
    return inputs


def http_inputs(feed: dict[str, np.ndarray]) -> list[triton_http.InferInput]:
    inputs = []
    for name, value in feed.items():
        datatype = "INT64" if value.dtype == np.int64 else "FP32"
        tensor = triton_http.InferInput(name, list(value.shape), datatype)
        tensor.set_data_from_numpy(value, binary_data=True)
        inputs.append(tensor)
    return inputs


def grpc_error(call: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value


def http_error_line(response: httpx.Response) -> str:
    """The HTTP side's refusal in the one-line form the gRPC side gives as details."""
    body = response.json()
    return f"{body['error']} (hint: {body['hint']})"


def test_health_and_metadata_equal_the_http_side(served: Served) -> None:
    client = served.client()
    # Health needs no token, as on HTTP; a model that is not served is not ready.
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("minilm") and client.is_model_ready("minilm", "1.0")
    assert not client.is_model_ready("minilm", "2.0") and not client.is_model_ready("nope")
    http = httpx.Client(base_url=served.http.url, headers=auth())
    for name in ("minilm", "document-orientation"):
        metadata = client.get_model_metadata(name, headers=auth())
        tensors = [
            [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in group]
            for group in (metadata.inputs, metadata.outputs)
        ]
        assert {
            "name": metadata.name,
            "versions": list(metadata.versions),
            "platform": metadata.platform,
            "inputs": tensors[0],
            "outputs": tensors[1],
        } == http.get(f"/v2/models/{name}").json()
    server = client.get_server_metadata(headers=auth(), as_json=True)
    assert server == http.get("/v2").json()
    config = client.get_model_config("document-orientation", headers=auth(), as_json=True)["config"]
    assert config["max_batch_size"] == 8  # batched: dims leave out the batch dimension
    assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": ["3", "224", "224"]}]
    index = client.get_model_repository_index(headers=auth(), as_json=True)["models"]
    assert [(m["name"], m["version"], m["state"]) for m in index] == [
        ("minilm", "1", "READY"),
        ("document-orientation", "1", "READY"),
    ]


def test_config_and_statistics_are_triton_s_over_both_protocols(served: Served) -> None:
    """Model configuration and statistics (what perf_analyzer asks for first) answer the same
    over HTTP and gRPC, and the statistics count the requests answered."""
    grpc_client, http_client = served.client(), served.http_client()
    http_config = http_client.get_model_config("minilm", headers=auth())
    grpc_config = grpc_client.get_model_config("minilm", headers=auth(), as_json=True)["config"]
    assert http_config["max_batch_size"] == 8 and http_config["dynamic_batching"] == {
        "max_queue_delay_microseconds": 200000
    }
    assert http_config["version_policy"] == {"specific": {"versions": [1]}}
    assert [(t["name"], t["data_type"], t["dims"]) for t in http_config["input"]] == [
        (name, "TYPE_INT64", [-1]) for name in ("input_ids", "attention_mask", "token_type_ids")
    ]
    # protobuf's JSON writes int64 as text: the same config once numbers are numbers
    assert (
        http_config["name"] == grpc_config["name"]
        and [int(d) for d in grpc_config["input"][0]["dims"]] == http_config["input"][0]["dims"]
    )
    assert http_client.get_model_repository_index(headers=auth()) == [
        {"name": "minilm", "version": "1", "state": "READY"},
        {"name": "document-orientation", "version": "1", "state": "READY"},
    ]

    def counted() -> tuple[int, int]:
        (stats,) = http_client.get_inference_statistics("minilm", headers=auth())["model_stats"]
        return stats["inference_count"], stats["inference_stats"]["success"]["count"]

    before = counted()
    grpc_client.infer("minilm", grpc_inputs(MINILM), headers=auth())
    assert counted() == (before[0] + 2, before[1] + 1)  # two rows, one request
    (over_grpc,) = grpc_client.get_inference_statistics(
        "minilm", "1", headers=auth(), as_json=True
    )["model_stats"]
    (over_http,) = http_client.get_inference_statistics("minilm", "1", headers=auth())[
        "model_stats"
    ]
    assert over_grpc["name"] == "minilm" and over_grpc["version"] == "1"
    assert int(over_grpc["inference_count"]) == over_http["inference_count"]
    every = http_client.get_inference_statistics(headers=auth())["model_stats"]
    assert [m["name"] for m in every] == ["minilm", "document-orientation"]
    with pytest.raises(InferenceServerException, match="not served"):
        http_client.get_inference_statistics("nope", headers=auth())


def test_a_token_is_required_except_for_health(served: Served) -> None:
    client = served.client()
    for headers in (None, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}):
        error = grpc_error(lambda h=headers: client.get_model_metadata("minilm", headers=h))
        assert error.status() == "StatusCode.UNAUTHENTICATED"
        assert "missing or wrong bearer token" in error.message()
        refused = grpc_error(
            lambda h=headers: client.infer("minilm", grpc_inputs(MINILM), headers=h)
        )
        assert refused.status() == "StatusCode.UNAUTHENTICATED"
    assert client.get_model_metadata("minilm", headers={"authorization": f"bearer {TOKEN}"})


def test_raw_infer_equals_http_and_onnxruntime(served: Served, home: BoundCLI) -> None:
    wanted = [triton_grpc.InferRequestedOutput("last_hidden_state")]
    result = served.client().infer(
        "minilm", grpc_inputs(MINILM), outputs=wanted, headers=auth(), request_id="r7"
    )
    hidden = result.as_numpy("last_hidden_state")
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("minilm", "1", "r7")
    assert [o.name for o in response.outputs] == ["last_hidden_state"]
    over_http = served.http_client().infer(
        "minilm",
        http_inputs(MINILM),
        outputs=[triton_http.InferRequestedOutput("last_hidden_state", binary_data=True)],
        headers=auth(),
    )
    assert hidden.shape == (2, 6, 384) and hidden.dtype == np.float32
    np.testing.assert_array_equal(hidden, over_http.as_numpy("last_hidden_state"))
    expected = bare_onnxruntime(home, "minilm:1.0", MINILM)["last_hidden_state"]
    np.testing.assert_allclose(hidden, expected, rtol=1e-5, atol=1e-5)


def typed_request(model: str, feed: dict[str, np.ndarray]) -> Any:
    """A ``ModelInferRequest`` carrying each input's values in its typed contents field."""
    request = service_pb2.ModelInferRequest(model_name=model)
    for name, value in feed.items():
        tensor = request.inputs.add(name=name, shape=value.shape)
        if value.dtype == np.int64:
            tensor.datatype = "INT64"
            tensor.contents.int64_contents.extend(value.ravel().tolist())
        else:
            tensor.datatype = "FP32"
            tensor.contents.fp32_contents.extend(value.ravel().tolist())
    return request


def test_typed_contents_equal_raw_contents(served: Served, home: BoundCLI) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 224, 224)).astype(np.float32)
    channel, stub = served.stub()
    with channel:
        metadata = tuple(auth().items())
        typed = stub.ModelInfer(typed_request("document-orientation", {"x": x}), metadata=metadata)
        minilm = stub.ModelInfer(typed_request("minilm", MINILM), metadata=metadata)
    raw = served.client().infer("document-orientation", grpc_inputs({"x": x}), headers=auth())
    (output,) = typed.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("fetch_name_0", "FP32", [2, 4])
    scores = np.frombuffer(typed.raw_output_contents[0], np.float32).reshape(2, 4)
    np.testing.assert_array_equal(scores, raw.as_numpy("fetch_name_0"))
    expected = bare_onnxruntime(home, "document-orientation:1.0", {"x": x})
    np.testing.assert_allclose(scores, expected["fetch_name_0"], rtol=1e-5, atol=1e-6)
    hidden = np.frombuffer(minilm.raw_output_contents[0], np.float32).reshape(2, 6, 384)
    np.testing.assert_allclose(
        hidden, bare_onnxruntime(home, "minilm:1.0", MINILM)["last_hidden_state"], atol=1e-5
    )


def test_classification_equals_the_http_answer(served: Served) -> None:
    x = np.random.default_rng(4).standard_normal((2, 3, 224, 224)).astype(np.float32)
    top = served.client().infer(
        "document-orientation",
        grpc_inputs({"x": x}),
        outputs=[triton_grpc.InferRequestedOutput("fetch_name_0", class_count=3)],
        headers=auth(),
    )
    over_http = served.http_client().infer(
        "document-orientation",
        http_inputs({"x": x}),
        outputs=[triton_http.InferRequestedOutput("fetch_name_0", class_count=3)],
        headers=auth(),
    )
    classes = top.as_numpy("fetch_name_0")
    assert classes.shape == (2, 3) and classes[0, 0].decode().count(":") == 2  # score:index:label
    np.testing.assert_array_equal(classes, over_http.as_numpy("fetch_name_0"))


def test_unknown_model_and_bad_shape_carry_the_http_message(served: Served) -> None:
    client = served.client()
    missing = grpc_error(lambda: client.infer("nope", grpc_inputs(MINILM), headers=auth()))
    assert missing.status() == "StatusCode.NOT_FOUND"
    http = httpx.Client(base_url=served.http.url, headers=auth())
    assert missing.message() == http_error_line(http.get("/v2/models/nope"))
    metadata = grpc_error(lambda: client.get_model_metadata("minilm", "9", headers=auth()))
    assert metadata.status() == "StatusCode.NOT_FOUND" and "minilm/versions/9" in metadata.message()

    x = np.zeros((1, 3, 100, 100), np.float32)  # the model takes 224 x 224
    bad = grpc_error(
        lambda: client.infer("document-orientation", grpc_inputs({"x": x}), headers=auth())
    )
    assert bad.status() == "StatusCode.INVALID_ARGUMENT"
    body = {
        "inputs": [
            {"name": "x", "shape": [1, 3, 100, 100], "datatype": "FP32", "data": [0.0] * 30000}
        ]
    }
    response = http.post("/v2/models/document-orientation/infer", json=body)
    assert response.status_code == 400
    assert bad.message() == http_error_line(response)
    assert "'x'" in bad.message() and "224" in bad.message()


def test_malformed_contents_are_invalid_arguments(served: Served) -> None:
    channel, stub = served.stub()
    metadata = tuple(auth().items())
    short = typed_request("minilm", MINILM)
    del short.inputs[0].contents.int64_contents[-1]
    wrong_field = typed_request("minilm", MINILM)
    wrong_field.inputs[1].contents.ClearField("int64_contents")
    wrong_field.inputs[1].contents.fp32_contents.extend([1.0] * 12)
    raw_and_typed = typed_request("minilm", MINILM)
    raw_and_typed.raw_input_contents.extend([IDS.tobytes(), MASK.tobytes(), IDS.tobytes()])
    raw_too_short = service_pb2.ModelInferRequest(model_name="minilm")
    for name, value in MINILM.items():
        raw_too_short.inputs.add(name=name, datatype="INT64", shape=value.shape)
        raw_too_short.raw_input_contents.append(value.tobytes()[:-8])
    cases = [
        (short, "contents.int64_contents has 11 values but shape [2, 6] needs 12"),
        (wrong_field, "INT64 values go in contents.int64_contents, got contents.fp32_contents"),
        (raw_and_typed, "has typed contents, but the request sends raw_input_contents"),
        (raw_too_short, "88 bytes of binary data for shape [2, 6] INT64 (96 bytes)"),
    ]
    with channel:
        for request, fragment in cases:
            with pytest.raises(grpc.RpcError) as caught:
                stub.ModelInfer(request, metadata=metadata)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert fragment in caught.value.details() and "(hint: " in caught.value.details()
    assert served.client().is_server_ready()


def batch_histogram(url: str, model: str) -> tuple[float, float]:
    """``gpux_batch_size`` of ``model``: (model calls, rows in them)."""
    text = httpx.get(url + "/metrics").text
    count = re.search(rf'gpux_batch_size_count{{model="{model}"}} (\S+)', text)
    total = re.search(rf'gpux_batch_size_sum{{model="{model}"}} (\S+)', text)
    return (float(count.group(1)), float(total.group(1))) if count and total else (0.0, 0.0)


def test_grpc_and_http_requests_share_a_batch(served: Served, home: BoundCLI) -> None:
    """One HTTP and one gRPC request of one row each, sent while the model is busy with a large
    call (an idle model runs a request at once): one model call of two rows after it, and each
    client gets its own row back."""
    first, second = IDS[:1], IDS[1:]
    grpc_feed = {"input_ids": first, "attention_mask": MASK[:1], "token_type_ids": 0 * first}
    http_feed = {"input_ids": second, "attention_mask": MASK[1:], "token_type_ids": 0 * second}
    grpc_client, http_client = served.client(), httpx.Client(base_url=served.http.url)
    assert grpc_client.is_server_ready() and http_client.get("/v2/health/ready").is_success
    http_body = {
        "inputs": [
            {"name": name, "shape": list(value.shape), "datatype": "INT64", "data": value.tolist()}
            for name, value in http_feed.items()
        ]
    }
    # 16 rows of 384 tokens, one call (larger than --max-batch-size: it runs as it is): long
    # enough that the two small requests, sent once it runs, arrive while it does.
    busy = np.full((16, 384), 2000, np.int64)
    blocker = {
        "inputs": [
            {"name": name, "shape": [16, 384], "datatype": "INT64", "data": value.ravel().tolist()}
            for name, value in (
                ("input_ids", busy),
                ("attention_mask", np.ones_like(busy)),
                ("token_type_ids", 0 * busy),
            )
        ]
    }
    before = batch_histogram(served.http.url, "minilm")
    running, answers = threading.Event(), {}

    def blocking() -> None:
        blocked = httpx.post(
            served.http.url + "/v2/models/minilm/infer", json=blocker, headers=auth(), timeout=60
        )
        assert blocked.status_code == 200, blocked.text

    def over_grpc() -> None:
        running.wait(30)
        result = grpc_client.infer("minilm", grpc_inputs(grpc_feed), headers=auth())
        answers["grpc"] = result.as_numpy("last_hidden_state")

    def over_http() -> None:
        running.wait(30)
        response = http_client.post(
            "/v2/models/minilm/infer", json=http_body, headers=auth(), timeout=60
        )
        (output,) = response.json()["outputs"]
        answers["http"] = np.array(output["data"], np.float32).reshape(output["shape"])

    threads = [threading.Thread(target=f) for f in (blocking, over_grpc, over_http)]
    for thread in threads:
        thread.start()
    # The blocker is parsed (a 300 KB JSON body) and running once the model has a call in
    # flight: only then do the two small requests go.
    deadline = time.monotonic() + 30
    while not running.is_set() and time.monotonic() < deadline:
        metrics = httpx.get(served.http.url + "/metrics").text
        if 'gpux_inflight_requests{model="minilm"} 1.0' in metrics:
            running.set()
        time.sleep(0.005)
    for thread in threads:
        thread.join(60)
    after = batch_histogram(served.http.url, "minilm")
    # Two model calls: the blocker's 16 rows, then the HTTP and gRPC rows together.
    assert (after[0] - before[0], after[1] - before[1]) == (2, 18), (before, after)
    expected = bare_onnxruntime(home, "minilm:1.0", MINILM)["last_hidden_state"]
    for key, row in (("grpc", 0), ("http", 1)):
        assert answers[key].shape == (1, 6, 384)
        np.testing.assert_allclose(answers[key][0], expected[row], rtol=1e-5, atol=1e-5)
    metrics = httpx.get(served.http.url + "/metrics").text
    assert 'gpux_requests_total{endpoint="grpc_infer",model="minilm",status="200"}' in metrics


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "server.pem", folder / "server.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls_and_the_message_size_limit(home: BoundCLI, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    grpc_port = free_port()
    server = start_server(
        home,
        "document-orientation:1.0",
        "--backend",
        "cpu",
        "--grpc-port",
        str(grpc_port),
        "--grpc-tls-cert",
        str(cert),
        "--grpc-tls-key",
        str(key),
        "--max-body-mb",
        "1",
    )
    try:
        target = f"127.0.0.1:{grpc_port}"
        secure = triton_grpc.InferenceServerClient(target, ssl=True, root_certificates=str(cert))
        x = np.random.default_rng(5).standard_normal((2, 3, 224, 224)).astype(np.float32)
        one = secure.infer("document-orientation", grpc_inputs({"x": x[:1]}))  # 0.6 MB
        expected = bare_onnxruntime(home, "document-orientation:1.0", {"x": x[:1]})
        np.testing.assert_allclose(
            one.as_numpy("fetch_name_0"), expected["fetch_name_0"], atol=1e-6
        )
        too_large = grpc_error(lambda: secure.infer("document-orientation", grpc_inputs({"x": x})))
        assert too_large.status() == "StatusCode.RESOURCE_EXHAUSTED"  # 1.2 MB over --max-body-mb 1
        plaintext = triton_grpc.InferenceServerClient(target)
        assert grpc_error(plaintext.is_server_live).status() == "StatusCode.UNAVAILABLE"
        assert "over gRPC (TLS) at 127.0.0.1:" in server.log()
    finally:
        assert stop_server(server) == 0, server.log()


def test_a_detached_server_keeps_its_grpc_port(home: BoundCLI) -> None:
    grpc_port = free_port()
    started = home.ok(
        "serve", "minilm:1.0", "-d", "--backend", "cpu", "--port", str(free_port()),
        "--grpc-port", str(grpc_port), "--name", "grpc-detached",
    )  # fmt: skip
    try:
        assert f"gRPC at 127.0.0.1:{grpc_port}" in started.stderr
        # -d returns once HTTP is ready, and the lifespan started gRPC before HTTP listened.
        client = triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        assert client.is_server_ready() and client.is_model_ready("minilm")
    finally:
        home.ok("stop", "grpc-detached")


def test_grpc_flags_that_cannot_work_are_refused(home: BoundCLI, tmp_path: Path) -> None:
    port, cert = free_port(), tmp_path / "c.pem"
    cert.write_text("not a certificate")

    def serve(*flags: str) -> Any:
        return home("serve", "minilm:1.0", "--port", str(port), *flags)

    assert_failure(serve("--grpc-port", str(port)), 2, f"--grpc-port {port} is also the HTTP port")
    assert_failure(
        serve("--grpc-tls-cert", str(cert)), 2, "--grpc-tls-cert and --grpc-tls-key are for"
    )
    half = serve("--grpc-port", str(free_port()), "--grpc-tls-cert", str(cert))
    assert_failure(half, 2, "needs both --grpc-tls-cert and --grpc-tls-key")
    (tmp_path / "one").mkdir()
    (tmp_path / "other").mkdir()
    good_cert, _ = self_signed(tmp_path / "one")
    _, other_key = self_signed(tmp_path / "other")
    for cert_file, key_file in ((cert, other_key), (good_cert, other_key)):  # garbage, mismatch
        tls = ("--grpc-tls-cert", str(cert_file), "--grpc-tls-key", str(key_file))
        broken = serve("--grpc-port", str(free_port()), *tls)
        assert_failure(broken, 2, "are not a usable certificate and private key")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        refused = serve("--grpc-port", str(busy))
        assert_failure(refused, 2, f"--grpc-port {busy} on 127.0.0.1 is already in use")
