"""Slots, the queue beyond --max-num-seqs, and the timed delivery of one answer."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from confgen.sim import latency, shapes
from confgen.sim.asgi import JSON, SSE, Receive, Send
from confgen.sim.config import Faults, SimConfig
from confgen.sim.metrics import Metrics
from confgen.sim.parse import SimRequest

# Waits longer than this also watch for the client going away; shorter ones just sleep (cheaper).
WATCHED_WAIT_S = 0.05


@dataclass
class Stats:
    """What `/sim/stats` reports: inference requests only (not health checks or metrics scrapes)."""

    requests: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)  # chat, completion, responses: which API was called
    in_flight: int = 0
    hung: int = 0
    dropped: int = 0
    aborted: int = 0  # the client went away before the answer was complete

    def reset(self) -> None:
        in_flight = self.in_flight
        self.__init__()  # type: ignore[misc]
        self.in_flight = in_flight

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
                "by_kind": dict(sorted(self.by_kind.items())), "in_flight": self.in_flight, "hung": self.hung,
                "dropped": self.dropped, "aborted": self.aborted}


class Engine:
    def __init__(self, config: SimConfig, faults: Faults) -> None:
        self.config = config
        self.faults = faults
        self.rng = random.Random(config.seed)  # noqa: S311 - timing and fault draws, not secrets
        self.metrics = Metrics(config.model_name, config.max_num_seqs)
        self.stats = Stats()
        self._slots: asyncio.Semaphore | None = None

    @property
    def slots(self) -> asyncio.Semaphore:
        if self._slots is None:  # created inside the running loop
            self._slots = asyncio.Semaphore(self.config.max_num_seqs)
        return self._slots

    async def serve(self, req: SimRequest, arrival: float, receive: Receive, send: Send) -> None:
        """Queue for a slot, wait out the latency model and send the answer (or the stream)."""
        watch = asyncio.ensure_future(receive())  # completes when the client disconnects
        try:
            if req.stream:
                self.stats.by_status[200] += 1
                await send({"type": "http.response.start", "status": 200, "headers": SSE})
            if not await self._acquire(watch):
                self.stats.aborted += 1
                return
            self.metrics.running += 1
            try:
                await self._deliver(req, arrival, watch, send)
            finally:
                self.metrics.running -= 1
                self.slots.release()
        finally:
            watch.cancel()

    async def _acquire(self, watch: asyncio.Future[Any]) -> bool:
        if not self.slots.locked():
            await self.slots.acquire()
            return True
        self.metrics.waiting += 1
        try:
            acquire = asyncio.ensure_future(self.slots.acquire())
            await asyncio.wait((acquire, watch), return_when=asyncio.FIRST_COMPLETED)
            if acquire.done():
                return True
            acquire.cancel()
            return False
        finally:
            self.metrics.waiting -= 1

    async def _deliver(self, req: SimRequest, arrival: float, watch: asyncio.Future[Any], send: Send) -> None:
        config = self.config
        if req.tool_call is not None:
            n, finish = len(shapes.tool_tokens(req.tool_call)), "tool_calls"
        else:
            n, finish = latency.output_tokens(config, req.max_tokens), latency.finish_reason(config, req.max_tokens)
        first_due = time.monotonic() + latency.ttft_s(config, req.prompt_tokens, self.rng)
        deliver = self._stream if req.stream else self._whole
        if await deliver(req, (n, finish), first_due, arrival, watch=watch, send=send):
            self.metrics.finished("length" if finish == "length" else "stop", req.prompt_tokens, n,
                                  time.monotonic() - arrival)

    async def _whole(self, req: SimRequest, answer: tuple[int, str], due: float, arrival: float,
                     *, watch: asyncio.Future[Any], send: Send) -> bool:
        n, finish = answer
        due += sum(latency.itl_s(self.config, self.rng) for _ in range(n - 1))
        if not await _wait_until(due, watch):
            self.stats.aborted += 1
            return False
        self.metrics.ttft.observe(time.monotonic() - arrival)
        self.stats.by_status[200] += 1
        if self.faults.drop_after_chunks is not None:
            self.stats.dropped += 1
            await send({"type": "http.response.start", "status": 200, "headers": JSON})
            return False  # uvicorn closes the connection: the body never comes
        body = orjson.dumps(shapes.full_body(req, shapes.new_id(req.kind), int(time.time()), n, finish))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [*JSON, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        return True

    async def _stream(self, req: SimRequest, answer: tuple[int, str], due: float, arrival: float,
                      *, watch: asyncio.Future[Any], send: Send) -> bool:
        n, finish = answer
        if not await _wait_until(due, watch):
            self.stats.aborted += 1
            return False
        self.metrics.ttft.observe(time.monotonic() - arrival)
        drop, current = self.faults.drop_after_chunks, 0
        events = shapes.stream(req, shapes.new_id(req.kind), int(time.time()), n, finish)
        for sent, (index, data) in enumerate(events):
            while current < index:
                current += 1
                due += latency.itl_s(self.config, self.rng)
                if not await _wait_until(due, watch):
                    self.stats.aborted += 1
                    return False
            if drop is not None and sent >= drop:
                self.stats.dropped += 1
                return False  # uvicorn closes the connection mid-stream
            await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return True


async def _wait_until(due: float, watch: asyncio.Future[Any]) -> bool:
    """Wait until the monotonic time `due`; False when the client went away."""
    delay = due - time.monotonic()
    if delay > WATCHED_WAIT_S:
        await asyncio.wait((watch,), timeout=delay)
    elif delay > 0:
        await asyncio.sleep(delay)
    return not watch.done()
