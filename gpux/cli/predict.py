"""``gpux run`` for images with a pipeline: inputs the way people type them.

* ``--input "I love this"`` / ``--input photo.jpg`` / ``--input clip.wav``: a bare value for the
  model's only pipeline input (a file path for images and audio);
* several ``--input``, a folder, a ``.jsonl`` file (one item per line) or a ``.txt`` file (text
  inputs: one sentence per line): many items, run in batches, streamed out as JSONL;
* ``name=value`` for models with several inputs (``name=@file`` reads a file);
* stdin: text, one item per line; for images and audio, the file's bytes.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gpux import json_text
from gpux.api import Model
from gpux.errors import GPUXError, InputError, NotFoundError, UsageError
from gpux.pipeline.inputs import MEDIA_SUFFIXES as SUFFIXES
from gpux.pipeline.inputs import clip, loose_value, parse_value
from gpux.pipeline.outputs import result_to_json
from gpux.pipeline.runner import Pipeline

Item = tuple[str, dict[str, Any]]  # (what to call it in the output, the item)


def gather(pipeline: Pipeline, values: list[str]) -> tuple[list[Item], bool]:
    """Items from ``--input`` values; the flag says whether the user asked for one item."""
    names = pipeline.input_names
    named: dict[str, Any] = {}
    items: list[Item] = []
    for text in values:
        name, separator, rest = text.partition("=")
        if separator and name in names:
            if name in named:
                raise UsageError(f"input '{name}' is given twice", "pass each input once")
            named[name] = _value(pipeline, name, rest)
            continue
        jsonl = Path(text.removeprefix("@")).expanduser()
        if jsonl.suffix.lower() == ".jsonl" and jsonl.is_file():
            items.extend(_jsonl(pipeline, jsonl))  # items of any number of inputs
            continue
        if len(names) != 1:
            raise UsageError(
                f"--input '{_clip(text)}' does not name an input",
                f"write NAME=VALUE; the model takes: {', '.join(names)}",
            )
        items.extend(_expand(pipeline, names[0], text))
    if named:
        if items:
            raise UsageError("mix of named and bare --input values", "name every input: NAME=VALUE")
        return [("input", named)], True
    single = len(values) == 1 and len(items) == 1 and not _is_collection(values[0])
    return items, single


def from_stdin(pipeline: Pipeline) -> tuple[list[Item], bool]:
    names = pipeline.input_names
    if sys.stdin is None or sys.stdin.isatty():
        raise UsageError(
            "no inputs given",
            f"pass --input VALUE (the model takes: {', '.join(names)}), or pipe input on stdin",
        )
    kind = pipeline.kind(names[0]) if len(names) == 1 else "tensor"
    if kind in ("image", "audio"):
        data = sys.stdin.buffer.read()
        if not data:
            raise UsageError("no inputs given: stdin is empty", f"pipe a {kind} file")
        return [("stdin", {names[0]: data})], True
    text = sys.stdin.read()
    stripped = text.strip()
    if not stripped:
        raise UsageError("no inputs given: stdin is empty", 'e.g. echo "some text" | gpux run NAME')
    if stripped.startswith("{"):
        try:
            request = json_text.loads(stripped)
        except ValueError:
            request = None
        if isinstance(request, dict):
            return [("stdin", pipeline.item(request))], True
    lines = [line for line in text.splitlines() if line.strip()]
    if kind != "text":
        raise UsageError(
            "stdin holds text, but this model takes several inputs",
            'pipe a JSON object of inputs, e.g. {"name": value}',
        )
    return [(f"line {i + 1}", {names[0]: line}) for i, line in enumerate(lines)], len(lines) == 1


def _is_collection(text: str) -> bool:
    path = Path(text.removeprefix("@")).expanduser()
    if path.suffix.lower() == ".txt":
        return text.startswith("@") and path.is_file()  # without '@' it is the text itself
    return path.is_dir() or (path.suffix.lower() == ".jsonl" and path.is_file())


def _expand(pipeline: Pipeline, name: str, text: str) -> Iterator[Item]:
    kind = pipeline.kind(name)
    path = Path(text.removeprefix("@")).expanduser()
    if path.suffix.lower() == ".jsonl" and path.is_file():
        yield from _jsonl(pipeline, path)
        return
    if kind == "text":
        if path.suffix.lower() == ".txt" and path.is_file() and text.startswith("@"):
            lines = [line for line in path.read_text("utf-8").splitlines() if line.strip()]
            yield from ((f"{path.name}:{i + 1}", {name: line}) for i, line in enumerate(lines))
            return
        yield (_clip(text), {name: text})
        return
    if kind == "value":  # a handler's input: JSON, else the text as typed
        yield (_clip(text), {name: loose_value(text)})
        return
    if kind in SUFFIXES:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES[kind])
            if not files:
                raise NotFoundError(
                    f"folder '{path}' holds no {kind} files",
                    f"expected files ending in {', '.join(sorted(SUFFIXES[kind]))}",
                )
            yield from ((str(p), {name: p}) for p in files)
            return
        if not path.is_file():
            raise NotFoundError(
                f"input '{name}': file '{text}' not found",
                f"give the path of a {kind} file, a folder of them, or a .jsonl file",
            )
        yield (str(path), {name: path})
        return
    yield (_clip(text), {name: _value(pipeline, name, text)})


def _jsonl(pipeline: Pipeline, path: Path) -> Iterator[Item]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                value = json_text.loads(line)
            except ValueError as exc:
                raise InputError(
                    f"{path.name}:{number} is not valid JSON: {exc}",
                    'write one JSON value per line, e.g. {"text": "..."} or "..."',
                ) from None
            item = pipeline.item(value)
            for name, entry in item.items():
                # File paths in JSONL are relative to the JSONL file.
                if pipeline.kind(name) in SUFFIXES and isinstance(entry, str):
                    candidate = path.parent / entry
                    if candidate.is_file():
                        item[name] = candidate
            yield (f"{path.name}:{number}", item)


def _value(pipeline: Pipeline, name: str, text: str) -> Any:
    kind = pipeline.kind(name)
    if text.startswith("@"):
        path = Path(text[1:]).expanduser()
        if not path.is_file():
            raise NotFoundError(f"input '{name}': file '{path}' not found", "check the path")
        if kind == "text":
            return path.read_text("utf-8")
        if kind in SUFFIXES:
            return path
        from gpux.pipeline.inputs import read_value_file

        return read_value_file(name, path)
    if kind == "text":
        return text
    if kind == "value":
        return loose_value(text)
    if kind in SUFFIXES:
        return Path(text).expanduser()
    return parse_value(name, text, None)


def _clip(text: str) -> str:
    return clip(text, 60)


def run_items(
    pipeline: Pipeline, items: list[Item], batch_size: int, raw: bool
) -> Iterator[tuple[str, dict[str, Any], float]]:
    """Results in input order, batch by batch: (label, result, batch latency in ms)."""
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        began = time.perf_counter()
        results = pipeline.run([item for _, item in chunk], raw=raw)
        elapsed = (time.perf_counter() - began) * 1e3
        for (label, _), result in zip(chunk, results, strict=True):
            yield label, result, elapsed


def interactive(pipeline: Pipeline, raw: bool, full: bool = False) -> None:
    """A prompt loop: one input per line, one decoded result per line, the model loaded once."""
    names = pipeline.input_names
    prompt = sys.stdin is not None and sys.stdin.isatty()
    if prompt:
        sys.stderr.write(f"gpux: one {' / '.join(names)} per line; Ctrl-D to quit\n")
    while True:
        if prompt:
            sys.stderr.write("> ")
            sys.stderr.flush()
        line = sys.stdin.readline()
        if not line:
            break
        line = line.rstrip("\n")
        if not line.strip():
            continue
        try:
            stripped = line.strip()
            if stripped.startswith("{"):
                item = pipeline.item(json_text.loads(stripped))
            elif len(names) == 1:
                item = {names[0]: _value(pipeline, names[0], stripped)}
            else:
                raise UsageError(
                    "this model takes several inputs", 'type a JSON object: {"name": value, ...}'
                )
            result = result_to_json(pipeline.run([item], raw=raw)[0], full)
            sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
        except ValueError as exc:
            sys.stderr.write(f"error: the line is not valid JSON: {exc}\n")
        except GPUXError as exc:
            # A bad line is reported and the loop goes on: the model stays loaded.
            sys.stderr.write(f"error: {exc.message}\n  hint: {exc.hint}\n")
        sys.stdout.flush()


def run_pipeline(
    model: Model,
    inputs: list[str],
    output: Path | None,
    raw: bool,
    interactive_mode: bool,
    batch_size: int,
    full: bool = False,
    draw: Path | None = None,
) -> None:
    """``gpux run`` on an image with a pipeline: one result as JSON, many as JSONL.

    ``output``: the results (.json, .jsonl), or the raw output tensors (.npz; .npy for one
    output of one input), which are then computed even without ``raw``. ``draw``: an image
    file to save the input image to, with the detections' boxes drawn on it (one item only)."""
    from gpux.cli.console import print_json

    pipeline = model.pipeline
    assert isinstance(pipeline, Pipeline)
    suffix = output.suffix.lower() if output is not None else ""
    if output is not None and suffix not in (".json", ".jsonl", ".npz", ".npy"):
        raise UsageError(
            f"cannot write results to '{output.name}'",
            "use --output results.json or .jsonl for results, out.npz for the raw tensors",
        )
    tensors_out = suffix in (".npz", ".npy")
    if draw is not None:  # refused before the inputs are read and the model runs
        from gpux.cli.draw import check_draw_path, drawing_plan

        if interactive_mode:
            raise UsageError("--draw saves one image; --interactive runs many", "drop one of them")
        check_draw_path(draw)
        drawing_plan(pipeline)
    if interactive_mode:
        if tensors_out:
            raise UsageError(
                "--interactive prints each result as it comes; it writes no tensor file",
                "drop --output, or run the inputs with --input",
            )
        interactive(pipeline, raw, full)
        return
    items, single = gather(pipeline, inputs) if inputs else from_stdin(pipeline)
    placement = model.placement
    if draw is not None and not single:
        given = f"{len(items)} inputs were given" if len(items) > 1 else "a collection was given"
        raise UsageError(
            f"--draw saves one image, but {given}",
            "run one image file at a time with --draw",
        )
    if single:
        began = time.perf_counter()
        result = pipeline.run([items[0][1]], raw=raw or tensors_out)[0]
        latency = round((time.perf_counter() - began) * 1e3, 3)
        tensors = result.pop("outputs", None) if tensors_out and not raw else result.get("outputs")
        body: dict[str, Any] = {
            "model": model.image.name if model.image else "model",
            "backend": placement.backend,
            "latency_ms": latency,
            "result": result_to_json(result, full),
        }
        placements = getattr(model, "placements", None)
        if placements:  # a chain: where each of its models runs
            body["backends"] = {k: p.backend for k, p in placements.items()}
        if placement.fallback_reason:
            body["fallback_reason"] = placement.fallback_reason
        if draw is not None:
            from gpux.cli.draw import draw_detections

            draw_detections(pipeline, items[0][1], body["result"], draw)
            body["drawn"] = str(draw)
        if output is not None and tensors_out:
            body["written"] = [str(p) for p in _write_tensors([tensors or {}], output)]
        elif output is not None:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(json.dumps(body, ensure_ascii=False) + "\n", "utf-8")
        print_json(body)
        return
    _stream(pipeline, items, output, raw, batch_size, full)


