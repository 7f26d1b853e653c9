"""The server's web pages in a real browser (Debian's chromium, driven by Playwright): the
playground runs real models, the docs render the OpenAPI document, which names every route."""

from __future__ import annotations

import importlib.util
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, expect, sync_playwright
from starlette.routing import Route

import gpux
from gpux.serve.app import ServedModel, create_app
from gpux.serve.load import load_served
from gpux.serve.web import openapi_document
from gpux.store import Store
from tests.cli.expect import BoundCLI
from tests.serve.conftest import EXAMPLES, free_port

pytestmark = [pytest.mark.zoo, pytest.mark.slow]

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SENTENCE = "The quick brown fox jumps over the lazy dog."


@dataclass
class WebServer:
    url: str
    routes: list[Route]
    served: list[ServedModel]

    def predict(self, model: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/models/{model}/predict", headers=AUTH, **kwargs)


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    """minilm and document-orientation behind a token, with the web routes outside the guard,
    as ``gpux serve --token`` mounts them; uvicorn in a thread of this process."""
    home = tmp_path_factory.mktemp("web-home")
    cli = BoundCLI(home)
    for example in ("minilm-embeddings", "document-orientation"):
        cli.ok("build", str(EXAMPLES / example), "-q")
    served = load_served(["minilm:1.0", "document-orientation:1.0"], "cpu", store=Store(home))
    app = create_app(served, token=TOKEN)  # serves the pages too
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    routes = [r for r in app.routes if isinstance(r, Route)]
    yield WebServer(f"http://127.0.0.1:{port}", routes, served)
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed: run make system-deps")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, web: WebServer) -> Iterator[Page]:
    """A fresh tab; the test fails on any script error, blocked inline code or outside request."""
    tab = browser.new_page()
    problems: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            problems.append(message.text)

    def request(sent: Request) -> None:
        if not sent.url.startswith(web.url):
            problems.append(f"outside request: {sent.url}")

    tab.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    tab.on("console", console)
    tab.on("request", request)
    yield tab
    tab.close()
    assert problems == []


def run_and_wait(page: Page) -> None:
    """Click Run and wait until the answer is on the page (the button is enabled again)."""
    with page.expect_response(lambda response: "/predict" in response.url):
        page.click("#run")
    expect(page.locator("#run")).to_be_enabled()


def test_playground_embeds_a_sentence(page: Page, web: WebServer) -> None:
    page.goto(web.url + "/")
    models = page.locator("#models button")
    expect(models).to_have_count(2)
    expect(models.nth(0)).to_contain_text("minilm:1.0")
    expect(models.nth(0)).to_contain_text("cpu")
    expect(models.nth(0)).to_contain_text("all-MiniLM-L6-v2 sentence embeddings")
    expect(models.nth(1)).to_contain_text("Which way up is a scanned page?")

    page.click("button[data-model=minilm]")
    page.fill("#input-text", SENTENCE)
    run_and_wait(page)  # no token yet: the server's 401, shown with its hint
    expect(page.locator("#error")).to_have_text("missing or wrong bearer token")
    expect(page.locator("#hint")).to_have_text("hint: send Authorization: Bearer TOKEN")

    expect(page.locator("#token")).to_be_visible()  # the server wants a token
    page.fill("#token", TOKEN)
    run_and_wait(page)
    expect(page.locator("#error")).to_have_text("")
    expect(page.locator("#summary li")).to_have_count(1)
    expect(page.locator("#summary")).to_contain_text("embedding: 384 dimensions [")
    expect(page.locator("#meta")).to_contain_text("minilm:1.0 · cpu · ")
    shown = json.loads(page.locator("#json").text_content() or "")
    expected = web.predict("minilm", json={"text": SENTENCE}).json()["result"]["embedding"]
    np.testing.assert_allclose(shown["result"]["embedding"], expected, rtol=1e-6, atol=1e-7)


def test_playground_classifies_an_uploaded_page_and_survives_garbage(
    page: Page, web: WebServer, zoo_file: Callable[[str], Path], tmp_path: Path
) -> None:
    scan = zoo_file("page.png")
    garbage = tmp_path / "notes.txt"
    garbage.write_text("not an image at all\n")
    expected = web.predict("document-orientation", files={"image": scan.read_bytes()}).json()
    best = expected["result"]["orientation"][0]
    refused = web.predict("document-orientation", files={"image": garbage.read_bytes()})
    assert refused.status_code == 400

    page.goto(web.url + "/#document-orientation")  # the hash picks the model
    expect(page.locator("#title")).to_have_text("document-orientation:1.0")
    page.fill("#token", TOKEN)
    page.set_input_files("#input-image", str(scan))
    run_and_wait(page)
    assert best["label"] == "0"
    expect(page.locator("#summary li").first).to_have_text(f"0 — {best['score']:.4f}")
    expect(page.locator("#summary li")).to_have_count(2)  # top_k: k=2

    page.set_input_files("#input-image", str(garbage))
    run_and_wait(page)
    # The message up to its details (which name a Python object, different on each call).
    expect(page.locator("#error")).to_contain_text(refused.json()["error"].split(" (")[0])
    expect(page.locator("#hint")).to_have_text("hint: " + refused.json()["hint"])
    expect(page.locator("#summary li")).to_have_count(0)

    page.set_input_files("#input-image", str(scan))  # the page still works
    run_and_wait(page)
    expect(page.locator("#error")).to_have_text("")
    expect(page.locator("#summary li").first).to_have_text(f"0 — {best['score']:.4f}")


def test_docs_page_lists_every_endpoint(page: Page, web: WebServer) -> None:
    page.goto(web.url + "/docs")
    expect(page.locator("#title")).to_have_text(f"GPUX inference server {gpux.__version__}")
    paths = set(page.locator("section.op").evaluate_all("nodes => nodes.map(n => n.dataset.path)"))
    assert {r.path for r in web.routes} <= paths
    infer = page.locator("section.op[data-path='/v2/models/{model}/infer']")
    expect(infer).to_contain_text("needs the bearer token")
    expect(infer).to_contain_text("Inference-Header-Content-Length")
    predict = page.locator("section.op[data-path='/v1/models/{model}/predict']")
    expect(predict).to_contain_text("one of minilm, document-orientation")
    predict.locator("summary", has_text="minilm: one item").click()
    expect(predict).to_contain_text(
        json.dumps({"text": "GPUX runs ONNX models on any GPU."}, indent=2)
    )
    health = page.locator("section.op[data-path='/v2/health/ready']")
    expect(health).not_to_contain_text("needs the bearer token")


def test_openapi_document_describes_the_app(web: WebServer) -> None:
    response = httpx.get(web.url + "/openapi.json")  # no token: the web pages are public
    assert response.status_code == 200
    spec = response.json()
    assert spec["openapi"] == "3.1.0" and spec["info"]["version"] == gpux.__version__
    for route in web.routes:
        described = {m.upper() for m in spec["paths"][route.path] if m != "parameters"}
        assert described == set(route.methods or ()) - {"HEAD"}, route.path
    assert "/predict" not in spec["paths"]  # two models: no short path
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert spec["paths"]["/v2/health/live"]["get"]["security"] == []
    assert spec["paths"]["/v2/models/{model}/infer"]["post"]["security"] == [{"bearer": []}]
    assert "401" in spec["paths"]["/v2/models/{model}/infer"]["post"]["responses"]

    text = json.dumps(spec)
    for reference in {
        part.split('"')[0] for part in text.split('"$ref": "#/components/schemas/')[1:]
    }:
        assert reference in spec["components"]["schemas"], reference

    # The examples are real requests: sent as they are, they succeed.
    predict = spec["paths"]["/v1/models/{model}/predict"]["post"]["requestBody"]["content"]
    examples = predict["application/json"]["examples"]
    assert examples["minilm"]["value"] == {"text": "GPUX runs ONNX models on any GPU."}
    assert list(examples["document-orientation"]["value"]) == ["image"]
    assert set(predict["multipart/form-data"]["examples"]) == {"minilm", "document-orientation"}
    assert web.predict("minilm", json=examples["minilm-batch"]["value"]).status_code == 200
    infer = spec["paths"]["/v2/models/{model}/infer"]["post"]["requestBody"]["content"]
    for model, example in infer["application/json"]["examples"].items():
        sent = httpx.post(f"{web.url}/v2/models/{model}/infer", json=example["value"], headers=AUTH)
        assert sent.status_code == 200, sent.text
    assert "application/octet-stream" in infer

    # One model, no token: the short /predict path, and no security anywhere.
    single = openapi_document(web.served[:1])
    assert "/predict" in single["paths"] and "securitySchemes" not in single["components"]
    assert "security" not in json.dumps(single)
    single_examples = single["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert set(single_examples["application/json"]["examples"]) == {"minilm", "minilm-batch"}

    if importlib.util.find_spec("openapi_spec_validator"):  # not a dependency: when present
        importlib.import_module("openapi_spec_validator").validate(spec)
