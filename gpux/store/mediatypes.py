"""OCI media types of GPUX images."""

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
ARTIFACT = "application/vnd.gpux.image.v1"
CONFIG = "application/vnd.gpux.config.v1+json"
MODEL = "application/vnd.gpux.model.onnx.v1"
MODEL_OPTIMIZED = "application/vnd.gpux.model.optimized.onnx.v1"
LABELS = "application/vnd.gpux.labels.v1+txt"
TOKENIZER = "application/vnd.gpux.tokenizer.v1+json"
# One layer per file of a model folder (an onnxruntime-genai model), titled by its path in the
# folder: gpux/store/folders.py lays them out again.
GENAI_FILE = "application/vnd.gpux.genai.file.v1"
HANDLER = "application/vnd.gpux.handler.v1.tar"  # the handler's code: gpux/store/code.py

REF_NAME = "org.opencontainers.image.ref.name"
TITLE = "org.opencontainers.image.title"
CREATED = "org.opencontainers.image.created"
VERSION = "org.opencontainers.image.version"
DESCRIPTION = "org.opencontainers.image.description"
BUILD_KEY = "dev.gpux.builder.key"
