#!/usr/bin/env python3
"""Plot a Grafana dashboard's panels from a real Prometheus into one PNG.

Grafana is not packaged for Debian, so docs/dashboard-overview.png is this: every timeseries panel of
monitoring/grafana/dashboards/overview.json, its PromQL run against Prometheus (query_range) with
Grafana's variables filled in ($model and $key = all, $__rate_interval = --rate-interval), and the
result drawn with matplotlib. It is the panels' data, not a Grafana screenshot.

    .venv/bin/python scripts/plot_dashboard.py --prometheus http://127.0.0.1:9090 --minutes 15
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # after choosing the headless backend
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from confgen import dashboards  # noqa: E402

UNITS = {"reqps": ("req/s", 1.0), "s": ("seconds", 1.0), "percentunit": ("%", 100.0), "percent": ("%", 1.0),
         "short": ("", 1.0), "bytes": ("bytes", 1.0)}


@dataclass(frozen=True)
class Window:
    start: float
    end: float
    step: float
    rate_interval: str


def query_range(client: httpx.Client, base: str, expr: str, window: Window) -> list[Any]:
    resp = client.get(f"{base}/api/v1/query_range",
                      params={"query": expr, "start": window.start, "end": window.end, "step": window.step})
    resp.raise_for_status()
    body = resp.json()
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body}")
    result: list[Any] = body["data"]["result"]
    return result


def legend(fmt: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip() or str(labels)


def gaps_broken(points: list[tuple[datetime, float]], step: float) -> tuple[list[datetime], list[float]]:
    """Where Prometheus has no points (no traffic: no rate, no quantile), draw nothing, not a bridge."""
    xs: list[datetime] = []
    ys: list[float] = []
    for x, y in points:
        if xs and (x - xs[-1]).total_seconds() > 2 * step:
            xs.append(x)
            ys.append(math.nan)
        xs.append(x)
        ys.append(y)
    return xs, ys


def draw_panel(ax: Any, client: httpx.Client, base: str, panel: dict[str, Any], window: Window) -> bool:
    """One panel: every target's series. True when anything was drawn."""
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
    label, scale = UNITS.get(unit, ("", 1.0))
    lines = 0
    for target in panel.get("targets", []):
        expr = dashboards.substitute(target["expr"], {"__rate_interval": window.rate_interval})
        for series in query_range(client, base, expr, window):
            points = [(datetime.fromtimestamp(float(t), UTC), float(v) * scale) for t, v in series["values"]
                      if v not in ("NaN", "+Inf", "-Inf")]
            if points:
                xs, ys = gaps_broken(points, window.step)
                ax.plot(xs, ys, linewidth=1.3, label=legend(target.get("legendFormat", ""), series["metric"]))
                lines += 1
    ax.set_title(panel.get("title", ""), fontsize=10, loc="left")
    ax.set_ylabel(label, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.set_xlim(datetime.fromtimestamp(window.start, UTC), datetime.fromtimestamp(window.end, UTC))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=UTC))
    if lines:
        ax.legend(fontsize=6.5, loc="upper left", ncol=2 if lines > 4 else 1, framealpha=0.7)
    else:
        ax.text(0.5, 0.5, "no data in this window", ha="center", va="center", transform=ax.transAxes,
                fontsize=9, color="grey")
    return lines > 0


def plot(base: str, dashboard: Path, out: Path, window: Window) -> int:
    board = dashboards.load(dashboard)
    panels = [p for p in board.get("panels", []) if p.get("type") == "timeseries"]
    cols = 3
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 6.4, rows * 3.3), squeeze=False)
    with httpx.Client(timeout=30) as client:
        drawn = sum(draw_panel(ax, client, base, panel, window) for ax, panel in zip(axes.flat, panels, strict=False))
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    when = (f"{datetime.fromtimestamp(window.start, UTC):%Y-%m-%d %H:%M}-"
            f"{datetime.fromtimestamp(window.end, UTC):%H:%M} UTC")
    fig.suptitle(f"{board.get('title', dashboard.name)}: the dashboard's panel queries run against a real "
                 f"Prometheus ({when}), plotted with matplotlib (not a Grafana screenshot)", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    print(f"wrote {out}: {drawn} of {len(panels)} panels with data")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090", help="Prometheus base URL")
    parser.add_argument("--dashboard", type=Path, default=ROOT / dashboards.DASHBOARDS / "overview.json")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard-overview.png")
    parser.add_argument("--minutes", type=float, default=15, help="the time window, ending now")
    parser.add_argument("--rate-interval", default="30s", help="what $__rate_interval becomes")
    parser.add_argument("--step", type=float, default=5, help="seconds between points")
    args = parser.parse_args()
    end = time.time()
    window = Window(start=end - args.minutes * 60, end=end, step=args.step, rate_interval=args.rate_interval)
    return plot(args.prometheus.rstrip("/"), args.dashboard, args.out, window)


if __name__ == "__main__":
    sys.exit(main())
