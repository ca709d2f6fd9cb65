"""``wattsup dashboard`` (serve the dashboard) and ``wattsup dashboard create-token NAME``."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

import typer
import uvicorn
from rich.console import Console

console = Console()


class _GracefulServer(uvicorn.Server):
    """uvicorn's server, but a SIGTERM/SIGINT shutdown exits 0.

    uvicorn re-raises the signal after its graceful shutdown, so the process would end "killed
    by SIGTERM" (-15) even though it stopped cleanly; a supervisor (the demo, systemd) then
    reports a failure.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

app = typer.Typer(help="The dashboard web service: REST API, live events, alerts and the page.")


@app.callback(invoke_without_command=True)
def serve(
    ctx: typer.Context,
    host: str | None = typer.Option(None, help="Listen address (WATTSUP_DASHBOARD_HOST, default 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Port (WATTSUP_DASHBOARD_PORT, default 8000)."),
    bootstrap_servers: str | None = typer.Option(None, help="Overrides WATTSUP_KAFKA_BOOTSTRAP_SERVERS."),
) -> None:
    """Serve the dashboard (API under /api/v1, page at /) and follow the Kafka topics."""
    if ctx.invoked_subcommand is not None:
        return
    from dashboard.app import create_app
    from dashboard.settings import DashboardSettings

    settings = DashboardSettings()
    updates = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    settings = settings.model_copy(update=updates)
    if bootstrap_servers:
        settings.kafka = settings.kafka.model_copy(update={"bootstrap_servers": bootstrap_servers})
    config = uvicorn.Config(create_app(settings), host=settings.host, port=settings.port, log_level="info",
                            proxy_headers=False, timeout_graceful_shutdown=5)
    _GracefulServer(config).run()


def _sessions():  # type: ignore[no-untyped-def]
    from dashboard.db import make_engine, migrate, session_factory
    from dashboard.settings import DashboardSettings

    engine = make_engine(DashboardSettings().database_url)
    migrate(engine)
    return engine, session_factory(engine)


@app.command("create-token")
def create_token_command(name: str = typer.Argument(..., help="Who or what the token is for, e.g. gateway-7.")) -> None:
    """Create an API token for the writing endpoints; it is printed once and stored only hashed."""
    from dashboard.auth import TokenExistsError, create_token

    engine, sessions = _sessions()
    try:
        token = create_token(sessions, name)
    except (TokenExistsError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    finally:
        engine.dispose()
    console.print(f"token {name!r} created; it is shown only this once:")
    typer.echo(token)


@app.command("list-tokens")
def list_tokens_command() -> None:
    """Names and creation times of the API tokens (the tokens themselves are not stored)."""
    from dashboard.auth import list_tokens
    from dashboard.timeutil import iso

    engine, sessions = _sessions()
    try:
        for name, created in list_tokens(sessions):
            typer.echo(f"{name}\t{iso(created)}")
    finally:
        engine.dispose()


@app.command("revoke-token")
def revoke_token_command(name: str = typer.Argument(..., help="Name given at create-token.")) -> None:
    """Delete a token and log out every browser session opened with it."""
    from dashboard.auth import revoke_token

    engine, sessions = _sessions()
    try:
        if not revoke_token(sessions, name):
            console.print(f"[red]error:[/red] no token named {name!r}")
            raise typer.Exit(2)
    finally:
        engine.dispose()
    console.print(f"token {name!r} revoked")
