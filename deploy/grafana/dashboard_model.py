"""The parts of Grafana's dashboard JSON that WattsUp's dashboards use, as a validating model.

No Grafana server can be installed from the package registries this project uses, so the
provisioned dashboard is checked two ways instead: structurally here (panel ids unique, every
panel on the 24-column grid without overlap, every query on the provisioned Prometheus
datasource) and by running every panel's query against a real Prometheus (``panel_queries``
substitutes Grafana's built-in variables the way Grafana would before sending a query).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

GRAFANA_DIR = Path(__file__).resolve().parent
DASHBOARDS_DIR = GRAFANA_DIR / "dashboards"
PROMETHEUS_DATASOURCE_UID = "wattsup-prometheus"
GRID_COLUMNS = 24


class Datasource(BaseModel):
    type: Literal["prometheus"]
    uid: str


class GridPos(BaseModel):
    x: int = Field(ge=0, lt=GRID_COLUMNS)
    y: int = Field(ge=0)
    w: int = Field(gt=0, le=GRID_COLUMNS)
    h: int = Field(gt=0)

    @model_validator(mode="after")
    def fits_the_grid(self) -> GridPos:
        if self.x + self.w > GRID_COLUMNS:
            raise ValueError(f"panel at x={self.x} with width {self.w} runs past column {GRID_COLUMNS}")
        return self

    def cells(self) -> set[tuple[int, int]]:
        return {(x, y) for x in range(self.x, self.x + self.w) for y in range(self.y, self.y + self.h)}


class Target(BaseModel):
    model_config = ConfigDict(extra="allow")

    refId: str = Field(pattern=r"^[A-Z]$")
    expr: str = Field(min_length=1)
    datasource: Datasource
    legendFormat: str = ""


class Panel(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: int = Field(gt=0)
    type: Literal["timeseries", "stat", "bargauge", "table", "gauge"]
    title: str = Field(min_length=1)
    description: str = Field(min_length=1)
    datasource: Datasource
    gridPos: GridPos
    targets: list[Target] = Field(min_length=1)

    @model_validator(mode="after")
    def unique_ref_ids(self) -> Panel:
        refs = [t.refId for t in self.targets]
        if len(refs) != len(set(refs)):
            raise ValueError(f"panel {self.title!r} repeats a refId: {refs}")
        return self


class Dashboard(BaseModel):
    model_config = ConfigDict(extra="allow")

    uid: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,40}$")
    title: str
    schemaVersion: int = Field(ge=30)
    panels: list[Panel] = Field(min_length=1)

    @model_validator(mode="after")
    def panels_are_consistent(self) -> Dashboard:
        ids = [p.id for p in self.panels]
        if len(ids) != len(set(ids)):
            raise ValueError(f"panel ids are not unique: {sorted(ids)}")
        taken: dict[tuple[int, int], str] = {}
        for panel in self.panels:
            for cell in panel.gridPos.cells():
                if cell in taken:
                    raise ValueError(f"panels {taken[cell]!r} and {panel.title!r} overlap at {cell}")
                taken[cell] = panel.title
        return self


def load_dashboard(path: Path) -> Dashboard:
    return Dashboard.model_validate(json.loads(path.read_text()))


@dataclass(frozen=True)
class PanelQuery:
    panel_id: int
    panel_title: str
    ref_id: str
    expr: str
    """The expression with Grafana's variables substituted, ready for Prometheus."""


GRAFANA_VARIABLES = ("$__rate_interval", "$__interval", "$__range")


def substitute_variables(expr: str, *, rate_interval: str, interval: str, range_: str) -> str:
    """Replace Grafana's built-in variables as Grafana does before it sends the query."""
    values = {"$__rate_interval": rate_interval, "$__interval": interval, "$__range": range_}
    result = re.sub(r"\$__(rate_interval|interval|range)\b", lambda m: values[m.group(0)], expr)
    if "$" in result:
        raise ValueError(f"unsubstituted variable left in {result!r}")
    return result


def panel_queries(dashboard: Dashboard, *, rate_interval: str = "1m", interval: str = "15s",
                  range_: str = "5m") -> list[PanelQuery]:
    return [
        PanelQuery(panel.id, panel.title, target.refId,
                   substitute_variables(target.expr, rate_interval=rate_interval, interval=interval, range_=range_))
        for panel in dashboard.panels for target in panel.targets
    ]
