"""``gpux inspect``."""

from __future__ import annotations

from typing import Any

import typer


def register(app: typer.Typer) -> None:
    @app.command("inspect")
    def inspect(
        target: str = typer.Argument(..., help="Image name[:tag], digest, project path or .onnx."),
        as_json: bool = typer.Option(False, "--json", help="Print everything as JSON."),
        code: bool = typer.Option(
            False, "--code", help="Print the image's handler code (read before --trust-code)."
        ),
    ) -> None:
        """Show a model's signature, operators, parameters, layers and smoke-run results."""
        from gpux.cli.console import print_json
        from gpux.inspection import describe

        if code:
            _print_code(target)
            return

        info = describe(target)
        if as_json:
            print_json(info)
        else:
            _render(info)


def _print_code(target: str) -> None:
    """The handler's files, each under a header, as plain text (pipe it to a pager)."""
    from gpux.errors import UsageError
    from gpux.store import Store
    from gpux.store.code import sources

    image = Store().get(target)
    parts = [image.component(key) for key in image.components] or [image]
    files = [(f"{part.name}: {name}", text) for part in parts for name, text in sources(part)]
    if not files:
        raise UsageError(f"image '{image.name}' holds no code", "drop --code")
    for header, text in files:
        typer.echo(f"# ---- {header}")
        typer.echo(text.rstrip("\n"))


