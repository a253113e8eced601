"""The gateway benchmark's figures: medians over rounds with their spread, the goals, a markdown section
and a PNG plot."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchdoc

Run = dict[str, float]
SECTION = "## Gateway overhead: direct, nginx hop, bare LiteLLM, our stack"
BASELINE, OURS, OURS2 = "bare LiteLLM", "our stack", "our stack, 2 workers"
OURS_OFF = "our stack, lane off"  # RELAY_LANE=off: every request through LiteLLM
BASELINE2 = "bare LiteLLM, 2 workers"


@dataclass
class Results:
    """results[route][measure] = one entry per round (ttft: the samples of that round)."""

    routes: list[str]
    latency_routes: list[str]
    runs: dict[str, dict[str, list[Run]]] = field(default_factory=dict)
    ttft: dict[str, list[list[float]]] = field(default_factory=dict)
    peak_rss: dict[str, int] = field(default_factory=dict)

    def add(self, route: str, measure: str, run: Run) -> None:
        self.runs.setdefault(route, {}).setdefault(measure, []).append(run)

    def values(self, route: str, measure: str, key: str) -> list[float]:
        return [r[key] for r in self.runs.get(route, {}).get(measure, [])]

    def med(self, route: str, measure: str, key: str) -> float:
        vals = self.values(route, measure, key)
        return statistics.median(vals) if vals else math.nan

    def added(self, route: str, measure: str, key: str, base: str = "direct") -> float:
        """Median over rounds of (route - base) in the same round."""
        pairs = zip(self.values(route, measure, key), self.values(base, measure, key), strict=False)
        diffs = [a - b for a, b in pairs]
        return statistics.median(diffs) if diffs else math.nan

    def ttft_round_medians(self, route: str) -> list[float]:
        return [statistics.median(samples) for samples in self.ttft.get(route, []) if samples]

    def ttft_added(self, route: str) -> float:
        pairs = zip(self.ttft_round_medians(route), self.ttft_round_medians("direct"), strict=False)
        diffs = [a - b for a, b in pairs]
        return statistics.median(diffs) if diffs else math.nan

    def ttft_p90(self, route: str) -> float:
        pooled = [x for samples in self.ttft.get(route, []) for x in samples]
        return statistics.quantiles(pooled, n=10)[-1] if len(pooled) >= 2 else math.nan

    def errors(self) -> dict[str, float]:
        found: dict[str, float] = {}
        for route, measures in self.runs.items():
            total = sum(run.get("errors", 0.0) for runs in measures.values() for run in runs)
            if total:
                found[route] = total
        return found


def spread(vals: Sequence[float], fmt: Callable[[float], str]) -> str:
    if not vals:
        return "-"
    mid = fmt(statistics.median(vals))
    return mid if len(vals) == 1 else f"{mid} ({fmt(min(vals))}-{fmt(max(vals))})"


def _f(digits: int) -> Callable[[float], str]:
    return lambda x: "-" if math.isnan(x) else f"{x:,.{digits}f}"


def goals(res: Results) -> list[tuple[str, str, str, bool | None]]:
    """(goal, target, measured, met): the relay lane's goals (issue 19), and the 2-worker scaling."""
    chunk = res.med(OURS, "relay", "cpu_per_chunk_ms")
    cpu_ratio = res.med(OURS, "c32", "cpu_ms") / res.med(BASELINE, "c32", "cpu_ms")
    ttft = res.ttft_added(OURS)
    relay_ratio = res.med(OURS, "relay", "tokens_per_s") / res.med(BASELINE, "relay", "tokens_per_s")
    rss, rss_off = res.peak_rss.get(OURS, 0), res.peak_rss.get(OURS_OFF, 0)
    scale = res.med(OURS2, "c32", "rps") / res.med(OURS, "c32", "rps")
    bare_scale = res.med(BASELINE2, "c32", "rps") / res.med(BASELINE, "c32", "rps")
    same_for_bare = "" if math.isnan(bare_scale) else f" (bare LiteLLM: {bare_scale:.2f})"

    def met(value: float, ok: bool) -> bool | None:
        return None if math.isnan(value) else ok

    rows: list[tuple[str, str, str, bool | None]] = [
        ("CPU per streamed chunk, our stack (relay lane)", "<= 0.1 ms", f"{chunk:.3f} ms", met(chunk, chunk <= 0.1)),
        ("CPU per request, our stack / bare LiteLLM (c=32)", "<= 0.3 (stretch 0.1)", f"{cpu_ratio:.2f}",
         met(cpu_ratio, cpu_ratio <= 0.3)),
        ("added TTFT p50 over direct, our stack", "<= 3 ms", f"{ttft:+.2f} ms", met(ttft, ttft <= 3.0)),
        ("tokens/s relayed, our stack / bare LiteLLM", ">= 5", f"{relay_ratio:.2f}",
         met(relay_ratio, relay_ratio >= 5.0)),
    ]
    if rss and rss_off:
        rows.append(("peak RSS, our stack / lane off", "<= 1.0", f"{rss / rss_off:.2f}", rss <= rss_off))
    rows.append(("requests/s at c=32, our stack 2 workers / 1 worker", ">= 1.8", f"{scale:.2f}{same_for_bare}",
                 met(scale, scale >= 1.8)))
    return rows


