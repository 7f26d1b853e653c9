"""KServe's own CRD schemas (../shared/kserve/, see its README) as a strict JSON-schema check,
so that manifests are validated as a Kubernetes API server with KServe installed would, without
a cluster: the ``x-kubernetes-*`` keys go, and an object that lists its ``properties`` without
``x-kubernetes-preserve-unknown-fields`` refuses every other key (the API server drops or refuses
unknown fields). ``metadata`` is an ObjectMeta, which the CRD leaves to the API server: checked
here against ObjectMeta's fields."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

FOLDER = Path(__file__).resolve().parents[2].parent / "shared" / "kserve"
FILES = {
    "ServingRuntime": "serving.kserve.io_servingruntimes.yaml",
    "InferenceService": "serving.kserve.io_inferenceservices.yaml",
}
OBJECT_META = {
    "name": {"type": "string", "maxLength": 253},
    "namespace": {"type": "string", "maxLength": 63},
    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    "generateName": {"type": "string"},
    "finalizers": {"type": "array", "items": {"type": "string"}},
    "ownerReferences": {"type": "array", "items": {"type": "object"}},
}


def strict(schema: Any) -> Any:
    """The schema with unknown keys refused wherever the API server would refuse them."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def validator(kind: str) -> jsonschema.Validator:
    path = FOLDER / FILES[kind]
    if not path.is_file():
        pytest.skip(f"KServe's CRDs are not at {FOLDER} (see the shared folder's README)")
    crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    [version] = [v for v in crd["spec"]["versions"] if v.get("storage")]
    schema = strict(version["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {
        "type": "object",
        "properties": OBJECT_META,
        "additionalProperties": False,
        "required": ["name"],
    }
    schema["properties"]["apiVersion"] = {"const": f"{crd['spec']['group']}/{version['name']}"}
    schema["properties"]["kind"] = {"const": crd["spec"]["names"]["kind"]}
    schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
    return jsonschema.Draft7Validator(schema)  # OpenAPI v3.0's schemas are draft 4 to 7


def problems(document: dict[str, Any]) -> list[str]:
    """Every way ``document`` breaks its kind's schema (empty: it validates)."""
    kind = document.get("kind")
    if kind not in FILES:
        return [f"kind {kind!r} is not one of {sorted(FILES)}"]
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
        for error in validator(str(kind)).iter_errors(document)
    ]
