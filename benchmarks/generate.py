"""Text generation speed of GPUX against a bare onnxruntime-genai loop, against llama.cpp, and
served, measured in one run on one machine.

* time to first token (prompt included) and decode tokens/s of one greedy generation:
  - a bare onnxruntime-genai loop on the same folder (the baseline: what a user writes by hand,
    text decoded token by token as a streaming client needs);
  - GPUX's Python API (``GenerativeModel.generate(..., stream=True)``, what ``gpux run`` calls);
  - the OpenAI API of a real ``gpux serve`` on 127.0.0.1 (``/v1/completions``, streamed);
  - llama.cpp through llama-cpp-python (``make bench-peers``: .venv-llama) on the GGUF the
    folder was converted from, when there is one (SmolLM2-135M-Instruct: llama.cpp runs its
    Q4_1 file, GPUX the int4 folder tools/smollm2.py made of it: 4-bit blocks of 32 both);
* aggregate tokens/s of ``--concurrency`` streamed chats at once through ``gpux serve``, against
  the same chats in process one after another, interleaved (round-robin over lone GPUX streams,
  the server's policy before it batched), batched (the rows of one genai batch read in turn,
  the policy of gpux/serve/generation.py without HTTP), and one bare static genai batch.

Rounds alternate between the rows so that a busy moment on a shared machine hits every row
alike; each figure is the median over rounds, and the CPU that other processes used meanwhile is
printed beside it (benchmarks/machine_load.py).

    uv run python benchmarks/generate.py [--model FOLDER] [--gguf FILE] [--tokens 128]
        [--rounds 3] [--concurrency 16] [--chat-tokens 48] [--skip-serve] [--skip-llama]
        [--json out.json]

The model: ``--model`` (a genai folder); else SmolLM2-135M-Instruct int4 when tools/smollm2.py
has converted it on this machine; else a random Llama of SmolLM2-135M's sizes made by
tools/make_tiny_llm.py (fp32, 30 layers of 576, 9 heads without grouped KV heads; slower per
token than the real int4 model, so only the ratios carry over).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.machine_load import OthersMeter
from benchmarks.serve import free_port

ROOT = Path(__file__).resolve().parent.parent
LLAMA_PYTHON = ROOT / ".venv-llama" / "bin" / "python"
PROMPT = "Write a long story about a robot who learns to paint, with many details."
CHATS = [
    "Tell me about the ocean.",
    "How do airplanes fly?",
    "Write a poem about autumn leaves.",
    "What is a black hole?",
    "Give me three tips to sleep better.",
    "Explain photosynthesis to a child.",
    "Why is the sky blue?",
    "Describe a busy market in the morning.",
    "What makes a good friend?",
    "How does a computer store numbers?",
    "Write a short story about a lost cat.",
    "What are the planets of the solar system?",
    "How do bees make honey?",
    "Describe your ideal weekend.",
    "What is the water cycle?",
    "Explain how a bicycle works.",
]


@dataclass
class Run:
    """One generation: seconds to the first token, decode tokens/s, tokens."""

    time_to_first_token: float
    tokens_per_second: float
    tokens: int


@dataclass
class Row:
    label: str
    runs: list[Run] = field(default_factory=list)
    others: list[float] = field(default_factory=list)  # cores used by other processes per run
    note: str = ""

    def median(self, attribute: str) -> float:
        """Over the runs that timed it (NaN: a stream with no text); NaN when none did."""
        values = [getattr(run, attribute) for run in self.runs]
        timed = [value for value in values if not math.isnan(value)]
        return statistics.median(timed) if timed else math.nan


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the model ---------------------------------------------------------------------------------


def resolve_model(given: Path | None, gguf: Path | None) -> tuple[Path, Path | None, str]:
    """(genai folder, the GGUF it was made from or None, a description)."""
    from tools import smollm2, zoo

    if given is not None:
        return given, gguf, f"{given.name} (--model)"
    real = smollm2.folder()
    if (real / "genai_config.json").is_file():
        source = gguf or zoo.fetch("smollm2-gguf")
        return real, source, "SmolLM2-135M-Instruct int4 (tools/smollm2.py, from its Q4_1 GGUF)"
    from tools.make_tiny_llm import Shape, make_tiny_llm

    folder = zoo.cache_dir() / "random-llama-smollm2-shape"
    if not (folder / "genai_config.json").is_file():
        progress(f"making a random Llama of SmolLM2-135M's sizes in {folder} (about a minute)")
        shape = Shape(hidden=576, heads=9, intermediate=1536, layers=30, context=2048, vocab=49152)
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        make_tiny_llm(partial, shape=shape)
        partial.rename(folder)
    return folder, gguf, "a random Llama of SmolLM2-135M's sizes, fp32 (tools/make_tiny_llm.py)"


# --- single stream -----------------------------------------------------------------------------


def bare_loop(og: Any, model: Any, tokenizer: Any, prompt: str, tokens: int) -> Run:
    """What a user writes with onnxruntime-genai alone: encode, generate, decode each token."""
    started = time.perf_counter()
    ids = tokenizer.encode(prompt)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + tokens, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    stream = tokenizer.create_stream()
    first = None
    count = 0
    while not generator.is_done():
        generator.generate_next_token()
        stream.decode(int(generator.get_next_tokens()[0]))
        count += 1
        if first is None:
            first = time.perf_counter()
    ended = time.perf_counter()
    assert first is not None
    return Run(first - started, (count - 1) / (ended - first), count)


def gpux_api(model: Any, prompt: str, tokens: int) -> Run:
    """GPUX's Python API as ``gpux run`` streams it, timed by the stream's own figures: a
    random model's first tokens may decode to no text, so the first text piece can come late."""
    stream = model.generate(prompt, stream=True, max_new_tokens=tokens)
    for _piece in stream:
        pass
    completion = stream.completion
    assert completion is not None and completion.time_to_first_token is not None
    count = completion.completion_tokens
    decoding = completion.seconds - completion.time_to_first_token
    return Run(completion.time_to_first_token, (count - 1) / decoding, count)


