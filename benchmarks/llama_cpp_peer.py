"""llama.cpp's side of benchmarks/generate.py, run in .venv-llama (``make bench-peers``).

    .venv-llama/bin/python benchmarks/llama_cpp_peer.py MODEL.gguf PROMPT_FILE TOKENS ROUNDS

Loads the GGUF once with llama-cpp-python (the engine under Ollama), then per round: evaluates
the prompt and decodes ``TOKENS`` tokens greedily, turning each into text as a streaming client
would. Prints one JSON object: the version, the prompt's token count and, per round, the time to
the first token and the decode rate (tokens after the first over the time after the first).
Imports nothing of GPUX: this environment has only llama-cpp-python.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def main() -> None:
    import llama_cpp

    gguf, prompt_file, tokens, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    prompt = Path(prompt_file).read_text("utf-8")
    threads = os.cpu_count() or 1  # llama-cpp-python's default is half the cores; genai uses all
    model = llama_cpp.Llama(
        model_path=gguf,
        n_ctx=2048,
        n_threads=threads,
        # llama-cpp-python 0.3.36 built here (make bench-peers) dies with a segmentation fault in
        # llama_decode on any batch of more than one token; one token per micro-batch works. The
        # prompt then runs token by token: llama.cpp's time to first token is not comparable,
        # its decode rate (one token per step anyway) is.
        n_ubatch=1,
        verbose=False,
    )
    ids = model.tokenize(prompt.encode(), add_bos=False, special=True)
    results = []
    for _ in range(rounds + 1):  # the first round warms up
        started = time.perf_counter()
        first = None
        count = 0
        text = b""
        # generate() never stops by itself (no end-of-sequence check): the run is exactly `tokens`.
        for token in model.generate(ids, top_k=1, temp=0.0, reset=True):
            text += model.detokenize([token])
            count += 1
            if first is None:
                first = time.perf_counter()
            if count >= tokens:
                break
        ended = time.perf_counter()
        assert first is not None
        results.append(
            {
                "time_to_first_token": first - started,
                "tokens_per_second": (count - 1) / (ended - first),
                "tokens": count,
            }
        )
    print(
        json.dumps(
            {
                "version": llama_cpp.__version__,
                "threads": threads,
                "prompt_tokens": len(ids),
                "rounds": results[1:],
                "text": text.decode("utf-8", "replace"),
            }
        )
    )


if __name__ == "__main__":
    main()
