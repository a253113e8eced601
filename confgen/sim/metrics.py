"""`/metrics` in Prometheus text format, with the `vllm:` names and `model_name` label gateways scrape."""

from __future__ import annotations

import bisect
from collections import Counter

TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
               480.0, 960.0, 1920.0, 7680.0)


class Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value

    def lines(self, name: str, label: str) -> list[str]:
        out, total = [], 0
        for bound, count in zip((*self.buckets, "+Inf"), self.counts, strict=True):
            total += count
            out.append(f'{name}_bucket{{{label},le="{bound}"}} {total}')
        out += [f"{name}_count{{{label}}} {total}", f"{name}_sum{{{label}}} {self.sum}"]
        return out


class Metrics:
    def __init__(self, model_name: str, max_num_seqs: int) -> None:
        self.label = f'model_name="{model_name}"'
        self.max_num_seqs = max_num_seqs
        self.running = 0
        self.waiting = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.success: Counter[str] = Counter()
        self.ttft = Histogram(TTFT_BUCKETS)
        self.e2e = Histogram(E2E_BUCKETS)

    def finished(self, reason: str, prompt_tokens: int, generated: int, e2e_s: float) -> None:
        self.success[reason] += 1
        self.prompt_tokens += prompt_tokens
        self.generation_tokens += generated
        self.e2e.observe(e2e_s)

    def render(self) -> str:
        label = self.label
        lines = [
            "# HELP vllm:num_requests_running Number of requests in model execution batches.",
            "# TYPE vllm:num_requests_running gauge",
            f"vllm:num_requests_running{{{label}}} {self.running}",
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
            "# TYPE vllm:num_requests_waiting gauge",
            f"vllm:num_requests_waiting{{{label}}} {self.waiting}",
            "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.",
            "# TYPE vllm:kv_cache_usage_perc gauge",
            f"vllm:kv_cache_usage_perc{{{label}}} {self.running / self.max_num_seqs}",
            "# HELP vllm:prompt_tokens_total Number of prefill tokens processed.",
            "# TYPE vllm:prompt_tokens_total counter",
            f"vllm:prompt_tokens_total{{{label}}} {self.prompt_tokens}",
            "# HELP vllm:generation_tokens_total Number of generation tokens processed.",
            "# TYPE vllm:generation_tokens_total counter",
            f"vllm:generation_tokens_total{{{label}}} {self.generation_tokens}",
            "# HELP vllm:request_success_total Count of successfully processed requests.",
            "# TYPE vllm:request_success_total counter",
        ]
        for reason in sorted({"stop", "length", *self.success}):
            lines.append(f'vllm:request_success_total{{finished_reason="{reason}",{label}}} {self.success[reason]}')
        lines += ["# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.",
                  "# TYPE vllm:time_to_first_token_seconds histogram",
                  *self.ttft.lines("vllm:time_to_first_token_seconds", label),
                  "# HELP vllm:e2e_request_latency_seconds Histogram of end to end request latency in seconds.",
                  "# TYPE vllm:e2e_request_latency_seconds histogram",
                  *self.e2e.lines("vllm:e2e_request_latency_seconds", label)]
        return "\n".join(lines) + "\n"
