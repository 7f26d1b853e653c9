"""``gpux run`` on a generative image: the answer is written to stdout piece by piece as the
model decodes it; ``--json`` prints one JSON object instead, with token counts, time to first
token and tokens/s; ``--interactive`` is a chat that keeps its history (with ``--json``, one
line of JSON per turn).

A model whose folder has a chat template gets the input as a user's message (``--system`` adds a
system message first); ``--no-chat`` (or a folder without a template) continues the text as is.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any

from gpux.cli.console import print_json
from gpux.errors import UsageError
from gpux.runtime.generative import Completion, GenerativeModel, Stream


@dataclass
class GenerateOptions:
    """What the command line asked for; None keeps the image's ``generation:`` default."""

    as_json: bool = False
    chat: bool = True
    system: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


def run_generative(
    model: GenerativeModel, inputs: list[str], interactive: bool, options: GenerateOptions
) -> None:
    chat = options.chat and model.chat_template is not None
    if interactive:
        chat_loop(model, options, chat)
        return
    if len(inputs) > 1:
        raise UsageError(
            "a generative model takes one prompt per run",
            "give one --input, or use --interactive for a conversation",
        )
    # `echo "text" | gpux run llm`: the newline echo adds is not part of the prompt.
    prompt = inputs[0] if inputs else sys.stdin.read().removesuffix("\n")
    if prompt.startswith("@"):
        prompt = _read_prompt_file(prompt[1:])
    messages = [*_first_messages(options), {"role": "user", "content": prompt}]
    completion = _answer(model, messages if chat else prompt, options)
    if options.as_json:
        print_json(completion.to_json())


def chat_loop(model: GenerativeModel, options: GenerateOptions, chat: bool) -> None:
    """One user message per line; the answers join the history the next turn reads."""
    tty = sys.stdin is not None and sys.stdin.isatty()
    if tty:
        sys.stderr.write("gpux: one message per line; Ctrl-D to quit\n")
    history = _first_messages(options)
    while True:
        if tty:
            sys.stderr.write(">>> ")
            sys.stderr.flush()
        line = sys.stdin.readline()
        if not line:
            break
        text = line.rstrip("\n")
        if not text.strip():
            continue
        if not chat:
            completion = _answer(model, text, options)
        else:
            history.append({"role": "user", "content": text})
            completion = _answer(model, history, options)
            history.append({"role": "assistant", "content": completion.text})
        if options.as_json:  # one line per turn (JSONL), as pipelines print many results
            sys.stdout.write(json.dumps(completion.to_json()) + "\n")
            sys.stdout.flush()


def _answer(
    model: GenerativeModel, prompt: str | list[dict[str, str]], options: GenerateOptions
) -> Completion:
    """Generate, writing pieces to stdout as they come unless the output is JSON."""
    if isinstance(prompt, str):
        stream = model.generate(prompt, stream=True, **options.overrides)
    else:
        stream = model.chat(prompt, stream=True, **options.overrides)
    assert isinstance(stream, Stream)
    try:
        for piece in stream:
            if not options.as_json:
                sys.stdout.write(piece)
                sys.stdout.flush()
    finally:
        stream.close()
    if not options.as_json:
        sys.stdout.write("\n")
        sys.stdout.flush()
    assert stream.completion is not None
    return stream.completion


def _first_messages(options: GenerateOptions) -> list[dict[str, str]]:
    return [{"role": "system", "content": options.system}] if options.system else []


def _read_prompt_file(name: str) -> str:
    from pathlib import Path

    path = Path(name).expanduser()
    try:
        return path.read_text("utf-8")
    except OSError as exc:
        raise UsageError(
            f"cannot read the prompt file '{name}': {exc.strerror}",
            "give the prompt as text, or @FILE naming a readable text file",
        ) from exc
