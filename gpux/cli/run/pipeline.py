"""``gpux run`` on a model with a pipeline: items in (read by :mod:`gpux.cli.inputs`),
results out. One item prints one JSON object; many are run in batches and streamed out as
JSONL with a progress bar; ``--interactive`` reads one item per line with the model loaded
once; ``-o`` writes the results (.json/.jsonl) or the raw output tensors (.npz/.npy).
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
from gpux.cli.inputs import Item, from_stdin, gather, item_value
from gpux.errors import GPUXError, UsageError
from gpux.pipeline.outputs import result_to_json
from gpux.pipeline.runner import Pipeline


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
                item = {names[0]: item_value(pipeline, names[0], stripped)}
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
        from gpux.cli.run.draw import check_draw_path, drawing_plan

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
            from gpux.cli.run.draw import draw_detections

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
