"""Read the Grafana dashboards in monitoring/: their PromQL, with Grafana's variables filled in, and
the metric names each expression uses (tests check those against a real scrape; the plot script
queries Prometheus with them).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DASHBOARDS = Path("monitoring/grafana/dashboards")

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
# A name not glued to a longer word or a number, and not a function call.
_NAME = re.compile(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:]|\s*\()")
_KEYWORDS = frozenset({"and", "or", "unless", "offset", "bool", "by", "without", "on", "ignoring",
                       "group_left", "group_right", "inf", "nan", "atan2"})
_LABEL_VALUES = re.compile(r"label_values\(\s*([^,)]+)")
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
DEFAULT_VALUES = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}


@dataclass(frozen=True)
class Query:
    dashboard: str
    panel: str
    expr: str
    legend: str = ""


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (or a Grafana `label_values(...)` variable query)."""
    found = _LABEL_VALUES.search(expr)
    if found:
        expr = found.group(1)
    text = _STRING.sub("", expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _VARIABLE.sub(" ", text)
    return {m for m in _NAME.findall(text) if m not in _KEYWORDS}


def substitute(expr: str, values: dict[str, str] | None = None) -> str:
    """Fill Grafana's variables: $__rate_interval and friends with defaults, any other with `.*`."""
    table = {**DEFAULT_VALUES, **(values or {})}

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return table.get(name, ".*")

    return _VARIABLE.sub(one, expr)


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def queries(path: Path) -> Iterator[Query]:
    """Every panel target's expr and every query variable of one dashboard file."""
    board = load(path)
    title = str(board.get("title", path.name))
    for panel in _panels(board.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield Query(title, str(panel.get("title", "")), str(target["expr"]),
                            str(target.get("legendFormat", "")))
    for variable in board.get("templating", {}).get("list", []):
        query = variable.get("query")
        text = query.get("query") if isinstance(query, dict) else query
        if variable.get("type") == "query" and text:
            yield Query(title, f"variable ${variable.get('name')}", str(text))


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))
