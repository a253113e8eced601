"""Load for the gateway benchmark: wrk for request throughput and latency, an asyncio httpx client for
streams (time to first token, relay capacity). Both read the server's CPU time around the measured window."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import orjson

CHAT = {"model": "tiny-cpu", "messages": [{"role": "user", "content": "hello there, how are you"}]}


@dataclass(frozen=True)
class Target:
    """One path's endpoint as clients see it."""

    url: str  # the chat completions URL
    headers: dict[str, str]
    verify: ssl.SSLContext | bool = False


def _lua(body: dict[str, object], headers: dict[str, str]) -> str:
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_string(json.dumps(body))}",
             'wrk.headers["Content-Type"] = "application/json"']
    lines += [f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()]
    return "\n".join(lines) + "\n"


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def wrk(target: Target, body: dict[str, object], connections: int, seconds: float,
        cpu: Callable[[], float]) -> dict[str, float]:
    """One wrk run (1 thread): requests/s, p50/p99 latency, non-2xx and socket errors, server CPU per request."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_lua(body, target.headers))
    try:
        before = cpu()
        done = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "10s",
                               "-s", script.name, target.url], capture_output=True, text=True,
                              timeout=seconds + 60, check=False)
        used = cpu() - before
    finally:
        os.unlink(script.name)
    if done.returncode:
        raise RuntimeError(f"wrk failed ({done.returncode}) on {target.url}:\n{done.stderr or done.stdout}")
    return parse_wrk(done.stdout, used)


def parse_wrk(out: str, cpu_s: float) -> dict[str, float]:
    def grab(pattern: str) -> str:
        found = re.search(pattern, out, re.MULTILINE)
        if found is None:
            raise RuntimeError(f"unexpected wrk output (no {pattern!r}):\n{out}")
        return found.group(1)

    total = int(grab(r"(\d+) requests in"))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(bad.group(1)) if bad else 0) + (sum(int(g) for g in sock.groups()) if sock else 0)
    return {"rps": float(grab(r"Requests/sec:\s+([\d.]+)")), "p50_ms": _ms(grab(r"^\s+50%\s+(\S+)")),
            "p99_ms": _ms(grab(r"^\s+99%\s+(\S+)")), "requests": float(total), "errors": float(errors),
            "cpu_ms": cpu_s / max(total, 1) * 1000}


def _ms(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if found is None:
        raise RuntimeError(f"unexpected wrk latency {text!r}")
    return float(found.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60e3, "h": 3600e3}[found.group(2)]


def _stream_body(max_tokens: int) -> dict[str, object]:
    return {**CHAT, "stream": True, "stream_options": {"include_usage": True}, "max_tokens": max_tokens}


class _Events:
    """Splits an SSE byte stream into events and counts the ones that carry a token."""

    def __init__(self) -> None:
        self.buf = b""

    def tokens(self, data: bytes) -> int:
        self.buf += data
        count = 0
        while (end := self.buf.find(b"\n\n")) >= 0:
            event, self.buf = self.buf[:end], self.buf[end + 2:]
            if event.startswith(b"data: {"):
                choices = orjson.loads(event[6:]).get("choices") or [{}]
                count += bool((choices[0].get("delta") or {}).get("content"))
        return count


async def _one_stream(client: httpx.AsyncClient, target: Target, body: dict[str, object],
                      on_tokens: Callable[[int], None]) -> float | None:
    """One streamed request; returns seconds to the first token (None: no token came)."""
    start = time.perf_counter()
    first = None
    events = _Events()
    async with client.stream("POST", target.url, json=body, headers=target.headers) as resp:
        if resp.status_code != 200:
            await resp.aread()
            raise RuntimeError(f"HTTP {resp.status_code} from {target.url}: {resp.text[:200]}")
        async for data in resp.aiter_raw():
            n = events.tokens(data)
            if n:
                if first is None:
                    first = time.perf_counter() - start
                on_tokens(n)
    return first


def ttft(target: Target, requests: int, max_tokens: int = 4) -> list[float]:
    """Time to first token (ms) of `requests` streams, one after another on one kept-alive connection."""

    async def run() -> list[float]:
        async with httpx.AsyncClient(verify=target.verify, timeout=30) as client:
            found = []
            for _ in range(requests):
                first = await _one_stream(client, target, _stream_body(max_tokens), lambda n: None)
                if first is None:
                    raise RuntimeError(f"a stream from {target.url} carried no token")
                found.append(first * 1000)
            return found

    return asyncio.run(run())


def relay(target: Target, streams: int, *, max_tokens: int, warmup_s: float, seconds: float,
          cpu: Callable[[], float]) -> dict[str, float]:
    """`streams` concurrent streams, each started again when it ends. The first starts are spread evenly over
    `warmup_s`, so the streams do not begin and end in step (in step, a window could fall on the moment every
    stream is being set up, or on the one where they all stream, and the figure would swing 5x between runs).
    After `warmup_s`, a window of `seconds`: tokens delivered per second, the server's CPU per token chunk, the
    client's own CPU."""

    async def run() -> dict[str, float]:
        tokens = 0
        errors = 0

        def add(n: int) -> None:
            nonlocal tokens
            tokens += n

        async def worker(client: httpx.AsyncClient, delay_s: float) -> None:
            nonlocal errors
            await asyncio.sleep(delay_s)
            while True:
                try:
                    await _one_stream(client, target, _stream_body(max_tokens), add)
                except (httpx.HTTPError, RuntimeError):
                    errors += 1
                    await asyncio.sleep(0.05)

        limits = httpx.Limits(max_connections=streams, max_keepalive_connections=streams)
        async with httpx.AsyncClient(verify=target.verify, timeout=60, limits=limits) as client:
            tasks = [asyncio.create_task(worker(client, i * warmup_s / streams)) for i in range(streams)]
            await asyncio.sleep(warmup_s)
            t0, tok0, err0 = time.perf_counter(), tokens, errors
            cpu0, client0 = cpu(), time.thread_time()
            await asyncio.sleep(seconds)
            elapsed = time.perf_counter() - t0
            used, client_used = cpu() - cpu0, time.thread_time() - client0
            got, failed = tokens - tok0, errors - err0
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return {"tokens_per_s": got / elapsed, "cpu_per_chunk_ms": used / max(got, 1) * 1000,
                "server_cpu_share": used / elapsed, "client_cpu_share": client_used / elapsed, "errors": float(failed)}

    return asyncio.run(run())
