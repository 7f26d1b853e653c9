"""GPUXfile v1 schema.

Every field carries a description: it feeds ``gpux schema`` (editor completion) and docs/gpuxfile.md.
Unknown keys are rejected (``extra="forbid"``) so that a typo never silently falls back to a default.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from gpux.config.common import FileSource, Strict, TensorName
from gpux.config.generation import Generation
from gpux.config.handler import HandlerSpec, handler_shorthand
from gpux.config.pipeline import PipelineInput, PipelineOutput
from gpux.config.speech import Speech

SCHEMA_VERSION = 1


class DType(StrEnum):
    """Tensor element types, named as numpy names them."""

    float32 = "float32"
    float16 = "float16"
    float64 = "float64"
    bfloat16 = "bfloat16"
    int8 = "int8"
    int16 = "int16"
    int32 = "int32"
    int64 = "int64"
    uint8 = "uint8"
    uint16 = "uint16"
    uint32 = "uint32"
    uint64 = "uint64"
    bool = "bool"
    string = "string"


class Backend(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    tensorrt = "tensorrt"
    rocm = "rocm"
    coreml = "coreml"
    directml = "directml"
    openvino = "openvino"
    webgpu = "webgpu"
    wgpu = "wgpu"  # GPUX's own WebGPU engine (gpux.runtime.wgpu), never chosen by auto


class GraphOptimization(StrEnum):
    disable = "disable"
    basic = "basic"
    extended = "extended"
    all = "all"


_SYMBOL = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]*$")


def _check_dim(dim: int | str | None) -> int | str | None:
    if isinstance(dim, bool) or (isinstance(dim, int) and dim < 1):
        raise ValueError("a dimension must be an integer >= 1, a name like 'batch', or null")
    if isinstance(dim, str) and not _SYMBOL.match(dim):
        raise ValueError("a symbolic dimension must be an identifier like 'batch'")
    return dim


Dim = Annotated[int | str | None, AfterValidator(_check_dim)]
"""A fixed size (int >= 1), a symbolic name (``batch``), or null for "any size"."""
IMAGE_NAME = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")


def check_image_name(value: str | None) -> str | None:
    if value is not None and not IMAGE_NAME.match(value):
        raise ValueError(
            f"name {value!r} must be lowercase letters, digits and . _ - separators "
            "(like 'sentiment' or 'resnet-50')"
        )
    return value


def version_as_text(value: Any) -> Any:
    """`version: 1.0` is a YAML float; users mean the text they typed."""
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def check_version(value: str | None) -> str | None:
    if value is not None and not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", value):
        raise ValueError(f"version {value!r} must be a valid tag: letters, digits, _ . -")
    return value


class ModelSource(FileSource):
    """Where the ONNX model comes from."""

    format: str = Field(
        default="onnx",
        pattern=r"^(onnx|genai|gguf|transformers)$",
        description="``onnx``: one ONNX graph. ``genai``: a generative model, an onnxruntime-genai folder (``genai_config.json``, the ONNX graph and its weights, ``tokenizer.json``, chat template) that ``source`` names (a project folder, or an archive with ``member`` naming the folder inside it). ``gguf`` (a GGUF file, from any source; taken when ``source`` or ``member`` ends in ``.gguf`` and no format is given) or ``transformers`` (a Hugging Face checkpoint folder in the project): a generative model that the build converts to a genai folder first, with onnxruntime-genai's model builder (``gpux convert``; needs the converter's Python, ``GPUX_CONVERT_PYTHON``).",
    )
    precision: str | None = Field(
        default=None,
        pattern=r"^(int4|int8|fp16|fp32)$",
        description="``format: gguf`` or ``transformers``: the weights' precision in the converted folder (default ``int4``).",
    )
    target: str | None = Field(
        default=None,
        pattern=r"^(cpu|cuda|directml|webgpu)$",
        description="``format: gguf`` or ``transformers``: the backend the converted graph is made for (default ``cpu``; the builder lays operators out per backend).",
    )

    @model_validator(mode="after")
    def _detected_format(self) -> ModelSource:
        named = (self.member or self.source).lower()
        if "format" not in self.model_fields_set and named.endswith(".gguf"):
            self.format = "gguf"
        if not self.converted and (self.precision or self.target):
            raise ValueError(
                "'precision' and 'target' apply to a model converted at build "
                "(format: gguf or transformers)"
            )
        return self

    @property
    def generative(self) -> bool:
        return self.format in ("genai", "gguf", "transformers")

    @property
    def converted(self) -> bool:
        """A source that the build converts to a genai folder first."""
        return self.format in ("gguf", "transformers")


class TensorSpec(Strict):
    """One model input or output. Omitted ``dtype``/``shape`` are read from the model."""

    name: TensorName = Field(min_length=1, description="Tensor name, exactly as in the ONNX graph.")
    dtype: DType | None = Field(
        default=None, description="Element type; checked against the model."
    )
    shape: list[Dim] | None = Field(
        default=None,
        description="Dimensions: integers for fixed sizes, names (``batch``) for symbolic ones, null for any. May be more specific than the model (a fixed size where the model is symbolic), never less.",
    )
    example: Any = Field(
        default=None,
        description="Inputs only: a value used by the build's smoke run instead of generated data (e.g. ``16000`` for a sample-rate input).",
    )
    description: str | None = Field(
        default=None, description="Free text shown by ``gpux inspect``."
    )
    batch_axis: int | Literal["none"] | None = Field(
        default=None,
        description="Outputs only: the axis that holds the items of a batch (0 for most models; 1 for a sequence-first ``[time, batch, classes]`` output), or ``none`` for an output shared by the whole batch. Default: the axis whose symbolic name is the inputs' batch dimension, else 0.",
    )

    @field_validator("batch_axis")
    @classmethod
    def _non_negative_axis(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and value < 0:
            raise ValueError("count the batch axis from the front: 0, 1, ...")
        return value


class ConvAlgoSearch(StrEnum):
    exhaustive = "exhaustive"
    heuristic = "heuristic"
    default = "default"


class CudaOptions(Strict):
    """Options of the CUDA backend."""

    conv_algo_search: ConvAlgoSearch = Field(
        default=ConvAlgoSearch.exhaustive,
        description="cuDNN convolution algorithm search: exhaustive (fastest kernels, slower first run), heuristic, or default.",
    )
    cuda_graphs: bool = Field(
        default=False,
        description="Capture the model in a CUDA graph and replay it (fixed input shapes, every node on CUDA). GPUX explains when a model does not qualify.",
    )


class TensorRTOptions(Strict):
    """Options of the TensorRT backend."""

    fp16: bool = Field(default=False, description="Let TensorRT use fp16 kernels.")
    engine_cache: bool = Field(
        default=True,
        description="Keep built engines in the store, keyed by model digest, GPU and TensorRT version.",
    )


class WebGPULayout(StrEnum):
    NCHW = "NCHW"
    NHWC = "NHWC"


class WebGPUOptions(Strict):
    """Options of the WebGPU backend."""

    preferred_layout: WebGPULayout = Field(
        default=WebGPULayout.NHWC,
        description="Tensor layout the WebGPU kernels prefer. NHWC is ONNX Runtime's default and measured 2x faster than NCHW for ResNet-50 on an H100.",
    )
    graph_capture: bool = Field(
        default=True,
        description="Record the model's GPU work once and replay it (ONNX Runtime's enableGraphCapture) when its shapes are fixed; checked at load against a plain run, and left off with the reason when it does not apply. Measured 14-17% faster at batch 1 on an H100.",
    )


class OpenVINOOptions(Strict):
    """Options of the OpenVINO backend."""

    device_type: str = Field(
        default="AUTO",
        pattern=r"^(AUTO|CPU|GPU|NPU)(\.[0-9]+)?(_FP16|_FP32)?$",
        description="OpenVINO device: AUTO, CPU, GPU, NPU (optionally GPU.1, GPU_FP16 ...).",
    )


class Runtime(Strict):
    """How the model is executed."""

    backend: Backend = Field(
        default=Backend.auto,
        description="Execution backend. ``auto`` picks the fastest one that really works on this machine.",
    )
    device: int = Field(default=0, ge=0, description="Device index for GPU backends.")
    gpus: (
        Literal["all"]
        | Annotated[int, Field(ge=1, le=64)]
        | list[Annotated[int, Field(ge=0)]]
        | None
    ) = Field(
        default=None,
        examples=["all", 2, [0, 1]],
        description="Instances on several devices, one session each, with batches sent to the least busy (as Triton's instance_group): ``all`` GPUs, a count (the first N GPUs; N copies on the CPU backend) or a list of device ids. ``gpux serve/run/bench --gpus`` overrides it. Default: one instance on ``device``.",
    )
    threads: int = Field(
        default=0,
        ge=0,
        description="CPU threads for operators (intra-op); 0 lets ONNX Runtime decide.",
    )

    @field_validator("gpus")
    @classmethod
    def _distinct_gpus(cls, value: object) -> object:
        if isinstance(value, list) and (not value or len(set(value)) != len(value)):
            raise ValueError("list each device id once: [0, 1]")
        return value

    graph_optimization: GraphOptimization = Field(
        default=GraphOptimization.all,
        description="ONNX Runtime graph optimisation level applied when the session is created.",
    )
    warmup: bool = Field(
        default=True,
        description="Run the model once at load so the first request does not pay for kernel compilation (gpux run skips it: it runs once anyway).",
    )
    cuda: CudaOptions = Field(default_factory=CudaOptions, description="CUDA options.")
    tensorrt: TensorRTOptions = Field(
        default_factory=TensorRTOptions, description="TensorRT options."
    )
    webgpu: WebGPUOptions = Field(default_factory=WebGPUOptions, description="WebGPU options.")
    openvino: OpenVINOOptions = Field(
        default_factory=OpenVINOOptions, description="OpenVINO options."
    )


class Serving(Strict):
    """Settings for ``gpux serve``."""

    host: str = Field(
        default="127.0.0.1",
        description="Kept for compatibility and not used: an image never decides where a server listens; pass ``gpux serve --host`` (default 127.0.0.1).",
    )
    port: int = Field(default=8080, ge=1, le=65535, description="TCP port.")
    max_batch_size: int = Field(
        default=1, ge=1, description="Largest batch formed by dynamic batching (1 disables it)."
    )
    max_batch_delay_ms: float = Field(
        default=0.0, ge=0, description="Longest time a request waits for batch-mates."
    )
    timeout: float = Field(default=30.0, gt=0, description="Per-request timeout in seconds.")
    max_queue: int = Field(default=256, ge=1, description="Requests waiting beyond this get 503.")
    preferred_batch_sizes: list[Annotated[int, Field(ge=1)]] | None = Field(
        default=None,
        examples=[[1, 4, 16, 32]],
        description="The batch sizes the model runs: a batch is padded up to the next one, and each is warmed up before the server is ready (as Triton's preferred_batch_size). Default: powers of two up to max_batch_size on GPU backends (where a new batch size is slow), none on the CPU. [] turns padding off.",
    )
    max_tokens: int | None = Field(
        default=None,
        ge=1,
        description="Generative models: most tokens one request to the OpenAI API may generate (its max_tokens); a request asking for more gets 400, one asking for none gets min(generation.max_new_tokens, this). Default: the model's context length.",
    )


class VariantStep(StrEnum):
    """One rewrite of the model; a variant applies its steps in order."""

    basic = "basic"
    extended = "extended"
    all = "all"
    fused = "fused"
    slim = "slim"
    fp16 = "fp16"
    int8 = "int8"
    int8_static = "int8-static"


PRECISION_STEPS = frozenset({VariantStep.fp16, VariantStep.int8, VariantStep.int8_static})
_VARIANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class AccuracyBounds(Strict):
    """Bounds a variant's outputs must keep against the fp32 image on the sample inputs.

    A bound left out (or ``null``) is not checked; ``min_cosine`` is 0.99 unless set."""

    min_cosine: float | None = Field(
        default=0.99,
        ge=-1,
        le=1,
        description="Lowest cosine similarity between an output of the variant and of the original (each model call's output flattened). 0.99 unless set; null turns it off.",
    )
    max_abs_error: float | None = Field(
        default=None, ge=0, description="Largest |variant - original| over every output value."
    )
    max_rel_error: float | None = Field(
        default=None,
        ge=0,
        description="Largest absolute error of an output divided by the largest |original| value of that output.",
    )
    min_top1_agreement: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Classifier outputs: the share of rows (0-1) whose top class is the original's.",
    )


class Variant(Strict):
    """One optimised copy of the image, stored as ``NAME:TAG-<name>``. A string is shorthand:
    ``fp16``, ``int8``, or steps joined by ``+`` (``fused+fp16``)."""

    name: str | None = Field(
        default=None,
        examples=["int8"],
        description="Tag suffix: the image is NAME:TAG-<name>. Default: the steps joined by '-'.",
    )
    steps: list[VariantStep] = Field(
        min_length=1,
        description="Rewrites applied in order: basic, extended, all (ONNX Runtime graph levels), fused (transformer fusion), slim (onnxslim), fp16, int8 (dynamic quantisation), int8-static (calibrated).",
    )
    keep_io_types: bool = Field(
        default=True, description="fp16: keep the model's inputs and outputs in fp32."
    )
    per_channel: bool = Field(
        default=True,
        description="int8, int8-static: one scale per output channel of each weight (ONNX Runtime's default is one per tensor, which loses more).",
    )
    reduce_range: bool = Field(
        default=False,
        description="int8, int8-static: 7-bit weights, for CPUs without VNNI where 8-bit products can saturate.",
    )
    model_type: str = Field(
        default="bert",
        pattern=r"^[a-z0-9_]+$",
        description="fused: the architecture onnxruntime.transformers.optimizer looks for (bert, gpt2, vit, ...).",
    )
    num_heads: int = Field(
        default=0, ge=0, description="fused: attention heads; 0 detects them from the graph."
    )
    hidden_size: int = Field(
        default=0, ge=0, description="fused: hidden size; 0 detects it from the graph."
    )
    calibration: str | None = Field(
        default=None,
        min_length=1,
        description="int8-static: a folder or .jsonl of inputs run through the pipeline to measure activation ranges (default: build.samples).",
    )
    accuracy: AccuracyBounds | None = Field(
        default=None,
        description="Bounds for this variant; the keys given here replace those of build.accuracy.",
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"steps": [step.strip() for step in value.split("+")]}
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Variant:
        if len(set(self.steps)) != len(self.steps):
            raise ValueError("a step is listed twice")
        precision = [step.value for step in self.steps if step in PRECISION_STEPS]
        if len(precision) > 1:
            raise ValueError(
                f"steps {' and '.join(precision)} both change the precision; "
                "declare them as separate variants"
            )
        if self.name is not None and not _VARIANT_NAME.match(self.name):
            raise ValueError(
                f"variant name {self.name!r} must be lowercase letters, digits and . _ - "
                "(it becomes part of the image tag)"
            )
        return self

    @property
    def suffix(self) -> str:
        """The tag suffix: ``name``, or the steps joined by '-'."""
        return self.name or "-".join(step.value for step in self.steps)


class BuildSettings(Strict):
    """What ``gpux build`` makes besides the image itself: optimised variants, each checked
    against the original on sample inputs."""

    optimize: list[Variant] = Field(
        default=[],
        examples=[["fp16", "int8"]],
        description="Variants to build after the image, each stored as NAME:TAG-<variant>.",
    )
    samples: str | None = Field(
        default=None,
        min_length=1,
        examples=["./samples"],
        description="A folder or .jsonl of real inputs, run through the pipeline, on which each variant is compared with the original (default: generated inputs, weaker evidence).",
    )
    accuracy: AccuracyBounds = Field(
        default_factory=AccuracyBounds,
        description="Bounds every variant must keep; a variant that misses one fails the build and is not stored.",
    )

    @field_validator("optimize")
    @classmethod
    def _unique_names(cls, variants: list[Variant]) -> list[Variant]:
        suffixes = [variant.suffix for variant in variants]
        for suffix in suffixes:
            if suffixes.count(suffix) > 1:
                raise ValueError(f"two variants are named {suffix!r}; give one a 'name'")
        return variants


class GPUXfile(Strict):
    """A GPUX project: the model, its signature and how to run and serve it."""

    name: str | None = Field(
        default=None,
        examples=["sentiment"],
        json_schema_extra={"pattern": IMAGE_NAME.pattern},
        description="Image name used by ``gpux build`` when ``-t`` is not given (default: the folder name).",
    )
    version: str | None = Field(
        default=None,
        examples=["1.0"],
        description="Image tag used by ``gpux build`` when ``-t`` is not given (default: ``latest``).",
    )
    description: str | None = Field(
        default=None, description="Free text shown by ``gpux inspect``."
    )
    model: ModelSource = Field(
        description="The ONNX model. A bare string is shorthand for ``{source: ...}``."
    )
    inputs: list[TensorSpec] | None = Field(
        default=None,
        description="Model inputs; read from the model when absent, checked against it when given.",
    )
    outputs: list[TensorSpec] | None = Field(
        default=None,
        description="Model outputs; read from the model when absent, checked against it when given.",
    )
    runtime: Runtime = Field(default_factory=Runtime, description="Execution settings.")
    serving: Serving = Field(default_factory=Serving, description="HTTP serving settings.")
    labels: list[str] | str | None = Field(
        default=None,
        description="Class labels: an inline list, or a project-relative text file with one label per line.",
    )
    preprocess: list[PipelineInput] = Field(
        default=[],
        description="Inputs users send (text, images, audio) and how each becomes model tensors.",
    )
    postprocess: list[PipelineOutput] = Field(
        default=[],
        description="Named results computed from model outputs (softmax, top-k, pooling, segments ...).",
    )
    build: BuildSettings = Field(
        default_factory=BuildSettings,
        description="Optimised variants (fp16, int8, fused ...) built with the image, and the accuracy they must keep.",
    )
    handler: HandlerSpec | None = Field(
        default=None,
        description="Python code stored in the image for a step no declarative one covers: ``./handler.py`` or a package folder, with preprocess(items, context) and/or postprocess(outputs, context).",
    )

    generation: Generation | None = Field(
        default=None,
        description="Generative models (``model.format: genai``): defaults of each generation (max new tokens, sampling, stop strings, guidance).",
    )
    speech: Speech | None = Field(
        default=None,
        description="Speech-to-text models (``model.format: genai`` with a Whisper folder): the default language and task of each transcription.",
    )

    @field_validator("model", mode="before")
    @classmethod
    def _model_shorthand(cls, value: Any) -> Any:
        return {"source": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _generative_keys(self) -> GPUXfile:
        if not self.model.generative:
            for key in ("generation", "speech"):
                if getattr(self, key) is not None:
                    raise ValueError(
                        f"'{key}' applies to generative models: add 'format: genai' under "
                        "'model', with 'source' naming an onnxruntime-genai folder "
                        "(genai_config.json)"
                    )
            return self
        tensor_keys = {
            "inputs": self.inputs,
            "outputs": self.outputs,
            "preprocess": self.preprocess,
            "postprocess": self.postprocess,
            "labels": self.labels,
            "handler": self.handler,
            "build.optimize": self.build.optimize,
            "build.samples": self.build.samples,
        }
        given = [key for key, value in tensor_keys.items() if value]
        if given:
            raise ValueError(
                f"a generative model (model.format: genai) takes text, not tensors: remove "
                f"{', '.join(repr(key) for key in given)} (its tokenizer and chat template come "
                "from the model folder; 'generation' holds its settings)"
            )
        if self.generation is None:
            self.generation = Generation()
        return self

    _handler_shorthand = field_validator("handler", mode="before")(handler_shorthand)

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_as_text(cls, value: Any) -> Any:
        # `labels: [0, 90, 180, 270]` means the texts "0", "90", ...
        if isinstance(value, list):
            return [
                str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
                for v in value
            ]
        return value

    _check_name = field_validator("name")(check_image_name)
    _version_as_text = field_validator("version", mode="before")(version_as_text)
    _check_version = field_validator("version")(check_version)

    @field_validator("inputs", "outputs")
    @classmethod
    def _unique_tensor_names(cls, specs: list[TensorSpec] | None) -> list[TensorSpec] | None:
        names = [spec.name for spec in specs or []]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"tensor {name!r} is listed twice")
        return specs


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a GPUXfile, for editors (YAML language servers) and docs."""
    schema = GPUXfile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://gpux.dev/schema/gpuxfile-v1.json"
    # Numbers in an inline labels list are read as text (`labels: [0, 90, 180, 270]`).
    schema["properties"]["labels"]["anyOf"][0]["items"] = {
        "anyOf": [{"type": "string"}, {"type": "number"}]
    }
    # The shorthand `model: ./model.onnx` is valid input even though the model stores an object.
    schema["properties"]["model"] = {
        "anyOf": [{"type": "string"}, {"$ref": "#/$defs/ModelSource"}],
        "description": schema["properties"]["model"].get("description", ""),
    }
    # `handler: ./handler.py` is shorthand for `{path: ./handler.py}`.
    schema["properties"]["handler"]["anyOf"].insert(0, {"type": "string"})
    # `version: 1.0` is a YAML number; GPUX reads it as the text "1.0", so editors must accept it.
    schema["properties"]["version"]["anyOf"].insert(1, {"type": "number"})
    # A variant may be written as its steps: `fp16`, `fused+fp16`.
    steps = "|".join(re.escape(step.value) for step in VariantStep)
    schema["$defs"]["BuildSettings"]["properties"]["optimize"]["items"] = {
        "anyOf": [
            {"type": "string", "pattern": rf"^({steps})(\+({steps}))*$"},
            {"$ref": "#/$defs/Variant"},
        ]
    }
    return schema
