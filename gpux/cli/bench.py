"""``gpux bench``: the library is ``gpux.bench``; this draws its progress and its results."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from gpux.bench.observer import Observer  # no numpy: the package imports names lazily
from gpux.cli.options import BACKENDS, GPUS_HELP, check_gpus

if TYPE_CHECKING:
    from gpux.api import Model
    from gpux.bench import BenchReport, Skipped
    from gpux.bench.timing import Phase


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench(
        target: str = typer.Argument(..., help="Image name[:tag], digest, project path or .onnx."),
        batch_size: str | None = typer.Option(
            None,
            "-b",
            "--batch-size",
            help="Batch sizes to sweep, e.g. 1,8,32 (default: 1, or the model's fixed batch).",
        ),
        backend: str | None = typer.Option(
            None,
            "--backend",
            help=f"Backends to compare, e.g. cpu,webgpu ({BACKENDS}; default: the image's).",
        ),
        gpus: str | None = typer.Option(None, "--gpus", help=GPUS_HELP),
        concurrency: int = typer.Option(
            1, "-c", "--concurrency", min=1, help="Callers on threads sharing the model."
        ),
        runs: int | None = typer.Option(
            None, "-n", "--runs", min=1, help="Timed calls per backend x batch size."
        ),
        duration: float | None = typer.Option(
            None,
            "-d",
            "--duration",
            help="Seconds of timed calls per backend x batch size (default 2; with --runs, "
            "whichever ends first).",
        ),
        warmup: str = typer.Option(
            "1s", "--warmup", help="Untimed calls first: seconds ('1s') or a count ('20'); 0: none."
        ),
        inputs: list[str] = typer.Option(
            [],
            "-i",
            "--input",
            help="Real inputs, as for 'gpux run' (NAME=VALUE, @file.npy, a sentence, an image "
            "file ...); default: generated from the model's signature.",
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
        trust_code: bool = typer.Option(
            False,
            "--trust-code",
            help="Run the handler code of an image not built on this machine (pulled, loaded).",
        ),
        raw_latencies: bool = typer.Option(
            False, "--raw-latencies", help="With --json: every call's latency too."
        ),
        csv_file: Path | None = typer.Option(None, "--csv", help="Also write the results as CSV."),
        plot: Path | None = typer.Option(
            None, "--plot", help="Also draw the results: out.png (matplotlib) or out.html."
        ),
    ) -> None:
        """Measure latency (min/p50/p90/p99/max), throughput and peak memory, per backend and
        batch size, with the machine and placement they were measured on."""
        from gpux.bench import (
            BenchSettings,
            benchmark,
            parse_backends,
            parse_batch_sizes,
            parse_warmup,
        )
        from gpux.bench.plot import check_target
        from gpux.cli.console import print_json, stderr

        gpus = check_gpus(gpus)
        warmup_runs, warmup_s = parse_warmup(warmup)
        settings = BenchSettings(
            batch_sizes=parse_batch_sizes(batch_size) if batch_size else None,
            backends=parse_backends(backend) if backend else [None],
            concurrency=concurrency,
            runs=runs,
            duration_s=duration,
            warmup_runs=warmup_runs,
            warmup_s=warmup_s,
        )
        if plot is not None:
            check_target(plot)  # before minutes of measuring, not after
        reporter = None
        from gpux.api import looks_like_path

        if looks_like_path(target) and not target.endswith(".onnx"):
            from gpux.cli.progress import RichReporter

            reporter = RichReporter(quiet=True)
        observer = BarObserver()
        try:
            report = benchmark(
                target,
                settings,
                inputs=_real_inputs(inputs) if inputs else None,
                observer=observer,
                reporter=reporter,
                trust_code=trust_code,
                gpus=gpus,
            )
        finally:
            observer.close()
        if as_json:
            print_json(report.to_json(raw_latencies=raw_latencies))
        else:
            show(report)
        if csv_file is not None:
            report.write_csv(csv_file)
            stderr().print(f"wrote {csv_file}")
        if plot is not None:
            from gpux.bench.plot import write_plot

            stderr().print(f"wrote {write_plot(report, plot)}")


def _real_inputs(values: list[str]) -> Any:
    """``--input`` values made into the model's tensors, the way ``gpux run`` reads them."""

    def feed(model: Model) -> Any:
        from gpux.pipeline.inputs import parse_cli_inputs

        if model.pipeline is not None:
            from gpux.cli.inputs import gather, skips_pipeline

            if not skips_pipeline(values, model):
                from gpux.bench.feeds import pipeline_feed
                from gpux.pipeline.runner import Pipeline

                assert isinstance(model.pipeline, Pipeline)
                items, _ = gather(model.pipeline, values)
                return pipeline_feed(model, [item for _, item in items])
        return parse_cli_inputs(values, model.inputs)

    return feed


