"""The pure parts of scripts/bench_gateway.py: wrk output, SSE token counting, the figures and the docs section."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from gwbench import load, report

# wrk 4.1's report; the "+/- Stdev" column of Req/Sec ends in "...50%" right before "Latency Distribution",
# which a pattern for the 50th percentile must not take.
WRK_OUT = """Running 3s test @ http://127.0.0.1:14201/v1/chat/completions
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   311.52ms  102.17ms 702.11ms   71.40%
    Req/Sec   102.37     20.01   140.00     62.50%
  Latency Distribution
     50%  300.12ms
     75%  360.00ms
     90%  450.25ms
     99%    1.20s
  307 requests in 3.01s, 480.12KB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:    101.99
Transfer/sec:    159.51KB
"""


def test_parse_wrk_reads_percentiles_errors_and_cpu_per_request() -> None:
    run = load.parse_wrk(WRK_OUT, cpu_s=3.07)
    assert run["rps"] == pytest.approx(101.99)
    assert run["p50_ms"] == pytest.approx(300.12)
    assert run["p99_ms"] == pytest.approx(1200.0)
    assert run["requests"] == 307
    assert run["errors"] == 4 + 3
    assert run["cpu_ms"] == pytest.approx(10.0)


def test_parse_wrk_in_microseconds_and_without_errors() -> None:
    out = WRK_OUT.replace("300.12ms", "77.00us").replace("  Socket errors: connect 0, read 2, write 0, timeout 1\n", "")
    out = out.replace("  Non-2xx or 3xx responses: 4\n", "")
    run = load.parse_wrk(out, cpu_s=0.0)
    assert run["p50_ms"] == pytest.approx(0.077)
    assert run["errors"] == 0


def test_parse_wrk_refuses_unexpected_output() -> None:
    with pytest.raises(RuntimeError, match="unexpected wrk output"):
        load.parse_wrk("unable to connect to 127.0.0.1:14201 Connection refused", cpu_s=0.0)


def test_lua_script_quotes_body_and_headers() -> None:
    lua = load._lua({"messages": [{"content": 'say "hi"'}]}, {"Authorization": "Bearer k\\1"})
    assert 'wrk.body = "{\\"messages\\": [{\\"content\\": \\"say \\\\\\"hi\\\\\\"\\"}]}"' in lua
    assert 'wrk.headers["Authorization"] = "Bearer k\\\\1"' in lua


def test_events_count_token_chunks_across_reads() -> None:
    events = load._Events()
    stream = (b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\n'
              b'data: {"choices":[{"delta":{"content":"lorem"}}]}\n\n'
              b'data: {"choices":[{"delta":{"content":" ipsum"}}]}\n\n'
              b'data: {"choices":[],"usage":{"completion_tokens":2}}\n\ndata: [DONE]\n\n')
    counts = [events.tokens(stream[i:i + 7]) for i in range(0, len(stream), 7)]
    assert sum(counts) == 2
    assert events.buf == b""


def _results() -> report.Results:
    res = report.Results(routes=["direct", report.BASELINE, report.OURS, report.OURS2],
                         latency_routes=["direct", report.BASELINE, report.OURS])
    for direct, bare, ours in ((0.1, 9.0, 8.0), (0.2, 11.0, 9.0), (0.1, 10.0, 12.0)):
        res.add("direct", "c1", {"p50_ms": direct, "p99_ms": direct * 2})
        res.add(report.BASELINE, "c1", {"p50_ms": bare, "p99_ms": bare * 2})
        res.add(report.OURS, "c1", {"p50_ms": ours, "p99_ms": ours * 2})
    for route, rps, cpu, chunk in ((report.BASELINE, 100.0, 9.0, 0.4), (report.OURS, 110.0, 8.1, 0.3),
                                   (report.OURS2, 200.0, 8.5, 0.3)):
        res.add(route, "c32", {"rps": rps, "cpu_ms": cpu, "p50_ms": 1.0, "p99_ms": 2.0})
        res.add(route, "relay", {"tokens_per_s": 1000.0, "cpu_per_chunk_ms": chunk})
    return res


def test_added_is_the_median_of_same_round_differences() -> None:
    res = _results()
    assert res.added(report.OURS, "c1", "p50_ms") == pytest.approx(8.8)  # 7.9, 8.8, 11.9
    assert math.isnan(res.added("nowhere", "c1", "p50_ms"))


def test_goals_compare_our_stack_with_bare_litellm() -> None:
    res = _results()
    res.ttft = {"direct": [[2.0, 2.0]], report.OURS: [[4.0, 4.5]]}
    res.peak_rss = {report.OURS: 300 * 2**20, report.OURS_OFF: 400 * 2**20}
    goals = {g: (measured, met) for g, _, measured, met in report.goals(res)}
    assert goals["CPU per streamed chunk, our stack (relay lane)"] == ("0.300 ms", False)
    assert goals["CPU per request, our stack / bare LiteLLM (c=32)"] == ("0.90", False)
    assert goals["added TTFT p50 over direct, our stack"] == ("+2.25 ms", True)
    assert goals["tokens/s relayed, our stack / bare LiteLLM"] == ("1.00", False)
    assert goals["peak RSS, our stack / lane off"] == ("0.75", True)
    assert goals["requests/s at c=32, our stack 2 workers / 1 worker"] == ("1.82", True)


def test_tables_mark_what_a_path_did_not_measure() -> None:
    text = report.tables(_results(), connections=32, streams=64)
    assert f"| {report.OURS2} | - | - |" in text  # no c=1 run for the 2-worker variant
    assert "| goal | target | measured | met |" in text


def test_write_section_replaces_only_its_own_section(tmp_path: Path) -> None:
    bench = tmp_path / "benchmarks.md"
    bench.write_text(f"# Benchmarks\n\n## Other\n\nkept\n\n{report.SECTION}\n\nold\n\n## Gateway tuning\n\nmine too\n")
    report.write_section(bench, f"{report.SECTION}\n\nnew\n")
    text = bench.read_text()
    assert "old" not in text
    assert text.index("## Other") < text.index("new") < text.index("## Gateway tuning")
    assert "kept" in text
    assert "mine too" in text


def test_two_worker_goal_shows_bare_litellms_scaling_when_measured() -> None:
    res = _results()
    res.add(report.BASELINE2, "c32", {"rps": 190.0, "cpu_ms": 9.5, "p50_ms": 1.0, "p99_ms": 2.0})
    goals = {g: (measured, met) for g, _, measured, met in report.goals(res)}
    assert goals["requests/s at c=32, our stack 2 workers / 1 worker"] == ("1.82 (bare LiteLLM: 1.90)", True)
