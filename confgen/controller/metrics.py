"""The controller's /metrics (Prometheus text, unauthenticated on loopback like vLLM's own): each model's
state, swaps and the time they took. Gathered at scrape time from the controller, so nothing is kept twice."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from confgen.controller.core import Controller

STATES = ("stopped", "starting", "ready", "sleeping", "waking", "stopping", "failed")
SWAP_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class _Collector(Collector):
    def __init__(self, controller: Controller) -> None:
        self.controller = controller

    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily("confgen_model_state", "1 for the state each on-demand model is in",
                                  labels=["model", "state"])
        for name, slot in self.controller.slots.items():
            for value in STATES:
                state.add_metric([name, value], 1.0 if slot.state == value else 0.0)
        yield state
        yield CounterMetricFamily("confgen_model_swaps", "Models made ready on demand", value=self.controller.swaps)
        seconds = self.controller.swap_seconds
        buckets = [(str(b), float(sum(s <= b for s in seconds))) for b in SWAP_BUCKETS]
        yield HistogramMetricFamily("confgen_model_swap_seconds", "Time to make a model ready, evictions included",
                                    buckets=[*buckets, ("+Inf", float(len(seconds)))], sum_value=sum(seconds))


def render(controller: Controller) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(controller))
    return generate_latest(registry)