class BarObserver(Observer):
    """A Rich progress bar on stderr while phases run (terminal only, not with
    GPUX_NO_PROGRESS); skipped backends are always said. The bar is redrawn 4 times a second
    by one thread that reads the phase's counter: the timed loop itself does nothing for it."""

    REFRESH_S = 0.25

    def __init__(self) -> None:
        from gpux import env
        from gpux.cli.console import stderr

        self.console = stderr()
        self.live = self.console.is_terminal and not env.no_progress()
        self._progress: Any = None
        self._task: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _bar(self) -> Any:
        if self._progress is None:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[calls]} calls"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
                auto_refresh=False,
            )
            self._progress.start()
        return self._progress

    def loading(self, backend: str | None) -> None:
        if self.live:
            bar = self._bar()
            self._clear()
            where = f" on {backend}" if backend else ""
            self._task = bar.add_task(f"loading the model{where}", total=None, calls=0)
            bar.refresh()

    def phase(
        self, label: str, phase: Phase, runs: int | None, seconds: float | None, warmup: bool
    ) -> None:
        if not self.live:
            return
        bar = self._bar()
        self._clear()
        self._task = bar.add_task(label, total=1.0, calls=0)
        started = time.perf_counter()
        self._stop.clear()

        def redraw() -> None:
            while not self._stop.wait(self.REFRESH_S):
                done = phase.done()
                fraction = max(
                    done / runs if runs else 0.0,
                    (time.perf_counter() - started) / seconds if seconds else 0.0,
                )
                bar.update(self._task, completed=min(fraction, 1.0), calls=done)
                bar.refresh()

        self._thread = threading.Thread(target=redraw, name="gpux-bench-bar", daemon=True)
        self._thread.start()

    def phase_done(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def skipped(self, skip: Skipped) -> None:
        from rich.markup import escape

        self.console.print(f"[yellow]skipped[/yellow] {skip.backend}: {escape(skip.reason)}")

    def _clear(self) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None

    def close(self) -> None:
        self.phase_done()
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def show(report: BenchReport) -> None:
    """The context, one table row per backend x batch size, then where each backend ran."""
    from rich.markup import escape
    from rich.table import Table

    from gpux.cli.console import human_size, stdout

    console = stdout()
    machine, image = report.machine, report.image
    gpus = ", ".join(machine["gpus"]) or "none"
    settings = report.settings
    timed = (
        f"{settings['runs']} runs"
        if settings["runs"] and not settings["duration_s"]
        else f"{settings['duration_s']} s"
        + (f" (at most {settings['runs']} runs)" if settings["runs"] else "")
    )
    warm = (
        f"{settings['warmup_runs']} runs"
        if settings["warmup_runs"] is not None
        else f"{settings['warmup_s']} s"
    )
    console.print(
        f"[bold]{escape(image['name'])}[/bold] [dim]{image['digest'][7:19]}[/dim]  "
        f"{image['model']} model, {report.inputs} inputs"
    )
    console.print(
        f"[dim]CPU[/dim] {escape(machine['cpu'])}, {machine['cpu_cores']} cores  "
        f"[dim]GPU[/dim] {escape(gpus)}"
    )
    console.print(
        f"[dim]OS[/dim] {machine['os']}  [dim]Python[/dim] {machine['python']}  "
        f"[dim]onnxruntime[/dim] {machine['onnxruntime']}"
    )
    console.print(
        f"[dim]warm-up {warm}, timed {timed} per row, {settings['concurrency']} "
        f"caller{'s' if settings['concurrency'] > 1 else ''}; latency in ms[/dim]"
    )
    table = Table(
        show_edge=False, box=None, header_style="bold", pad_edge=False, collapse_padding=True
    )
    for column in ("BACKEND", "BATCH", "RUNS", "MIN", "P50", "P90", "P99", "MAX", "ITEMS/S"):
        table.add_column(column, justify="left" if column == "BACKEND" else "right", no_wrap=True)
    table.add_column("PEAK RSS", justify="right", no_wrap=True)
    table.add_column("DEV MEM", justify="right", no_wrap=True)
    for result in report.results:
        stats = result.latency_ms
        device = result.memory["device"]
        rss = result.memory["host_peak_rss_bytes"]
        table.add_row(
            result.backend,
            str(result.batch_size),
            str(result.runs),
            *(f"{stats[k]:.3f}" for k in ("min", "p50", "p90", "p99", "max")),
            f"{result.throughput:.1f}",
            "n/a" if rss is None else human_size(rss),
            "n/a"
            if device.get("bytes") is None
            else human_size(device["bytes"]) + (" (GPU)" if device["scope"] == "device" else ""),
        )
    for skip in report.skipped:
        table.add_row(skip.backend, *["-"] * 10)
    console.print(table)
    seen: set[str] = set()
    for result in report.results:
        placement = result.placement
        if placement["backend"] in seen:
            continue
        seen.add(placement["backend"])
        share = (
            f"{placement['nodes_on_backend']}/{placement['nodes']} nodes ({placement['share']:.0%})"
            if placement["share"] is not None
            else "node placement unknown"
        )
        console.print(
            f"[dim]{placement['backend']}:[/dim] {escape(placement['device'])}; "
            f"{', '.join(placement['providers'])}; {share}"
        )
    for skip in report.skipped:
        console.print(f"[yellow]{skip.backend}: skipped[/yellow] {escape(skip.reason)}")
        if skip.hint:
            console.print(f"  [cyan]hint:[/cyan] {escape(skip.hint)}")