def served_stream(url: str, body: dict[str, Any], client: Any) -> Run:
    """One streamed request to the OpenAI API; tokens from its usage chunk."""
    started = time.perf_counter()
    first = None
    usage = None
    with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            choices = chunk.get("choices") or []
            if first is None and choices and (choices[0].get("text") or choices[0].get("delta")):
                first = time.perf_counter()
    ended = time.perf_counter()
    assert usage is not None, "the stream had no usage chunk"
    count = int(usage["completion_tokens"])
    if first is None or first >= ended:  # a random model's tokens may decode to no text
        return Run(math.nan, math.nan, count)
    return Run(first - started, (count - 1) / (ended - first), count)


def llama_cpp_runs(gguf: Path, prompt: str, tokens: int, rounds: int) -> tuple[list[Run], str]:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as file:
        file.write(prompt)
    try:
        result = subprocess.run(
            [
                *(str(LLAMA_PYTHON), str(ROOT / "benchmarks" / "llama_cpp_peer.py"), str(gguf)),
                *(file.name, str(tokens), str(rounds)),
            ],
            capture_output=True,
            text=True,
            timeout=900,
        )
    finally:
        os.unlink(file.name)
    if result.returncode != 0:
        raise RuntimeError(f"llama_cpp_peer.py failed:\n{result.stderr[-2000:]}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    runs = [
        Run(r["time_to_first_token"], r["tokens_per_second"], r["tokens"]) for r in report["rounds"]
    ]
    note = f"llama-cpp-python {report['version']}, {report['threads']} threads, prompt {report['prompt_tokens']} tokens"
    return runs, note


# --- the server --------------------------------------------------------------------------------


@contextlib.contextmanager
def gpux_serve(folder: Path, home: Path, backend: str = "cpu") -> Iterator[str]:
    """A real ``gpux serve`` of an image built from ``folder``; yields its base URL."""
    import httpx

    project = home / "project"
    shutil.copytree(folder, project / "model")
    (project / "GPUXfile").write_text("name: llm\nmodel:\n  source: ./model\n  format: genai\n")
    env = {**os.environ, "GPUX_HOME": str(home)}
    subprocess.run(
        [sys.executable, "-m", "gpux", "build", str(project), "--backend", backend, "-q"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    port = free_port()
    log = (home / "serve.log").open("wb")
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "gpux", "serve", "llm", "--backend", backend),
            *("--port", str(port), "--max-tokens", "4096"),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"gpux serve did not start:\n{(home / 'serve.log').read_text()[-3000:]}"
                )
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/v2/health/ready", timeout=2).status_code == 200:
                    break
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


