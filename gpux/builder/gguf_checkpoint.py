"""A GGUF file as a Hugging Face transformers checkpoint folder, for onnxruntime-genai's builder.

    python gpux/builder/gguf_checkpoint.py MODEL.gguf OUT_DIR

Why this step: onnxruntime-genai's builder reads GGUF files of float16/float32 weights only (it
copies the tensors' raw bytes, so a Q4_1 file, the usual form of a small model, fails), and for a
GGUF file it still asks the Hub for the model's config and tokenizer (``-m NAME``), which an
offline build cannot reach. transformers reads every GGUF quantisation the ``gguf`` package knows
(it dequantises to float32) together with the config and tokenizer the file's metadata describes;
this module writes them out as a checkpoint folder that the builder takes with ``-i FOLDER``.

``save_pretrained`` refuses a model loaded from GGUF ("quantized with gguf and is not
serializable"), though its weights are plain float32 tensors by then: they are written with
safetensors directly, the tied output head left out as transformers itself does.

Runs as a script in the converter's Python (gpux/builder/convert.py starts it), which may be
another environment than GPUX's: it imports nothing of GPUX.
"""

from __future__ import annotations

import sys
from pathlib import Path


def write_checkpoint(gguf: Path, out: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    out.mkdir(parents=True, exist_ok=True)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    weights = {
        key: value.detach().contiguous()
        for key, value in model.state_dict().items()
        if not (tied and key == "lm_head.weight")  # the same tensor as the embedding
    }
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights written are float32: nothing to undo
    # The builder picks its model class from ``architectures``, which a GGUF load leaves unset.
    config.architectures = [type(model).__name__]
    config.save_pretrained(out)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(out)
    tokenizer.save_pretrained(out)


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: python gguf_checkpoint.py MODEL.gguf OUT_DIR")
    write_checkpoint(Path(sys.argv[1]), Path(sys.argv[2]))


if __name__ == "__main__":
    main()
