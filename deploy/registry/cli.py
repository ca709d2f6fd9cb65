"""``wattsup registry fetch|start|stop|status``: a local Apicurio schema registry (no Docker).

Not wired into ``wattsup.cli`` yet; add ``app.add_typer(registry_app, name="registry")``.
Point the services at it with ``WATTSUP_KAFKA_SCHEMA_REGISTRY_URL=<the printed URL>``.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from deploy.registry.launcher import DEFAULT_CACHE_DIR, RegistryError, RegistryLauncher, fetch_registry
from foundation.kafka_settings import PROJECT_ROOT

app = typer.Typer(no_args_is_help=True)
console = Console()

PortOpt = typer.Option(8081, "--port", envvar="WATTSUP_REGISTRY_PORT", help="Registry HTTP port on 127.0.0.1.")
DataDirOpt = typer.Option(
    PROJECT_ROOT / "var" / "registry", "--data-dir", envvar="WATTSUP_REGISTRY_DATA_DIR",
    help="Where the registry's log and pid file go (its storage is in memory).",
)


def _fail(exc: Exception) -> None:
    console.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(1)


@app.command()
def fetch() -> None:
    """Resolve Apicurio Registry from Maven Central into the cache (idempotent)."""
    try:
        dist = fetch_registry(DEFAULT_CACHE_DIR, quiet=True)
    except RegistryError as exc:
        _fail(exc)
    console.print(f"Apicurio Registry in {dist}")


@app.command()
def start(port: int = PortOpt, data_dir: Path = DataDirOpt) -> None:
    """Start the registry in the background (in-memory storage) and wait until it answers."""
    registry = RegistryLauncher(data_dir=data_dir, port=port)
    try:
        registry.start()
    except RegistryError as exc:
        _fail(exc)
    console.print(f"schema registry running, pid {registry.pid()}: WATTSUP_KAFKA_SCHEMA_REGISTRY_URL={registry.url}")


@app.command()
def stop(port: int = PortOpt, data_dir: Path = DataDirOpt) -> None:
    """Stop the registry (its schemas are lost: storage is in memory)."""
    console.print("registry stopped" if RegistryLauncher(data_dir=data_dir, port=port).stop() else "registry was not running")


@app.command()
def status(port: int = PortOpt, data_dir: Path = DataDirOpt) -> None:
    """Whether the registry runs and answers."""
    registry = RegistryLauncher(data_dir=data_dir, port=port)
    pid = registry.pid()
    if pid is None:
        console.print(f"registry is [red]not running[/red] (data dir {registry.data_dir})")
        raise typer.Exit(3)
    state = "[green]answering[/green]" if registry.answers() else "[yellow]not answering[/yellow]"
    console.print(f"registry running, pid {pid}, {state} on {registry.url}")