# --- concurrency -------------------------------------------------------------------------------


def messages(index: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": CHATS[index % len(CHATS)]}]


def chats_in_threads(url: str, indices: list[int], tokens: int) -> tuple[int, float]:
    """Streamed chats ``indices`` at once, a thread each, in this process; (tokens generated,
    this process's CPU seconds)."""
    import httpx

    totals: list[int] = []
    errors: list[BaseException] = []
    cpu = time.process_time()

    def one(index: int) -> None:
        body = {
            "model": "llm",
            "messages": messages(index),
            "max_tokens": tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        try:
            with httpx.Client(timeout=600) as client:
                totals.append(served_stream(url + "/v1/chat/completions", body, client).tokens)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in indices]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return sum(totals), time.process_time() - cpu


def concurrent_served(
    url: str, count: int, tokens: int, clients: Any, processes: int
) -> tuple[int, float, float]:
    """``count`` streamed chats at once, spread over ``processes`` client processes of the
    pool ``clients`` (one Python process reading 32 streams is GIL-bound: on the H100's host
    it, not the server, set the pace); (tokens generated, seconds, the clients' CPU seconds)."""
    shares = [list(range(start, count, processes)) for start in range(processes)]
    started = time.perf_counter()
    futures = [clients.submit(chats_in_threads, url, share, tokens) for share in shares if share]
    results = [future.result() for future in futures]
    seconds = time.perf_counter() - started
    return sum(r[0] for r in results), seconds, sum(r[1] for r in results)


def sequential_in_process(model: Any, count: int, tokens: int) -> tuple[int, float]:
    started = time.perf_counter()
    total = 0
    for index in range(count):
        total += model.chat(messages(index), max_new_tokens=tokens).completion_tokens
    return total, time.perf_counter() - started


def interleaved_in_process(model: Any, count: int, tokens: int) -> tuple[int, float]:
    """Every chat's stream advanced one piece in turn, as the server's generation thread does."""
    started = time.perf_counter()
    streams = [model.chat(messages(i), stream=True, max_new_tokens=tokens) for i in range(count)]
    return read_in_turn(streams), time.perf_counter() - started


def read_in_turn(streams: list[Any]) -> int:
    """Every stream advanced one piece in turn until all end: the tokens they generated."""
    active = list(streams)
    while active:
        for stream in list(active):
            if next(stream, None) is None:
                active.remove(stream)
    return sum(stream.completion.completion_tokens for stream in streams)


def batched_in_process(model: Any, count: int, tokens: int) -> tuple[int, float]:
    """The chats as the rows of one batch, each stream read one piece in turn: the server's
    policy (gpux/serve/generation.py, gpux/runtime/generative_batch.py) without HTTP."""
    from gpux.runtime.generative_batch import batches, generation_request, start_batch

    started = time.perf_counter()
    requests = [
        generation_request(
            model, model.encode(model.chat_prompt(messages(i))), max_new_tokens=tokens
        )
        for i in range(count)
    ]
    streams = [stream for group in batches(requests, count) for stream in start_batch(group)]
    return read_in_turn(streams), time.perf_counter() - started


def static_batch(
    og: Any, model: Any, tokenizer: Any, prompts: list[str], tokens: int
) -> tuple[int, float]:
    """The same chats as one onnxruntime-genai batch (prompts padded, every row decoded until
    the longest is done): the ceiling of batching, which no server answer could wait for."""
    started = time.perf_counter()
    ids = tokenizer.encode_batch(prompts)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=ids.shape()[1] + tokens, batch_size=len(prompts))
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    steps = 0
    while not generator.is_done():
        generator.generate_next_token()
        steps += 1
    return steps * len(prompts), time.perf_counter() - started


# --- report ------------------------------------------------------------------------------------


def measured(meter: OthersMeter, action: Callable[[], Any]) -> tuple[Any, float]:
    meter.start()
    result = action()
    return result, meter.stop()


