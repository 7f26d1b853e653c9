"""The OpenAI-compatible API of a real ``gpux serve`` on loopback, driven by unchanged clients:
the official ``openai`` SDK and langchain-openai, against the tiny random Llama
(tools/make_tiny_llm.py) and the minilm-embeddings example, behind a bearer token."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import numpy as np
import openai
import pytest

from gpux.runtime.generative import GenerativeModel
from tests.cli.expect import BoundCLI
from tests.serve.conftest import EXAMPLES, Server, start_server, stop_server

TOKEN = "openai-test-token"
CAP = 200  # gpux serve --max-tokens
LLM_GPUXFILE = """name: tiny-llm
model:
  source: ./tiny-llm
  format: genai
generation:
  max_new_tokens: 24
"""
MESSAGES = [{"role": "user", "content": "Hello! What is the answer?"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_llm: Path) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("openai-home")
    project = home / "llm"
    shutil.copytree(tiny_llm, project / "tiny-llm")
    (project / "GPUXfile").write_text(LLM_GPUXFILE)
    cli = BoundCLI(home)
    cli.ok("build", str(project), "-q")
    cli.ok("build", str(EXAMPLES / "minilm-embeddings"), "-q")
    served = start_server(
        cli,
        *("tiny-llm", "minilm:1.0", "--backend", "cpu", "--max-tokens", str(CAP)),
        env={"GPUX_TOKEN": TOKEN},
    )
    yield served
    assert stop_server(served) == 0, served.log()


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=TOKEN, max_retries=0)


@pytest.fixture(scope="module")
def local(tiny_llm: Path) -> GenerativeModel:
    """The same model in this process, for what the server must answer."""
    return GenerativeModel(tiny_llm, "cpu")


def metric(server: Server, name: str, **labels: str) -> float:
    text = httpx.get(server.url + "/metrics").text
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and ",".join(sorted(match.group(1).split(","))) == wanted:
            return float(match.group(2))
    return 0.0


def test_models_lists_every_served_image(client: openai.OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    assert set(models) == {"tiny-llm", "minilm"}
    assert models["tiny-llm"].owned_by == "gpux"
    assert client.models.retrieve("minilm").id == "minilm"


def test_chat_streamed_chunks_concatenate_to_the_whole_answer(
    client: openai.OpenAI, local: GenerativeModel
) -> None:
    whole = client.chat.completions.create(
        model="tiny-llm",
        messages=MESSAGES,
        max_tokens=30,
        temperature=0,  # type: ignore[arg-type]
    )
    expected = local.chat(MESSAGES, max_new_tokens=30)
    assert whole.choices[0].message.content == expected.text  # type: ignore[union-attr]
    assert whole.choices[0].finish_reason == expected.finish_reason == "length"
    assert whole.usage is not None
    assert whole.usage.prompt_tokens == expected.prompt_tokens  # type: ignore[union-attr]
    assert whole.usage.completion_tokens == 30

    chunks = list(
        client.chat.completions.create(
            model="tiny-llm",
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=30,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage


def test_completions_stream_and_token_id_prompts(
    client: openai.OpenAI, local: GenerativeModel
) -> None:
    prompt = "The quick brown fox"
    whole = client.completions.create(model="tiny-llm", prompt=prompt, max_tokens=20)
    assert whole.choices[0].text == local.generate(prompt, max_new_tokens=20).text  # type: ignore[union-attr]
    streamed = client.completions.create(
        model="tiny-llm", prompt=prompt, max_tokens=20, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == whole.choices[0].text
    by_ids = client.completions.create(model="tiny-llm", prompt=local.encode(prompt), max_tokens=20)
    assert by_ids.choices[0].text == whole.choices[0].text
    # Unset, max_tokens is the image's generation.max_new_tokens (24), under the cap.
    default = client.completions.create(model="tiny-llm", prompt=prompt)
    assert default.usage is not None and default.usage.completion_tokens == 24


def test_stop_seed_and_temperature(client: openai.OpenAI) -> None:
    def complete(**settings: object) -> openai.types.Completion:
        return client.completions.create(model="tiny-llm", prompt="Hello", **settings)  # type: ignore[call-overload, no-any-return]

    free = complete(max_tokens=30).choices[0].text
    stop = free[8:11]
    cut = complete(max_tokens=30, stop=[stop]).choices[0]
    assert cut.text == free[: free.index(stop)] and cut.finish_reason == "stop"
    sampled = complete(max_tokens=30, temperature=1.0, seed=7).choices[0].text
    assert complete(max_tokens=30, temperature=1.0, seed=7).choices[0].text == sampled
    others = {complete(max_tokens=30, temperature=1.0, seed=s).choices[0].text for s in (1, 2)}
    assert others | {sampled} != {sampled}


SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 10},
        "count": {"type": "integer", "minimum": 0, "maximum": 1000},
    },
    "required": ["name", "count"],
    "additionalProperties": False,
}


def test_response_format_json_schema_output_parses_against_it(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="tiny-llm",
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=120,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "thing", "schema": SCHEMA, "strict": True},
        },
    )
    assert answer.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(answer.choices[0].message.content or ""), SCHEMA)
    anything = client.chat.completions.create(
        model="tiny-llm",
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=120,
        response_format={"type": "json_object"},
    )
    assert isinstance(json.loads(anything.choices[0].message.content or ""), dict)


def test_embeddings_base64_by_default_and_float(client: openai.OpenAI, server: Server) -> None:
    texts = ["hello", "The quick brown fox jumps over the lazy dog."]
    default = client.embeddings.create(model="minilm", input=texts)  # the SDK asks for base64
    floats = client.embeddings.create(model="minilm", input=texts, encoding_format="float")
    assert [d.index for d in default.data] == [0, 1]
    for a, b in zip(default.data, floats.data, strict=True):
        assert len(a.embedding) == 384
        np.testing.assert_allclose(a.embedding, b.embedding, rtol=1e-6, atol=1e-7)
    predicted = httpx.post(
        server.url + "/v1/models/minilm/predict",
        json={"text": texts[1]},
        headers={"Authorization": f"Bearer {TOKEN}"},
    ).json()["result"]["embedding"]
    np.testing.assert_allclose(floats.data[1].embedding, predicted, rtol=1e-5, atol=1e-6)
    # [CLS] hello [SEP] in MiniLM's (BERT's uncased) vocabulary: the same text, as token ids.
    by_ids = client.embeddings.create(model="minilm", input=[101, 7592, 102])
    np.testing.assert_allclose(by_ids.data[0].embedding, floats.data[0].embedding, atol=1e-5)
    assert floats.usage.prompt_tokens == 3 + 12 and by_ids.usage.prompt_tokens == 3


def test_max_tokens_cap_and_client_mistakes(client: openai.OpenAI, server: Server) -> None:
    with pytest.raises(openai.BadRequestError) as capped:
        client.completions.create(model="tiny-llm", prompt="Hi", max_tokens=CAP + 1)
    error = capped.value.body  # the SDK keeps the body's "error" object
    assert (
        isinstance(error, dict)
        and error["param"] == "max_tokens"
        and f"at most {CAP}" in error["message"]
    )
    assert client.completions.create(model="tiny-llm", prompt="Hi", max_tokens=CAP).usage

    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
    assert unknown.value.code == "model_not_found" and "tiny-llm" in str(unknown.value.body)
    with pytest.raises(openai.BadRequestError, match="does not generate text"):
        client.chat.completions.create(model="minilm", messages=MESSAGES)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="does not embed text"):
        client.embeddings.create(model="tiny-llm", input="hello")
    with pytest.raises(openai.BadRequestError) as many:
        client.chat.completions.create(model="tiny-llm", messages=MESSAGES, n=2)  # type: ignore[arg-type]
    assert many.value.param == "n"  # type: ignore[attr-defined]
    with pytest.raises(openai.BadRequestError, match="vocabulary"):
        client.embeddings.create(model="minilm", input=[101, 99999999])
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model="tiny-llm", messages=[])
    wrong = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        wrong.models.list()
    assert refused.value.body["message"] == "missing or wrong bearer token"  # type: ignore[index]

    # The tensor and pipeline routes refuse a generative model, pointing to these routes.
    auth = {"Authorization": f"Bearer {TOKEN}"}
    infer = httpx.post(server.url + "/v2/models/tiny-llm/infer", json={"inputs": []}, headers=auth)
    assert infer.status_code == 400 and "/v1/chat/completions" in infer.json()["hint"]
    predict = httpx.post(server.url + "/v1/models/tiny-llm/predict", json={}, headers=auth)
    assert predict.status_code == 400 and "/v1/chat/completions" in predict.json()["hint"]


def test_a_client_that_disconnects_stops_its_generation(
    client: openai.OpenAI, server: Server
) -> None:
    """Eight long generations keep the model's thread busy (each gets a turn in eight), so the
    disconnected one cannot finish before the server notices the client is gone."""
    before_cancelled = metric(
        server, "gpux_generations_total", model="tiny-llm", finish="cancelled"
    )
    before_out = metric(server, "gpux_generated_tokens_total", model="tiny-llm")
    busy: list[int] = []

    def long_generation() -> None:
        answer = client.completions.create(model="tiny-llm", prompt="Hi", max_tokens=CAP)
        assert answer.usage is not None
        busy.append(answer.usage.completion_tokens)

    threads = [threading.Thread(target=long_generation) for _ in range(8)]
    for thread in threads:
        thread.start()
    with client.completions.with_streaming_response.create(
        model="tiny-llm", prompt="Hi", max_tokens=CAP, stream=True
    ) as response:
        first = next(response.iter_lines())
        assert first.startswith("data: ")
    # Leaving the block closed the connection after the first chunk.
    deadline = time.monotonic() + 10
    while metric(server, "gpux_generations_total", model="tiny-llm", finish="cancelled") == (
        before_cancelled
    ):
        assert time.monotonic() < deadline, "the generation was not cancelled"
        time.sleep(0.05)
    for thread in threads:
        thread.join()
    out = metric(server, "gpux_generated_tokens_total", model="tiny-llm") - before_out
    disconnected = out - sum(busy)
    assert len(busy) == 8 and 1 <= disconnected < CAP / 2, (busy, out)
    time.sleep(0.2)  # nothing generates any more
    assert metric(server, "gpux_generated_tokens_total", model="tiny-llm") - before_out == out
    assert metric(server, "gpux_time_to_first_token_seconds_count", model="tiny-llm") > 0
    assert metric(server, "gpux_inter_token_seconds_count", model="tiny-llm") > 0


def test_concurrent_chats_are_batched_and_each_equals_its_lone_answer(
    client: openai.OpenAI, server: Server, local: GenerativeModel
) -> None:
    """Six streamed chats sent at once: the first starts alone at once, those that arrive while
    it runs gather into a batch (gpux_generation_batch_rows), and every answer is the one the
    same chat gets alone."""
    questions = [f"Question {i}: {'why ' * i}is the sky blue?" for i in range(6)]
    expected = [
        local.chat([{"role": "user", "content": q}], max_new_tokens=120).text for q in questions
    ]
    batches_before = metric(server, "gpux_generation_batch_rows_count", model="tiny-llm")
    rows_before = metric(server, "gpux_generation_batch_rows_sum", model="tiny-llm")
    answers: dict[int, str] = {}
    barrier = threading.Barrier(len(questions))

    def chat(index: int) -> None:
        barrier.wait()
        chunks = client.chat.completions.create(
            model="tiny-llm",
            messages=[{"role": "user", "content": questions[index]}],
            max_tokens=120,
            temperature=0,
            stream=True,
        )
        answers[index] = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    threads = [threading.Thread(target=chat, args=(i,)) for i in range(len(questions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [answers[i] for i in range(len(questions))] == expected
    batches = metric(server, "gpux_generation_batch_rows_count", model="tiny-llm") - batches_before
    rows = metric(server, "gpux_generation_batch_rows_sum", model="tiny-llm") - rows_before
    assert rows == len(questions) and batches < rows  # at least one batch had several rows


def test_langchain_chat_and_embeddings(client: openai.OpenAI, server: Server) -> None:
    from langchain_openai import ChatOpenAI, OpenAIEmbeddings

    chat = ChatOpenAI(
        base_url=server.url + "/v1", api_key=TOKEN, model="tiny-llm", temperature=0, max_tokens=16
    )  # type: ignore[call-arg]
    expected = client.chat.completions.create(
        model="tiny-llm",
        messages=[{"role": "user", "content": "Hello"}],
        max_tokens=16,
        temperature=0,
    )
    assert chat.invoke("Hello").content == expected.choices[0].message.content
    assert (
        "".join(str(c.content) for c in chat.stream("Hello")) == expected.choices[0].message.content
    )

    embeddings = OpenAIEmbeddings(
        base_url=server.url + "/v1",
        api_key=TOKEN,  # type: ignore[arg-type]
        model="minilm",
        check_embedding_ctx_length=False,  # its token path downloads tiktoken's files
    )
    vectors = embeddings.embed_documents(["hello", "world"])
    direct = client.embeddings.create(model="minilm", input=["hello", "world"])
    np.testing.assert_allclose(vectors, [d.embedding for d in direct.data], atol=1e-6)
    np.testing.assert_allclose(embeddings.embed_query("hello"), vectors[0], atol=1e-6)
