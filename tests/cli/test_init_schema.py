"""``gpux init`` (both templates build), ``gpux schema`` (a JSON Schema that accepts what GPUX
accepts and rejects what it rejects), ``--version`` and ``--help``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpux import __version__
from tests import generated_models
from tests.cli.expect import BoundCLI, assert_failure, hint_of


@pytest.fixture
def model_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "Sentiment Model"  # the image name is derived from it
    generated_models.linear(folder / "linear.onnx")
    return folder


@pytest.mark.parametrize("template", ["minimal", "full"])
def test_init_writes_a_gpuxfile_that_builds(
    gpux: BoundCLI, model_folder: Path, template: str
) -> None:
    written = gpux.ok("init", str(model_folder), "--template", template)
    gpuxfile = model_folder / "GPUXfile"
    assert f"wrote {gpuxfile}" in written.stderr
    assert f"gpux build {model_folder}" in written.stderr
    text = gpuxfile.read_text()
    assert "name: sentiment-model" in text
    assert "./linear.onnx" in text  # the only .onnx file in the folder
    assert text.lstrip().startswith("#")  # commented for the reader

    built = gpux.json("build", str(model_folder), "--json")
    assert built["image"] == "sentiment-model:1.0"
    assert built["placement"]["backend"] == "cpu"
    result = gpux.json("run", "sentiment-model:1.0", "--input", "x=[[1, 2, 3, 4]]")
    assert result["outputs"]["y"]["data"] == [[7.0, 6.0, 8.5]]
    info = gpux.json("inspect", "sentiment-model:1.0", "--json")
    if template == "full":
        assert info["description"] == "What this model does, in one line."
        runtime = info["runtime"]
        assert {k: runtime[k] for k in ("backend", "device", "threads", "graph_optimization")} == {
            "backend": "auto",
            "device": 0,
            "threads": 0,
            "graph_optimization": "all",
        }
        assert runtime["cuda"] == {"conv_algo_search": "exhaustive", "cuda_graphs": False}
    gpux.ok("rm", "sentiment-model:1.0")


def test_init_refuses_to_overwrite(gpux: BoundCLI, model_folder: Path) -> None:
    gpux.ok("init", str(model_folder))
    gpuxfile = model_folder / "GPUXfile"
    gpuxfile.write_text("model: ./linear.onnx  # edited by hand\n")
    refused = gpux("init", str(model_folder), "--template", "full")
    assert_failure(refused, 2, f"{gpuxfile} already exists")
    assert "--force" in hint_of(refused)
    assert gpuxfile.read_text() == "model: ./linear.onnx  # edited by hand\n"

    gpux.ok("init", str(model_folder), "--template", "full", "--force")
    assert "serving:" in gpuxfile.read_text()


def test_init_refuses_when_another_gpuxfile_name_exists(gpux: BoundCLI, tmp_path: Path) -> None:
    (tmp_path / "gpux.yaml").write_text("model: ./m.onnx\n")
    assert_failure(gpux("init", str(tmp_path)), 2, "gpux.yaml already exists")
    assert not (tmp_path / "GPUXfile").exists()


def test_init_options_and_a_new_folder(gpux: BoundCLI, tmp_path: Path) -> None:
    folder = tmp_path / "new" / "project"
    gpux.ok("init", str(folder), "--name", "classifier", "--model", "hf:org/repo/m.onnx@v1")
    config = yaml.safe_load((folder / "GPUXfile").read_text())
    assert config["name"] == "classifier"
    assert config["model"] == "hf:org/repo/m.onnx@v1"


def test_init_without_a_model_points_at_model_onnx(gpux: BoundCLI, tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    gpux.ok("init", str(folder))
    assert yaml.safe_load((folder / "GPUXfile").read_text())["model"] == "./model.onnx"
    # Building says which file is missing and where it was looked for.
    missing = gpux("build", str(folder))
    assert_failure(missing, 4, "model file './model.onnx' not found", str(folder / "model.onnx"))


# -- gpux schema ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schema(gpux: BoundCLI) -> dict[str, Any]:
    document: dict[str, Any] = gpux.json("schema")
    return document


def test_schema_is_a_json_schema_of_the_gpuxfile(schema: dict[str, Any]) -> None:
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object"
    assert schema["required"] == ["model"]
    assert schema["additionalProperties"] is False
    for key in ("model", "inputs", "outputs", "runtime", "serving", "labels"):
        assert key in schema["properties"], key
    runtime = resolve(schema, schema["properties"]["runtime"])
    backend = resolve(schema, runtime["properties"]["backend"])
    assert "cuda" in backend["enum"] and "auto" in backend["enum"]
    # Every reference resolves.
    refs = re.findall(r'"\$ref": "([^"]+)"', json.dumps(schema))
    assert refs
    for ref in refs:
        resolve(schema, {"$ref": ref})
    # Keys carry descriptions for editor tooltips.
    assert schema["properties"]["model"]["description"]


@pytest.mark.parametrize("template", ["minimal", "full"])
def test_schema_accepts_the_templates(
    gpux: BoundCLI, schema: dict[str, Any], tmp_path: Path, template: str
) -> None:
    gpux.ok("init", str(tmp_path), "--template", template, "--model", "./m.onnx")
    document = yaml.safe_load((tmp_path / "GPUXfile").read_text())
    assert validate(schema, document) == []


def test_schema_accepts_what_gpux_accepts(
    gpux: BoundCLI, schema: dict[str, Any], tmp_path: Path
) -> None:
    generated_models.linear(tmp_path / "m.onnx")
    text = (
        "name: accepted\nversion: 1.0\nmodel: ./m.onnx\n"
        "inputs:\n  - name: x\n    shape: [batch, 4]\n    example: [[1, 2, 3, 4]]\n"
        "labels: [a, b, c]\nruntime: {backend: cpu, threads: 1}\nserving: {port: 9000}\n"
    )
    (tmp_path / "GPUXfile").write_text(text)
    assert validate(schema, yaml.safe_load(text)) == []
    assert gpux.ok("build", str(tmp_path), "-q").stdout == "accepted:1.0\n"


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ({"runtime": {"backend": "cpu"}}, "missing 'model'"),
        ({"model": "./m.onnx", "runtme": {}}, "unexpected 'runtme'"),
        ({"model": "./m.onnx", "runtime": {"backend": "cdua"}}, "not one of"),
        ({"model": "./m.onnx", "runtime": {"threads": "four"}}, "not integer"),
        ({"model": "./m.onnx", "serving": {"port": 70000}}, "above 65535"),
        ({"model": {"source": "./m.onnx", "sha256": "abc"}}, "does not match"),
    ],
)
def test_schema_rejects_what_gpux_rejects(
    gpux: BoundCLI,
    schema: dict[str, Any],
    tmp_path: Path,
    document: dict[str, Any],
    problem: str,
) -> None:
    problems = validate(schema, document)
    assert any(problem in p for p in problems), problems
    (tmp_path / "GPUXfile").write_text(yaml.safe_dump(document))
    assert gpux("build", str(tmp_path)).code == 3  # and so does gpux itself


def test_version_and_help(gpux: BoundCLI) -> None:
    assert gpux.ok("--version").stdout == f"gpux {__version__}\n"
    shown = gpux.ok("--help").stdout
    for command in (
        "init",
        "build",
        "run",
        "inspect",
        "images",
        "list",
        "rm",
        "tag",
        "prune",
        "schema",
    ):
        assert re.search(rf"^\s+{command}\b", shown, re.MULTILINE), command


# -- a small JSON Schema checker: the keywords ``gpux schema`` uses ----------------------------


def resolve(root: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        assert node["$ref"].startswith("#/$defs/"), node["$ref"]
        node = root["$defs"][node["$ref"].removeprefix("#/$defs/")]
    return node


TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
    "integer": int,
    "number": (int, float),
}


def validate(root: dict[str, Any], value: Any, node: Any = None, at: str = "") -> list[str]:
    node = resolve(root, root if node is None else node)
    problems: list[str] = []
    if "anyOf" in node:
        options = [validate(root, value, option, at) for option in node["anyOf"]]
        if all(options):
            problems.append(f"{at}: matches no option: {options}")
        return problems
    kind = node.get("type")
    if kind:
        wanted = TYPES[kind]
        if not isinstance(value, wanted) or (isinstance(value, bool) and kind != "boolean"):
            return [f"{at}: {value!r} is not {kind}"]
    if "enum" in node and value not in node["enum"]:
        problems.append(f"{at}: {value!r} is not one of {node['enum']}")
    if isinstance(value, str):
        if len(value) < node.get("minLength", 0):
            problems.append(f"{at}: too short")
        if "pattern" in node and not re.search(node["pattern"], value):
            problems.append(f"{at}: {value!r} does not match {node['pattern']}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "maximum" in node and value > node["maximum"]:
            problems.append(f"{at}: {value} is above {node['maximum']}")
        if "minimum" in node and value < node["minimum"]:
            problems.append(f"{at}: {value} is below {node['minimum']}")
        if "exclusiveMinimum" in node and value <= node["exclusiveMinimum"]:
            problems.append(f"{at}: {value} is not above {node['exclusiveMinimum']}")
    if isinstance(value, list) and "items" in node:
        for index, item in enumerate(value):
            problems += validate(root, item, node["items"], f"{at}[{index}]")
    if isinstance(value, dict):
        properties = node.get("properties", {})
        problems += [
            f"{at}: missing '{key}'" for key in node.get("required", []) if key not in value
        ]
        for key, item in value.items():
            if key in properties:
                problems += validate(root, item, properties[key], f"{at}.{key}")
            elif node.get("additionalProperties") is False:
                problems.append(f"{at}: unexpected '{key}'")
    return problems