def table(rows: list[Row], baseline: Row) -> list[str]:
    base_ttft, base_rate = (
        baseline.median("time_to_first_token"),
        baseline.median("tokens_per_second"),
    )
    lines = [
        f"{'':<36} {'first token':>12} {'decode':>11} {'ratio':>7} {'ratio':>7} {'tokens':>7} {'others':>7}",
        f"{'':<36} {'ms':>12} {'tokens/s':>11} {'TTFT':>7} {'tok/s':>7} {'':>7} {'cores':>7}",
    ]
    for row in rows:
        if not row.runs:
            lines.append(f"{row.label:<36} {'skipped: ' + row.note}")
            continue
        ttft, rate = row.median("time_to_first_token"), row.median("tokens_per_second")
        if math.isnan(ttft) or math.isnan(rate):
            lines.append(f"{row.label:<36} {'no text streamed (random weights?): not timed'}")
            continue
        # TTFT ratio: baseline time / ours (above 1: we are faster), like the rate ratio.
        lines.append(
            f"{row.label:<36} {ttft * 1e3:>12.1f} {rate:>11.1f} {base_ttft / ttft:>7.3f} "
            f"{rate / base_rate:>7.3f} {row.runs[0].tokens:>7} {statistics.median(row.others):>7.2f}"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="an onnxruntime-genai folder")
    parser.add_argument("--gguf", type=Path, help="the GGUF file --model was made from (llama.cpp)")
    parser.add_argument("--tokens", type=int, default=128, help="tokens per single-stream run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--chat-tokens", type=int, default=48, help="tokens per concurrent chat")
    parser.add_argument("--backend", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--skip-serve", action="store_true")
    parser.add_argument(
        "--client-processes",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="processes the concurrent served chats are spread over",
    )
    parser.add_argument("--skip-llama", action="store_true")
    parser.add_argument("--json", type=Path, help="write every run here")
    args = parser.parse_args()

    import onnxruntime_genai as og

    from gpux.runtime.generative import GenerativeModel

    folder, gguf, description = resolve_model(args.model, args.gguf)
    progress(f"model: {description}: {folder}")
    ours = GenerativeModel(folder, args.backend)
    prompt = (
        ours.chat_prompt([{"role": "user", "content": PROMPT}]) if ours.chat_template else PROMPT
    )
    settings = og.Config(str(folder))
    settings.clear_providers()
    if args.backend == "cuda":
        settings.append_provider("cuda")
    bare_model = og.Model(settings)
    bare_tokenizer = og.Tokenizer(bare_model)
    meter = OthersMeter()

    bare = Row("bare onnxruntime-genai loop")
    api = Row("GPUX Python API (gpux run)")
    served = Row("GPUX OpenAI API (gpux serve, HTTP)")
    llama = Row("llama.cpp (llama-cpp-python)")
    progress("warming up")
    bare_loop(og, bare_model, bare_tokenizer, prompt, 8)
    gpux_api(ours, prompt, 8)
    tokens = args.tokens
    with contextlib.ExitStack() as stack:
        url = None
        client = None
        if not args.skip_serve:
            import httpx

            home = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="gpux-bench-generate-"))
            )
            progress("building the image and starting gpux serve on 127.0.0.1")
            url = stack.enter_context(gpux_serve(folder, home, args.backend))
            client = stack.enter_context(httpx.Client(timeout=600))
            body = {"model": "llm", "prompt": prompt, "max_tokens": tokens, "temperature": 0}
            stream_body = {**body, "stream": True, "stream_options": {"include_usage": True}}
            served_stream(url + "/v1/completions", {**stream_body, "max_tokens": 8}, client)
        else:
            served.note = "--skip-serve"
        for round_index in range(args.rounds):
            progress(f"single stream, round {round_index + 1}/{args.rounds}")
            steps: list[tuple[Row, Callable[[], Run]]] = [
                (bare, lambda: bare_loop(og, bare_model, bare_tokenizer, prompt, tokens)),
                (api, lambda: gpux_api(ours, prompt, tokens)),
            ]
            if url is not None:
                steps.append(
                    (served, lambda: served_stream(url + "/v1/completions", stream_body, client))
                )
            if round_index % 2:
                steps.reverse()
            for row, action in steps:
                run, others = measured(meter, action)
                row.runs.append(run)
                row.others.append(others)
        counts = {
            row.label: {run.tokens for run in row.runs} for row in (bare, api, served) if row.runs
        }
        if len({frozenset(c) for c in counts.values()}) > 1:
            progress(f"warning: the rows generated different token counts: {counts}")

        if args.skip_llama:
            llama.note = "--skip-llama"
        elif gguf is None:
            llama.note = "no GGUF of these weights (a random model; give --gguf)"
        elif not LLAMA_PYTHON.is_file():
            llama.note = f"{LLAMA_PYTHON} missing: run make bench-peers"
        else:
            progress(f"llama.cpp on {gguf.name}, {args.rounds} rounds")
            meter.start()
            llama.runs, llama.note = llama_cpp_runs(gguf, prompt, tokens, args.rounds)
            llama.others = [meter.stop()]

        concurrent: dict[str, dict[str, float]] = {}
        n, chat_tokens = args.concurrency, args.chat_tokens
        progress(f"{n} chats of up to {chat_tokens} tokens: in process, one after another")
        (total, seconds), others = measured(
            meter, lambda: sequential_in_process(ours, n, chat_tokens)
        )
        concurrent["in process, sequential"] = {
            "tokens": total,
            "seconds": seconds,
            "others": others,
        }
        progress(f"{n} chats: in process, interleaved")
        (total, seconds), others = measured(
            meter, lambda: interleaved_in_process(ours, n, chat_tokens)
        )
        concurrent["in process, interleaved"] = {
            "tokens": total,
            "seconds": seconds,
            "others": others,
        }
        progress(f"{n} chats: in process, batched")
        (total, seconds), others = measured(meter, lambda: batched_in_process(ours, n, chat_tokens))
        concurrent["in process, batched"] = {
            "tokens": total,
            "seconds": seconds,
            "others": others,
        }
        progress(f"{n} chats: bare onnxruntime-genai, one static batch")
        prompts = [ours.chat_prompt(messages(i)) for i in range(n)]
        (total, seconds), others = measured(
            meter, lambda: static_batch(og, bare_model, bare_tokenizer, prompts, chat_tokens)
        )
        concurrent["bare genai, one static batch"] = {
            "tokens": total,
            "seconds": seconds,
            "others": others,
        }
        if url is not None:
            progress(f"{n} chats: streamed through gpux serve at once")
            processes = max(1, min(args.client_processes, n))
            spawn = multiprocessing.get_context("spawn")  # no fork of a process holding genai
            with ProcessPoolExecutor(processes, mp_context=spawn) as clients:
                list(clients.map(abs, range(4 * processes)))  # processes started before the clock
                (total, seconds, client_cpu), others = measured(
                    meter, lambda: concurrent_served(url, n, chat_tokens, clients, processes)
                )
            concurrent[f"gpux serve, {n} concurrent streams"] = {
                "tokens": total,
                "seconds": seconds,
                "others": others,
                "client_processes": processes,
                "client_cpu_s": client_cpu,
            }

    print()
    print(f"model: {description}")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, onnxruntime-genai {og.__version__}"
    )
    print(
        f"single stream: greedy, up to {tokens} new tokens, median of {args.rounds} rounds; "
        "ratios against the bare loop (above 1: faster)"
    )
    for line in table([bare, api, served, llama], bare):
        print(line)
    if llama.runs:
        print(f"  llama.cpp: {llama.note}")
    print()
    sequential = concurrent["in process, sequential"]
    print(
        f"{n} chats of up to {chat_tokens} tokens, aggregate tokens/s (ratio against in-process sequential)"
    )
    for label, figures in concurrent.items():
        rate = figures["tokens"] / figures["seconds"]
        base = sequential["tokens"] / sequential["seconds"]
        clients = (
            f", {figures['client_processes']} client processes used {figures['client_cpu_s']:.1f} CPU s"
            if "client_cpu_s" in figures
            else ""
        )
        print(
            f"  {label:<36} {rate:>8.1f} tokens/s  {rate / base:>6.3f}  "
            f"({int(figures['tokens'])} tokens in {figures['seconds']:.1f} s, others {figures['others']:.2f} cores{clients})"
        )
    if args.json:
        report = {
            "model": description,
            "folder": str(folder),
            "genai": og.__version__,
            "tokens": tokens,
            "single_stream": {
                row.label: {
                    "runs": [vars(run) for run in row.runs],
                    "others": row.others,
                    "note": row.note,
                }
                for row in (bare, api, served, llama)
            },
            "concurrent": concurrent,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
