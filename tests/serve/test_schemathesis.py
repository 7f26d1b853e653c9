"""schemathesis against a real ``gpux serve`` with two zoo models and a token: every operation of
the server's own OpenAPI document is fuzzed (examples, coverage, fuzzing and stateful phases),
with a bounded number of examples per operation.

What must hold: no 5xx, and every response fits the document (status codes, content types,
headers and bodies). Whether the document is precise enough that every schema-valid body is
accepted (``positive_data_acceptance``) is not asked: one templated ``{model}`` path serves
models with different inputs, which OpenAPI cannot tie together.

The seed is fixed so that CI is reproducible; ``GPUX_FUZZ_SEED`` and ``GPUX_FUZZ_EXAMPLES``
explore further (e.g. ``GPUX_FUZZ_SEED=$RANDOM GPUX_FUZZ_EXAMPLES=500``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.serve.conftest import Server, two_model_server

pytestmark = [pytest.mark.zoo, pytest.mark.slow]

TOKEN = "fuzz-token-0123456789"
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "unsupported_method",
    "ignored_auth",
    "missing_required_header",
)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, zoo_file: Callable[[str], Path]
) -> Iterator[Server]:
    yield from two_model_server(tmp_path_factory.mktemp("fuzz-home"), TOKEN, max_batch_size=8)


def test_schemathesis_finds_no_server_error_and_no_answer_outside_the_document(
    server: Server, tmp_path: Path
) -> None:
    examples = os.environ.get("GPUX_FUZZ_EXAMPLES", "40")
    seed = os.environ.get("GPUX_FUZZ_SEED", "20261204")
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{server.url}/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        examples,
        "--seed",
        seed,
        "--workers",
        "1",
        "--request-timeout",
        "60",
        "--header",
        f"Authorization: Bearer {TOKEN}",
        "--no-color",
        "--output-truncate",
        "true",
        "--generation-database",
        "none",
    ]
    result = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=900, check=False
    )
    report = result.stdout[-20000:] + result.stderr[-4000:]
    assert result.returncode == 0, f"schemathesis (seed {seed}) found problems:\n{report}"
    assert "generated" in result.stdout and "Operations:" in result.stdout, report
    # The server answered everything and is still healthy.
    assert server.process.poll() is None, server.log()
    assert "Traceback" not in server.log(), server.log()[-5000:]
