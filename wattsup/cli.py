"""The ``wattsup`` command: one sub-command group per pipeline stage.

Stage modules are imported inside their commands so ``wattsup broker status`` does not pay for
importing Faust, scikit-learn or Prophet.
"""

from __future__ import annotations

import logging

import typer

from dashboard.cli import app as dashboard_app
from deploy.kafka.cli import app as broker_app
from deploy.lag_exporter.cli import lag_exporter
from deploy.registry.cli import app as registry_app
from forecaster.cli import app as forecast_app
from models.cli import app as model_app
from producers.cli import app as produce_app
from stream_processors.cli import sensitivity, stream
from wattsup.feedback_commands import app as feedback_app
from wattsup.offline_commands import detect, evaluate

app = typer.Typer(help="WattsUp: streaming anomaly detection for smart-meter fleets.", no_args_is_help=True)
app.add_typer(broker_app, name="broker", help="Run the local single-node Kafka broker (KRaft, no Docker).")
app.add_typer(produce_app, name="produce", help="Write meter readings to Kafka: simulated fleet or CSV replay.")
app.add_typer(registry_app, name="registry", help="Run a local Apicurio schema registry (Confluent-compatible API).")
app.add_typer(model_app, name="model", help="Train and list detector versions.")
app.add_typer(dashboard_app, name="dashboard", help="Serve the dashboard: REST API, live events, alerts, the page.")
app.add_typer(forecast_app, name="forecast", help="Prophet forecasts of expected usage per meter (batch worker).")
app.add_typer(feedback_app, name="feedback", help="Mark incidents (confirmed, false alarm, expected), export labels.")
app.command("stream")(stream)
app.command("sensitivity")(sensitivity)
app.command("detect")(detect)
app.command("evaluate")(evaluate)
app.command("lag-exporter")(lag_exporter)


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def demo() -> None:
    """Run the whole pipeline on this machine and print its URLs; Ctrl-C stops everything.

    DEMO_SECONDS=N stops it after N seconds (exit 0).
    """
    from wattsup.demo import run_demo

    raise typer.Exit(run_demo())


if __name__ == "__main__":
    app()
