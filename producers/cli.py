"""``wattsup produce ...`` (filled in by the producers work)."""

import typer

app = typer.Typer(no_args_is_help=True)
