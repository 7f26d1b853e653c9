"""``gpux doctor``."""

from __future__ import annotations

from typing import Any

import typer


def register(app: typer.Typer) -> None:
    @app.command("doctor")
    def doctor(
        model: str | None = typer.Option(
            None, "--model", help="Also load this image/project and show where it really runs."
        ),
        gpus: str | None = typer.Option(
            None,
            "--gpus",
            help="Also show the instances --gpus all|N|ids gives a model here (with --model, "
            "loaded so).",
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    ) -> None:
        """Show GPUs, ONNX Runtime backends and libraries, and what 'auto' would pick."""
        from gpux.api import diagnose
        from gpux.cli.console import print_json
        from gpux.cli.options import check_gpus

        report = diagnose(model, check_gpus(gpus))
        if as_json:
            print_json(report)
        else:
            _render(report)


def _render(report: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from gpux.cli.console import stdout

    console = stdout()
    system = report["system"]
    console.print(
        f"[bold]system[/bold]  {system['os']} {system['machine']}, {system['cpu_cores']} CPU "
        f"cores, Python {system['python']}"
    )
    table = Table(title="GPU adapters (wgpu)", title_justify="left", show_edge=False)
    for column in ("name", "vendor", "type", "backend"):
        table.add_column(column)
    for adapter in report["adapters"]:
        table.add_row(
            escape(adapter["name"]), escape(adapter["vendor"]), adapter["type"], adapter["backend"]
        )
    console.print(table)
    if report["adapter_error"]:
        console.print(f"[yellow]{escape(report['adapter_error'])}[/yellow]")
    if not report["adapters"]:
        console.print("[dim]no GPU adapter seen[/dim]")

    nvidia = report["nvidia"]
    found = ", ".join(
        f"{lib['name']} {lib['found'] or '[red]missing[/red]'}" for lib in nvidia["libraries"]
    )
    console.print(
        f"[bold]NVIDIA[/bold]  driver {nvidia['driver'] or '-'}; GPUs: "
        f"{escape(', '.join(nvidia['gpus']) or '-')}; libraries: {found}"
    )

    for gpu in report["cuda_gpus"]:
        memory = f"{gpu['memory_bytes'] / 2**30:.0f} GiB" if gpu["memory_bytes"] else "? GiB"
        console.print(f"  cuda:{gpu['index']}  {escape(gpu['name'])}, {memory}")
    if "instances" in report:
        planned = report["instances"]
        if "error" in planned:
            console.print(
                f"[red]--gpus {escape(planned['request'])}: {escape(planned['error'])}[/red]"
            )
        else:
            devices = ", ".join(i["device"] for i in planned["instances"])
            console.print(
                f"[bold]--gpus {escape(planned['request'])}[/bold]  "
                f"{len(planned['instances'])} instance(s): {devices}"
            )

    engine = report["wgpu_engine"]
    adapter = engine["adapter"]
    where = (
        f"on {escape(adapter['name'])} ({adapter['backend']}, {adapter['type']})"
        if adapter
        else f"[dim]no adapter: {escape(engine['why'])}[/dim]"
    )
    console.print(
        f"[bold]wgpu engine[/bold] (--backend wgpu) {where}; {len(engine['claimed_ops'])} ops "
        f"claimed: {', '.join(engine['claimed_ops'])}"
    )

    ort = report["onnxruntime"]
    console.print(
        f"[bold]ONNX Runtime[/bold] {ort['version']} ({escape(', '.join(ort['distributions']))}); "
        f"providers: {', '.join(ort['providers'])}"
    )
    for plugin in ort["plugins"]:
        state = f"[red]{escape(plugin['error'])}[/red]" if plugin["error"] else "registered"
        console.print(f"  plugin {plugin['module']}: {', '.join(plugin['eps'])} {state}")
    for device in ort["devices"]:
        console.print(f"  device {device['ep']}: {device['type']} {escape(device['vendor'])}")

    auto = report["auto"]
    table = Table(
        title="backends, in the order 'auto' tries them", title_justify="left", show_edge=False
    )
    for column in ("backend", "status", "why"):
        table.add_column(column)
    candidates = {c["backend"]: c for c in auto["candidates"]}
    skipped = {s["backend"]: s for s in auto["skipped"]}
    for backend in auto["order"]:
        if backend in candidates:
            mark = "[green]chosen[/green]" if backend == auto["choice"] else "usable"
            table.add_row(backend, mark, f"via {candidates[backend]['via']}")
        elif backend in skipped:
            table.add_row(backend, "[dim]unavailable[/dim]", escape(skipped[backend]["reason"]))
    console.print(table)
    for hint in report["hints"]:
        console.print(f"[cyan]hint:[/cyan] {escape(hint)}")
    if "model" in report:
        model = report["model"]
        if "error" in model:
            console.print(f"[red]model {escape(model['target'])}: {escape(model['error'])}[/red]")
        else:
            placement = model["placement"]
            details = placement.get("details", {})
            assignment = details.get("assignment", {})
            nodes = details.get("nodes") if details.get("proof") == "onnxruntime-log" else None
            if assignment.get("known"):
                share = f"{assignment['nodes_on_backend']}/{assignment['nodes']} nodes"
            elif nodes:  # a generative model: ONNX Runtime's log of genai's session
                share = ", ".join(f"{count} nodes on {name}" for name, count in nodes.items())
                share += " (onnxruntime-genai's session, from ONNX Runtime's log)"
            else:
                share = "node placement unknown"
            console.print(
                f"[bold]model[/bold] {escape(model['target'])}: runs on {placement['backend']} "
                f"({', '.join(placement['providers'])}), {share}"
            )