def _write_tensors(per_item: list[dict[str, Any]], output: Path) -> list[Path]:
    """Raw output tensors to .npz/.npy: one input's under their output names, several inputs'
    as ``<position>.<output>`` (0 for the first input)."""
    from gpux.pipeline.outputs import write_outputs

    if len(per_item) == 1:
        return write_outputs(per_item[0], output)
    if output.suffix.lower() == ".npy":
        _refuse_npy(len(per_item))
    return write_outputs(
        {f"{i}.{name}": v for i, tensors in enumerate(per_item) for name, v in tensors.items()},
        output,
    )


def _refuse_npy(count: int) -> None:
    raise UsageError(
        f"{count} inputs give {count} sets of tensors, which one .npy cannot hold",
        "use --output out.npz (keys <position>.<output>)",
    )


def _stream(
    pipeline: Pipeline,
    items: list[Item],
    output: Path | None,
    raw: bool,
    batch_size: int,
    full: bool = False,
) -> None:
    """Many items: JSONL on stdout (and in ``output``, or their raw tensors when it is .npz),
    a progress bar on stderr."""
    from gpux import env
    from gpux.cli.console import stderr

    console = stderr()
    bar: Any = None
    if console.is_terminal and not env.no_progress():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        bar = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        bar.start()
        task = bar.add_task("running", total=len(items))
    tensors_out = output is not None and output.suffix.lower() in (".npz", ".npy")
    if output is not None and output.suffix.lower() == ".npy":  # before the model runs
        _refuse_npy(len(items))
    collected: list[dict[str, Any]] = []
    sink = output.open("w", encoding="utf-8") if output is not None and not tensors_out else None
    try:
        for label, result, _ in run_items(pipeline, items, batch_size, raw or tensors_out):
            if tensors_out:
                tensors = result.pop("outputs") if not raw else result["outputs"]
                collected.append(tensors)
            line = json.dumps({"input": label, **result_to_json(result, full)}, ensure_ascii=False)
            sys.stdout.write(line + "\n")
            if sink is not None:
                sink.write(line + "\n")
            if bar is not None:
                bar.advance(task)
        sys.stdout.flush()
    finally:
        if bar is not None:
            bar.stop()
        if sink is not None:
            sink.close()
    if tensors_out:
        assert output is not None
        written = _write_tensors(collected, output)
        sys.stderr.write(f"wrote {', '.join(map(str, written))}\n")
