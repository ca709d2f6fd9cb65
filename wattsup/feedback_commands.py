"""``wattsup feedback``: mark incidents, revoke marks, list them, export them as labels."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console(width=160)
app = typer.Typer(no_args_is_help=True)


def _connection(bootstrap_servers: str | None):
    from foundation.kafka_settings import KafkaConnection, TopicNames
    from schemas.serde import make_serde

    connection = KafkaConnection()
    if bootstrap_servers:
        connection = connection.model_copy(update={"bootstrap_servers": bootstrap_servers})
    return connection, TopicNames(), make_serde(connection.schema_registry_url, **connection.registry_config())


@app.command("mark")
def mark(
    incident: str = typer.Argument(..., help="Incident id (inc-...), as the dashboard and the incidents topic show it."),
    verdict: str = typer.Option(..., help="confirmed, false_alarm or expected."),
    days: float = typer.Option(7.0, help="Scope of a false_alarm/expected mark, in days after the incident."),
    until_revoked: bool = typer.Option(False, help="No end to the scope: until `wattsup feedback revoke`."),
    close: bool | None = typer.Option(None, "--close/--keep-open",
                                      help="Close the incident (default: yes for false_alarm/expected, no for confirmed)."),
    note: str | None = typer.Option(None, help="Free text kept with the mark."),
    operator: str | None = typer.Option(None, help="Who marks it."),
    bootstrap_servers: str | None = typer.Option(None, help="Overrides WATTSUP_KAFKA_BOOTSTRAP_SERVERS."),
) -> None:
    """Mark an incident; every stream worker applies the mark live."""
    from detection.feedback import VERDICTS, mark_for_incident
    from feedback.topic import publish_mark, read_incidents

    if verdict not in VERDICTS:
        raise typer.BadParameter(f"verdict must be one of {', '.join(VERDICTS)}")
    connection, topics, serde = _connection(bootstrap_servers)
    record = read_incidents(connection, topics, serde).get(incident)
    if record is None:
        console.print(f"[red]error:[/red] no incident {incident!r} on {topics.incidents}")
        raise typer.Exit(2)
    try:
        made = mark_for_incident(record, verdict, created_at=int(time.time() * 1000),
                                 days=None if until_revoked else days, close=close, operator=operator, note=note)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    publish_mark(connection, topics, serde, made)
    scope = "until revoked" if made.expires_at is None else f"{days:g} days"
    console.print(f"marked {incident} ({made.kind} on {made.meter_id}) as {verdict}"
                  + (f", scope {scope}" if verdict != "confirmed" else ""))


@app.command("revoke")
def revoke(
    incident: str = typer.Argument(..., help="Incident id whose mark is revoked."),
    bootstrap_servers: str | None = typer.Option(None, help="Overrides WATTSUP_KAFKA_BOOTSTRAP_SERVERS."),
) -> None:
    """Revoke an incident's mark: its suppression and its severity step end in every worker."""
    import dataclasses

    from feedback.topic import publish_mark, read_marks

    connection, topics, serde = _connection(bootstrap_servers)
    found = [m for m in read_marks(connection, topics, serde) if m.incident_id == incident and not m.revoked]
    if not found:
        console.print(f"[red]error:[/red] no mark in force for {incident!r}")
        raise typer.Exit(2)
    publish_mark(connection, topics, serde, dataclasses.replace(found[0], revoked=True,
                                                                created_at=int(time.time() * 1000)))
    console.print(f"revoked the {found[0].verdict} mark of {incident}")


@app.command("list")
def list_marks(bootstrap_servers: str | None = typer.Option(None, help="Overrides WATTSUP_KAFKA_BOOTSTRAP_SERVERS.")) -> None:
    """Every mark on the feedback topic."""
    from feedback.topic import read_marks

    connection, topics, serde = _connection(bootstrap_servers)
    table = Table("meter", "kind", "verdict", "incident", "scope ends", "revoked", "operator")
    for m in sorted(read_marks(connection, topics, serde), key=lambda m: m.created_at):
        ends = "until revoked" if m.expires_at is None else time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(m.expires_at / 1000))
        table.add_row(m.meter_id, m.kind, m.verdict, m.incident_id or "", ends if m.verdict != "confirmed" else "",
                      "yes" if m.revoked else "", m.operator or "")
    console.print(table)


@app.command("export")
def export(
    output: Path = typer.Argument(..., dir_okay=False, help="Labelled readings CSV (timestamp,meter_id,kwh,label,event_id)."),
    produced_days: float = typer.Option(28.0, help="Readings produced in the last N days."),
    bootstrap_servers: str | None = typer.Option(None, help="Overrides WATTSUP_KAFKA_BOOTSTRAP_SERVERS."),
) -> None:
    """Write the marked meters' readings with the operators' labels, the file `wattsup evaluate` reads:
    label 1 inside confirmed incidents, 0 elsewhere (false alarms and expected included)."""
    from detection.feedback import labelled_readings
    from feedback.topic import read_marks
    from readings.history import days_ago, read_readings

    connection, topics, serde = _connection(bootstrap_servers)
    marks = [m for m in read_marks(connection, topics, serde) if not m.revoked]
    if not marks:
        console.print("no marks on the feedback topic: nothing to export")
        raise typer.Exit(1)
    frame = read_readings(connection, topics.readings, produced_since=days_ago(produced_days))
    labelled = labelled_readings(frame, marks)
    labelled.to_csv(output, index=False, date_format="%Y-%m-%dT%H:%M:%SZ")
    console.print(f"wrote {len(labelled)} readings of {labelled['meter_id'].nunique()} marked meters, "
                  f"{int(labelled['label'].sum())} labelled anomalous, to {output}")