def tables(res: Results, connections: int, streams: int) -> str:
    ms2, n0 = _f(2), _f(0)

    def pair(route: str, measure: str, added: bool) -> str:
        if not res.values(route, measure, "p50_ms") or (added and route == "direct"):
            return "-"
        if added:
            return f"{res.added(route, measure, 'p50_ms'):+.2f} / {res.added(route, measure, 'p99_ms'):+.2f}"
        return f"{ms2(res.med(route, measure, 'p50_ms'))} / {ms2(res.med(route, measure, 'p99_ms'))}"

    lat = [f"| path | c=1 p50 / p99 (ms) | added at c=1 | c={connections} p50 / p99 (ms) | added at c={connections} | "
           "TTFT p50 / p90 (ms) | added TTFT p50 |", "|---|---|---|---|---|---|---|"]
    for route in res.routes:
        ttfts = res.ttft_round_medians(route)
        ttft = f"{ms2(statistics.median(ttfts))} / {ms2(res.ttft_p90(route))}" if ttfts else "-"
        added_ttft = "-" if route == "direct" or not ttfts else f"{res.ttft_added(route):+.2f}"
        lat.append(f"| {route} | {pair(route, 'c1', False)} | {pair(route, 'c1', True)} | "
                   f"{pair(route, 'c32', False)} | {pair(route, 'c32', True)} | {ttft} | {added_ttft} |")
    base_cpu = res.med(BASELINE, "c32", "cpu_ms")
    cap = [f"| path | requests/s, c={connections} | gateway CPU per request (ms) | vs bare LiteLLM | "
           f"tokens/s, {streams} streams | gateway CPU per chunk (ms) | peak RSS (MB) |",
           "|---|---|---|---|---|---|---|"]
    for route in res.routes:
        gateway = route != "direct"
        rss = res.peak_rss.get(route)
        cap.append(
            f"| {route} | {spread(res.values(route, 'c32', 'rps'), n0)} | "
            + (spread(res.values(route, "c32", "cpu_ms"), ms2) if gateway else "-") + " | "
            + (_ratio(res.med(route, "c32", "cpu_ms") / base_cpu) if gateway else "-") + " | "
            + spread(res.values(route, "relay", "tokens_per_s"), n0) + " | "
            + (spread(res.values(route, "relay", "cpu_per_chunk_ms"), _f(3)) if gateway else "-") + " | "
            + (f"{rss / 2**20:,.0f}" if gateway and rss else "-") + " |")
    goal = ["| goal | target | measured | met |", "|---|---|---|---|"]
    goal += [f"| {g} | {t} | {m} | {'?' if ok is None else ('yes' if ok else 'no')} |" for g, t, m, ok in goals(res)]
    return "\n".join(lat) + "\n\n" + "\n".join(cap) + "\n\n" + "\n".join(goal)


def plot(res: Results, path: Path, connections: int, streams: int, title: str) -> None:
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    names = res.routes
    gateways = [r for r in names if r != "direct"]

    def bars(ax: Any, labels: list[str], *, measure: str, key: str, ylabel: str, heading: str,
             log: bool = False) -> None:
        meds = [res.med(r, measure, key) for r in labels]
        lows = [m - min(res.values(r, measure, key), default=m) for r, m in zip(labels, meds, strict=True)]
        highs = [max(res.values(r, measure, key), default=m) - m for r, m in zip(labels, meds, strict=True)]
        drawn = ax.bar(range(len(labels)), meds, yerr=[lows, highs], capsize=4, color="#4c72b0")
        ax.bar_label(drawn, labels=[_short(m) for m in meds], fontsize=8, padding=2)
        ax.set_xticks(range(len(labels)), [r.replace(", ", ",\n") for r in labels], fontsize=8)
        if log:
            ax.set_yscale("log")
        ax.set_ylabel(ylabel + (" (log scale)" if log else ""))
        ax.margins(y=0.12)
        ax.set_title(heading, fontsize=10)

    bars(axes[0][0], names, measure="c32", key="rps", ylabel="requests/s",
         heading=f"Throughput, non-streaming, c={connections}", log=True)
    bars(axes[0][1], gateways, measure="c32", key="cpu_ms", ylabel="ms of CPU", heading="Gateway CPU per request")
    bars(axes[1][0], names, measure="relay", key="tokens_per_s", ylabel="tokens/s",
         heading=f"Streaming relay, {streams} streams", log=True)
    bars(axes[1][1], gateways, measure="relay", key="cpu_per_chunk_ms", ylabel="ms of CPU",
         heading="Gateway CPU per streamed chunk")
    axes[1][1].axhline(0.1, color="#c44e52", linestyle="--", linewidth=1, label="goal: 0.1 ms")
    axes[1][1].legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _ratio(x: float) -> str:
    return "-" if math.isnan(x) else (f"{x:.2f}" if x >= 0.01 else "<0.01")


def _short(x: float) -> str:
    if math.isnan(x):
        return "-"
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def write_section(bench: Path, text: str) -> None:
    """Replace this benchmark's section where it is (append it the first time); other sections stay."""
    benchdoc.write_section(SECTION, text, bench)