def _render(info: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from gpux.cli.console import human_size, stdout

    console = stdout()
    if info["kind"] == "chain":
        _render_chain(info)
        return
    if info["kind"] == "generative":
        _render_generative(info)
        return
    model = info["model"]
    console.print(
        f"[bold]{escape(info['name'])}[/bold]"
        + (f"  [dim]{info['digest']}[/dim]" if info.get("digest") else "")
    )
    if info.get("description"):
        console.print(info["description"])
    facts = Table.grid(padding=(0, 2))
    facts.add_row("source", escape(f"{info['source'].get('kind')} {info['source'].get('origin')}"))
    facts.add_row("opsets", ", ".join(f"{d} {v}" for d, v in model.get("opsets", {}).items()))
    facts.add_row("producer", model.get("producer") or "-")
    facts.add_row("ir version", str(model.get("ir_version", "-")))
    facts.add_row("parameters", f"{model.get('parameters', 0):,}")
    facts.add_row("nodes", str(model.get("nodes", "-")))
    facts.add_row("model file", human_size(model.get("file_bytes", 0)))
    if info.get("size"):
        facts.add_row("image size", human_size(info["size"]))
    if info.get("created"):
        facts.add_row("created", info["created"])
    pipeline = info.get("pipeline")
    if pipeline:
        for number, line in enumerate(pipeline["inputs"]):
            facts.add_row("takes" if number == 0 else "", escape(line))
        for number, line in enumerate(pipeline["results"]):
            facts.add_row("returns" if number == 0 else "", escape(line))
    optimization = info.get("optimization")
    if optimization:
        if optimization.get("applied"):
            facts.add_row(
                "optimised",
                f"{optimization['level']}: "
                f"{human_size(optimization['original_bytes'])} -> "
                f"{human_size(optimization['optimized_bytes'])}",
            )
        elif not info.get("variant"):
            facts.add_row("optimised", f"no ({optimization.get('reason', '--no-optimize')})")
    code = info.get("code")
    if code:
        facts.add_row("code", escape(", ".join(code["files"])))
        if code["requirements"]:
            facts.add_row("requires", escape(", ".join(code["requirements"])))
        facts.add_row(
            "",
            "built on this machine"
            if code["built_here"]
            else "[yellow]not built here: runs only with --trust-code "
            f"(read it: gpux inspect {escape(info['name'])} --code)[/yellow]",
        )
    console.print(facts)
    if info.get("variant"):
        _render_variant(info["variant"])
    if info.get("variants"):
        _render_variants(info["variants"])

    for kind in ("inputs", "outputs"):
        table = Table(title=kind, title_justify="left", show_edge=False)
        table.add_column("name")
        table.add_column("dtype")
        table.add_column("shape")
        described = any(tensor.get("description") for tensor in info[kind])
        if described:
            table.add_column("description")
        for tensor in info[kind]:
            shape = tensor.get("shape")
            shape_text = (
                "?"
                if shape is None
                else "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
            )
            row = [escape(tensor["name"]), tensor["dtype"], escape(shape_text)]
            if described:
                row.append(escape(tensor.get("description") or ""))
            table.add_row(*row)
        console.print(table)

    operators = model.get("operators", {})
    if operators:
        ranked = sorted(operators.items(), key=lambda item: (-item[1], item[0]))
        top = ranked[:12]
        rest = sum(operators.values()) - sum(count for _, count in top)
        line = escape(", ".join(f"{op} {count}" for op, count in top))
        console.print(
            f"[bold]operators[/bold] ({len(operators)} types): {line}"
            + (f", others {rest}" if rest else "")
        )

    if info.get("layers"):
        table = Table(title="layers", title_justify="left", show_edge=False)
        for column in ("media type", "digest", "size", "title"):
            table.add_column(column)
        for layer in info["layers"]:
            table.add_row(
                layer["mediaType"],
                layer["digest"][7:19],
                human_size(layer["size"]),
                layer.get("title") or "",
            )
        console.print(table)

    smoke = info.get("smoke")
    if smoke:
        placement = smoke["placement"]
        console.print(
            f"[bold]smoke run[/bold]: {placement['backend']} ({', '.join(placement['providers'])})"
            f" on {placement['device']}; load {smoke['load_ms']:.0f} ms, first run "
            f"{smoke['first_run_ms']:.2f} ms, median {smoke['median_ms']:.3f} ms"
        )
        if placement.get("fallback_reason"):
            console.print(f"[yellow]fell back:[/yellow] {placement['fallback_reason']}")
    elif info["kind"] == "path":
        console.print("[dim]not built: run 'gpux build' to record a smoke run[/dim]")


def _render_generative(info: dict[str, Any]) -> None:
    """A generative image: its folder, generation defaults, files and the smoke generation."""
    from rich.markup import escape
    from rich.table import Table

    from gpux.cli.console import human_size, stdout

    console = stdout()
    model = info.get("model") or {}
    console.print(f"[bold]{escape(info['name'])}[/bold]  [dim]{info['digest']}[/dim]")
    if info.get("description"):
        console.print(escape(info["description"]))
    facts = Table.grid(padding=(0, 2))
    source = info.get("source") or {}
    facts.add_row("source", escape(f"{source.get('kind')} {source.get('origin')} (folder)"))
    facts.add_row("engine", str(model.get("engine")))
    facts.add_row(
        "model",
        f"{model.get('type')}, {model.get('layers')} layers, vocabulary "
        f"{model.get('vocab_size')}, context {model.get('context_length')} tokens",
    )
    speech = info.get("speech")
    if speech is not None:  # a Whisper: what it hears, not a chat
        language = speech.get("language") or "detected (English for an English-only model)"
        facts.add_row(
            "speech", escape(f"language {language}, {speech.get('task') or 'transcribe'}")
        )
    else:
        facts.add_row("chat template", "yes" if model.get("chat_template") else "no")
    generation = info.get("generation") or {}
    facts.add_row(
        "generation",
        escape(", ".join(f"{k} {v}" for k, v in generation.items() if v not in (None, []))),
    )
    facts.add_row("image size", human_size(info.get("size", 0)))
    if info.get("created"):
        facts.add_row("created", info["created"])
    console.print(facts)
    table = Table(title="layers", title_justify="left", show_edge=False)
    for column in ("file", "digest", "size"):
        table.add_column(column)
    for layer in info.get("layers", []):
        table.add_row(
            escape(layer.get("title") or ""), layer["digest"][7:19], human_size(layer["size"])
        )
    console.print(table)
    smoke = info.get("smoke")
    if smoke:
        usage = smoke.get("usage", {})
        heard = f" from {escape(smoke['audio'])}" if smoke.get("audio") else ""
        console.print(
            f"[bold]smoke run[/bold]: {usage.get('completion_tokens')} tokens{heard} after a "
            f"{usage.get('prompt_tokens')}-token prompt, first after "
            f"{smoke.get('time_to_first_token_ms')} ms, {smoke.get('tokens_per_second')} tokens/s"
        )
    console.print(f"[bold]placement[/bold]: {escape(info['placement_proof'])}")


def _render_chain(info: dict[str, Any]) -> None:
    from rich.markup import escape

    from gpux.cli.console import human_size, stdout

    console = stdout()
    console.print(f"[bold]{escape(info['name'])}[/bold]  [dim]{info['digest']}[/dim]")
    if info.get("description"):
        console.print(escape(info["description"]))
    chain = info.get("chain") or {}
    console.print(
        f"chain of {len(info['models'])} models: {escape(str(chain.get('detect')))} finds "
        f"'{escape(str(chain.get('regions')))}', {escape(str(chain.get('each')))} runs on each "
        f"crop -> '{escape(str(chain.get('output')))}'; image size {human_size(info['size'])}"
    )
    for key, model in info["models"].items():
        console.print(f"\n[bold]model {escape(key)}[/bold]")
        _render(model)


def _render_variant(report: dict[str, Any]) -> None:
    """The variant's report: what was done, size, latency and accuracy against the original."""
    from rich.markup import escape
    from rich.table import Table

    from gpux.cli.console import human_size, stdout

    console = stdout()
    size, latency, accuracy = report["size"], report["latency"], report["accuracy"]
    facts = Table.grid(padding=(0, 2))
    facts.add_row("variant", escape(f"{report['name']} of {report['of']}"))
    for step in report["steps"]:
        facts.add_row("", escape(f"{step['step']}: {step['detail']}"))
    if report.get("settings"):
        settings = ", ".join(
            f"{k} {v}" for k, v in report["settings"].items() if not isinstance(v, dict)
        )
        facts.add_row("settings", escape(settings) or "-")
    facts.add_row(
        "size",
        f"{human_size(size['original_bytes'])} -> {human_size(size['variant_bytes'])} "
        f"({size['ratio']:.2f}x)",
    )
    facts.add_row(
        "latency",
        f"{latency['original_ms']:.3f} -> {latency['variant_ms']:.3f} ms "
        f"({latency['ratio']:.2f}x) on {escape(latency['backend'])}, medians of "
        f"{latency['runs']} alternating runs",
    )
    placement = report.get("placement", {})
    if placement.get("variant", {}).get("known"):
        facts.add_row("placement", escape(_placement_text(placement)))
    from gpux.builder.variants import fit_warnings

    for warning in fit_warnings(report["name"], report):
        facts.add_row("[yellow]warning[/yellow]", escape(warning))
    samples = accuracy["samples"]
    facts.add_row(
        "compared on",
        escape(
            f"{samples['model_calls']} model calls from {samples['items']} {samples['kind']} "
            f"inputs ({samples['source']})"
        ),
    )
    bounds = {k: v for k, v in accuracy.get("bounds", {}).items() if v is not None}
    facts.add_row(
        "bounds",
        (", ".join(f"{k} {v:g}" for k, v in bounds.items()) or "none")
        + (" [green]kept[/green]" if accuracy.get("passed") else ""),
    )
    console.print(facts)
    table = Table(title="accuracy vs the original", title_justify="left", show_edge=False)
    for column in ("output", "cosine", "max abs error", "max rel error", "top-1 agreement"):
        table.add_column(column)
    for name, metrics in accuracy["outputs"].items():
        top1 = metrics.get("top1_agreement")
        table.add_row(
            escape(name),
            f"{metrics['cosine']:.6f}",
            f"{metrics['max_abs_error']:.4g}",
            f"{metrics['max_rel_error']:.4g}",
            "-" if top1 is None else f"{top1:.1%} ({metrics['classifier']})",
        )
    console.print(table)


def _placement_text(placement: dict[str, Any]) -> str:
    """``73/100 nodes on cuda (ConvInteger@CPUExecutionProvider x53); the original 100/100``"""
    from gpux.runtime.backend import describe_elsewhere

    variant, original = placement["variant"], placement.get("original", {})
    text = f"{variant['nodes_on_backend']}/{variant['nodes']} nodes on {placement['backend']}"
    if variant.get("elsewhere"):
        text += f" ({describe_elsewhere(variant['elsewhere'])})"
    if original.get("known"):
        text += f"; the original {original['nodes_on_backend']}/{original['nodes']}"
    return text


def _render_variants(variants: list[dict[str, Any]]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from gpux.cli.console import stdout

    table = Table(title="variants", title_justify="left", show_edge=False)
    for column in ("image", "size", "latency", "cosine", "top-1"):
        table.add_column(column)
    for entry in variants:
        top1 = entry.get("top1_agreement")
        table.add_row(
            escape(entry["image"]),
            f"{entry['size_ratio']:.2f}x",
            f"{entry['latency_ratio']:.2f}x",
            f"{entry['cosine']:.6f}",
            "-" if top1 is None else f"{top1:.1%}",
        )
    stdout().print(table)
