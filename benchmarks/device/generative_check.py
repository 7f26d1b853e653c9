"""On the lent GPU machine (after benchmarks/device/setup.sh and onnxruntime-genai-cuda): the
generative engine on CUDA. Prints, as JSON, what ONNX Runtime's placement log proves for the tiny
Llama on the CUDA provider, whether greedy tokens on CUDA equal those on the CPU, and the decode
rate of GPUX's stream against a bare onnxruntime-genai loop on a larger random Llama.

    python3 benchmarks/device/generative_check.py OUT_DIR
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import onnxruntime_genai as og

from gpux.runtime.generative import Completion, GenerativeModel
from tools.make_tiny_llm import Shape, make_tiny_llm


def greedy(model: GenerativeModel, prompt: str, tokens: int) -> list[int]:
    result = model.generate(prompt, max_new_tokens=tokens)
    assert isinstance(result, Completion)
    return result.token_ids


def rates(model: GenerativeModel, tokens: int, rounds: int) -> dict[str, float]:
    """Tokens/s (prompt included) of a bare genai loop and of GPUX's stream, alternated, on one
    genai model; the random model never emits its end token, so both make ``tokens``."""
    genai, tokenizer = model._model, model.tokenizer
    ids = model.encode("Hello, world!")

    def bare() -> float:
        started = time.perf_counter()
        params = og.GeneratorParams(genai)
        params.set_search_options(max_length=len(ids) + tokens, do_sample=False)
        generator = og.Generator(genai, params)
        generator.append_tokens(ids)
        stream = tokenizer.create_stream()
        count = 0
        while not generator.is_done():
            generator.generate_next_token()
            stream.decode(int(generator.get_next_tokens()[0]))
            count += 1
        return count / (time.perf_counter() - started)

    def ours() -> float:
        started = time.perf_counter()
        for _ in model.generate("Hello, world!", max_new_tokens=tokens, stream=True):
            pass
        return tokens / (time.perf_counter() - started)

    bare(), ours()
    bares, gpuxs = [], []
    for _ in range(rounds):
        bares.append(bare())
        gpuxs.append(ours())
    b, g = statistics.median(bares), statistics.median(gpuxs)
    return {"bare_tok_s": round(b, 1), "gpux_tok_s": round(g, 1), "ratio": round(g / b, 3)}


def main() -> None:
    out = Path(sys.argv[1])
    tiny = make_tiny_llm(out / "tiny")
    report: dict[str, object] = {"genai": og.__version__, "cuda": og.is_cuda_available()}
    cuda = GenerativeModel(tiny, "cuda", prove_placement=True)
    report["placement"] = cuda.placement.to_json()
    cpu = GenerativeModel(tiny, "cpu")
    prompts = ["Hello, world!", "The answer is", "{"]
    report["greedy_equal_cpu_cuda"] = {
        p: greedy(cuda, p, 40) == greedy(cpu, p, 40) for p in prompts
    }
    mid = make_tiny_llm(
        out / "mid", shape=Shape(hidden=576, heads=9, intermediate=1536, layers=8, context=1024)
    )
    report["mid_cuda"] = rates(GenerativeModel(mid, "cuda"), 200, 5)
    report["mid_cpu"] = rates(GenerativeModel(mid, "cpu"), 100, 3)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
