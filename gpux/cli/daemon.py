"""``gpux ps``, ``logs`` and ``stop``: the servers started with ``gpux serve -d``."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("ps")
    def ps(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
        """List the servers running in the background (gpux serve -d)."""
        from gpux.cli.console import print_json, stdout
        from gpux.serve import daemon

        servers = daemon.running()
        if as_json:
            print_json([daemon.as_json(server) for server in servers])
            return
        from rich.table import Table

        table = Table(show_edge=False, box=None, header_style="bold")
        for column in ("ID", "MODELS", "URL", "PID", "UPTIME"):
            table.add_column(column)
        for server in servers:
            table.add_row(
                server.id,
                ", ".join(server.models),
                server.url,
                str(server.pid),
                _duration(server.uptime),
            )
        stdout().print(table)

    @app.command("logs")
    def logs(
        key: str = typer.Argument(..., metavar="ID", help="Server id, or a model it serves."),
        follow: bool = typer.Option(
            False, "-f", "--follow", help="Keep printing until Ctrl-C or the server exits."
        ),
    ) -> None:
        """Print a background server's log (start-up, errors, one line per request)."""
        import sys

        from gpux.errors import NotFoundError
        from gpux.serve import daemon

        try:
            server = daemon.find(key)
        except NotFoundError:
            if not daemon.log_path(key).is_file():  # a stopped server's log stays readable
                raise
            server = None
        server_id = server.id if server else key
        keep_going = (lambda: daemon.alive(server.pid)) if follow and server else None
        out = sys.stdout.buffer
        try:
            for chunk in daemon.read_log(server_id, follow=keep_going):
                out.write(chunk)
                out.flush()
        except KeyboardInterrupt:  # the way to end -f
            return

    @app.command("stop")
    def stop(
        keys: list[str] = typer.Argument(
            None, metavar="ID", help="Server ids, or models they serve."
        ),
        every: bool = typer.Option(False, "--all", help="Stop every background server."),
        timeout: float = typer.Option(
            30.0, "--timeout", min=0, help="Seconds to let in-flight requests finish, then kill."
        ),
    ) -> None:
        """Stop background servers: drain in-flight requests, then exit."""
        from gpux.cli.console import stderr
        from gpux.errors import UsageError
        from gpux.serve import daemon

        if every == bool(keys):
            raise UsageError("name the servers to stop, or give --all", "gpux ps lists them")
        servers = daemon.running() if every else [daemon.find(key) for key in keys]
        servers = list({server.id: server for server in servers}.values())
        console = stderr()
        if not servers:
            console.print("no server is running")
            return
        killed = {server.id for server in daemon.stop(servers, timeout)}
        for server in servers:
            if server.id in killed:
                console.print(
                    f"[yellow]warning:[/yellow] server '{server.id}' did not exit within "
                    f"{timeout:g} s; killed it (its in-flight requests were dropped)"
                )
            else:
                console.print(f"stopped {server.id}")


def _duration(seconds: float) -> str:
    for unit, length in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= length or unit == "second":
            count = int(seconds // length)
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return "-"
