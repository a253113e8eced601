"""The lifecycle of each on-demand model server on this host, owned through one runner.

States: stopped -> starting -> ready; ready -> stopping -> sleeping | stopped; sleeping -> waking -> ready;
a server that fails to start, or dies, is `failed` (the next request starts it cold). Loads run one at a
time, model by model, so waiting requests are served AABB, not ABAB: the model whose waiters include the best
priority (lower first, as vLLM's request priority) goes next, then the one asked for first.
Whether a model is busy is read from its server's own metrics (vllm:num_requests_running and _waiting, as
vLLM exports them), so the gateway makes no call here for a model that is ready.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from confgen.controller.evict import Resident, plan_eviction
from confgen.controller.plan import OnDemandPlan
from confgen.runtime.runner import LocalRunner, Runner, ServerSpec, tail

log = logging.getLogger("confgen.controller")
RESIDENT = frozenset({"starting", "ready", "sleeping", "waking", "stopping"})
_BUSY = ("vllm:num_requests_running", "vllm:num_requests_waiting")
_DONE = "vllm:request_success_total"
# A model that failed to start is not tried again for this long: each request for it would otherwise evict
# the working models again, only to fail again.
FAILED_BACKOFF_S = 30.0


class LoadFailed(Exception):
    """A model that cannot be made ready: the message names it and why; the gateway answers 503."""

    def __init__(self, message: str, retry_after_s: int = 10) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


@dataclass
class Slot:
    name: str
    spec: ServerSpec
    state: str = "stopped"
    handle: Any = None  # the runner's handle of its server (a Proc, a ContainerHandle), None when it has none
    level: int = 0  # sleep level while sleeping
    since: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)
    in_flight: int = 0
    done: float = 0.0  # the server's count of finished requests, last seen
    error: str = ""
    failed_start: float | None = None  # when it last failed to start (monotonic)

    def set(self, state: str, error: str = "") -> None:
        self.state, self.since, self.error = state, time.monotonic(), error


@dataclass
class Waiting:
    """The requests waiting for one model: their best priority and when the first of them came."""

    priority: int
    seq: int
    futures: list[asyncio.Future[None]] = field(default_factory=list)


def parse_metrics(text: str) -> tuple[int, float]:
    """(requests running + waiting, requests finished) from a vLLM /metrics page."""
    busy, done = 0.0, 0.0
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in _BUSY or name == _DONE:
            try:
                value = float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                continue
            if name == _DONE:
                done += value
            else:
                busy += value
    return int(busy), done


def _idle(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


class Controller:
    def __init__(self, plan: OnDemandPlan, specs: dict[str, ServerSpec], runner: Runner[Any] | None = None, *,
                 poll_s: float = 1.0, drain_s: float = 1.5, api_key: str | None = None) -> None:
        self.plan = plan
        self.runner: Runner[Any] = runner or LocalRunner()
        self.slots = {name: Slot(name, specs[name]) for name in plan.members}
        self.by_served = {m.served_name: m.name for m in plan.members.values()}
        self.poll_s = poll_s
        self.drain_s = drain_s  # longer than the gateway's readiness refresh: no request lands mid-eviction
        self.swaps = 0
        self.swap_seconds: list[float] = []
        self.events: list[str] = []
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._queue: dict[str, Waiting] = {}
        self._arrivals = itertools.count()
        self._work = asyncio.Event()
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._http = httpx.AsyncClient(timeout=10)

    # --- the API's operations -------------------------------------------------------------------------
    def resolve(self, model: str) -> str | None:
        return model if model in self.slots else self.by_served.get(model)

    async def ensure_ready(self, name: str, timeout_s: float | None = None, priority: int = 0) -> None:
        """Return when `name` (and its group) is ready; LoadFailed when it cannot be, or not in time. `priority`
        orders the loads while one runs (lower first)."""
        slot = self.slots[name]
        slot.last_used = time.monotonic()
        if all(self.slots[n].state == "ready" for n in self.plan.group_of(name)):
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting = self._queue.get(name)
        if waiting is None:
            waiting = self._queue[name] = Waiting(priority, next(self._arrivals))
        waiting.priority = min(waiting.priority, priority)
        waiting.futures.append(future)
        self._work.set()
        limit = timeout_s if timeout_s is not None else self.plan.members[name].settings.load_timeout_s
        try:
            await asyncio.wait_for(asyncio.shield(future), limit)
        except TimeoutError:
            raise LoadFailed(f"{name} is still loading ({slot.state} for {time.monotonic() - slot.since:.0f} s); "
                             f"retry shortly", retry_after_s=max(5, round(limit / 4))) from None

    async def sleep(self, name: str, level: int = 1) -> None:
        async with self._lock:
            await self._leave(name, "sleep", "asked", level)

    async def stop(self, name: str) -> None:
        async with self._lock:
            await self._leave(name, "stop", "asked")

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        awake = [n for n, s in self.slots.items() if s.state in RESIDENT - {"sleeping"}]
        asleep = [n for n, s in self.slots.items() if s.state == "sleeping"]
        return {"gpu": self.plan.gpu.name, "swap": self.plan.swap, "swap_reason": self.plan.swap_reason,
                "budget_gb": round(self.plan.budget_gb, 2), "used_gb": round(self.plan.used_gb(awake, asleep), 2),
                "swaps": self.swaps, "swap_seconds": [round(s, 2) for s in self.swap_seconds],
                "queue": [{"model": n, "priority": self._queue[n].priority, "waiting": len(self._queue[n].futures)}
                          for n in self._in_order()],
                "models": {n: {"served_name": self.plan.members[n].served_name, "state": s.state,
                               "level": s.level if s.state == "sleeping" else None,
                               "for_s": round(now - s.since, 1), "idle_s": round(now - s.last_used, 1),
                               "in_flight": s.in_flight, "error": s.error, "url": s.spec.url,
                               "memory_gb": round(self.plan.members[n].memory_gb, 2),
                               "pin": self.plan.members[n].settings.pin}
                           for n, s in self.slots.items()}}

    def _in_order(self) -> list[str]:
        """The models waited for, the next to load first: best priority, then first asked for."""
        return sorted(self._queue, key=lambda n: (self._queue[n].priority, self._queue[n].seq))

    # --- start and stop -------------------------------------------------------------------------------
    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker()), asyncio.create_task(self._watch())]
        self._tasks += [asyncio.create_task(self._preload(name)) for name in self.plan.at_start]

    async def _preload(self, name: str) -> None:
        try:
            await self.ensure_ready(name, timeout_s=3600)
        except LoadFailed as failed:
            log.warning("preload of %s failed: %s", name, failed.message)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        handles = [s.handle for s in self.slots.values() if s.handle is not None]
        if handles:
            await asyncio.to_thread(self.runner.stop, handles)
        for slot in self.slots.values():
            slot.handle = None
            slot.set("stopped")
        await self._http.aclose()

    # --- the worker: one load at a time, model by model ------------------------------------------------
    async def _worker(self) -> None:
        while True:
            await self._work.wait()
            if not self._queue:
                self._work.clear()
                continue
            name = self._in_order()[0]
            futures = self._queue.pop(name).futures
            try:
                async with self._lock:
                    await self._make_ready(name)
            except LoadFailed as failed:
                for future in futures:
                    if not future.done():
                        future.set_exception(failed)
            except Exception as exc:  # a bug must not stop the worker: the waiters get the reason
                log.exception("loading %s failed", name)
                for future in futures:
                    if not future.done():
                        future.set_exception(LoadFailed(f"{name}: controller error: {exc}"))
            else:
                for future in futures:
                    if not future.done():
                        future.set_result(None)

    async def _make_ready(self, name: str) -> None:
        wanted = self.plan.group_of(name)
        if all(self.slots[n].state == "ready" for n in wanted):
            return
        started = time.monotonic()
        for member in wanted:
            slot = self.slots[member]
            if slot.failed_start is not None and started - slot.failed_start < FAILED_BACKOFF_S:
                wait = FAILED_BACKOFF_S - (started - slot.failed_start)
                raise LoadFailed(f"{member} failed to start {started - slot.failed_start:.0f} s ago: {slot.error}; "
                                 f"next try in {wait:.0f} s", retry_after_s=max(1, round(wait)))
        deadline = started + self.plan.in_flight_wait_s
        while True:
            await self._refresh()
            residents = [Resident(n, s.state == "sleeping", s.in_flight > 0, started - s.last_used)
                         for n, s in self.slots.items() if s.state in RESIDENT and n not in wanted]
            eviction = plan_eviction(self.plan, wanted, residents)
            if eviction.fits:
                why = f"to fit {name}: {self._after(eviction.actions, wanted):.0f} of {self.plan.budget_gb:.0f} GB"
                left = [await self._leave(victim, action, why) for victim, action in eviction.actions]
                if all(left):
                    break
                continue  # a victim got a request while it drained: plan again
            if eviction.blocked_by and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                continue
            raise LoadFailed(self._no_room(name, wanted, eviction.blocked_by), retry_after_s=30)
        for member in wanted:
            await self._bring_up(member)
        self.swaps += 1
        self.swap_seconds.append(time.monotonic() - started)
        self._event(f"{name} ready after {time.monotonic() - started:.1f} s "
                    f"({self._used()} of {self.plan.budget_gb:.0f} GB in use)")

    def _no_room(self, name: str, wanted: list[str], busy: tuple[str, ...]) -> str:
        need = self.plan.used_gb(wanted)
        if busy:
            return (f"cannot load {name} ({need:.1f} GB): {', '.join(busy)} still had requests in flight after "
                    f"{self.plan.in_flight_wait_s:.0f} s and the budget ({self.plan.budget_gb:.1f} GB on "
                    f"{self.plan.gpu.name}) holds no more; retry when they finish")
        pinned = ", ".join(self.plan.pinned) or "none"
        return (f"cannot load {name} ({need:.1f} GB): it does not fit beside the pinned models ({pinned}) in "
                f"{self.plan.budget_gb:.1f} GB on {self.plan.gpu.name}")

    def _after(self, actions: tuple[tuple[str, str], ...], wanted: list[str]) -> float:
        """GB in use once `actions` are done and `wanted` is loaded (the planner's numbers)."""
        gone = {n for n, _ in actions}
        slept = {n for n, a in actions if a == "sleep"}
        awake = {n for n, s in self.slots.items() if s.state in RESIDENT - {"sleeping"}} - gone | set(wanted)
        asleep = ({n for n, s in self.slots.items() if s.state == "sleeping"} - gone | slept) - set(wanted)
        return self.plan.used_gb(awake, asleep)

    def _used(self) -> str:
        awake = [n for n, s in self.slots.items() if s.state in RESIDENT - {"sleeping"}]
        asleep = [n for n, s in self.slots.items() if s.state == "sleeping"]
        return f"{self.plan.used_gb(awake, asleep):.1f}"

    def _event(self, text: str) -> None:
        self.events.append(text)
        log.info("%s", text)

    async def _leave(self, name: str, action: str, why: str, level: int | None = None) -> bool:
        """Sleep or stop `name` once it is idle; False when a request arrived while it drained."""
        slot = self.slots[name]
        if slot.state not in RESIDENT or (action == "sleep" and slot.state == "sleeping"):
            return True
        if slot.state == "ready":
            slot.set("stopping")  # the gateway sees "not ready" and holds new requests from now on
            await asyncio.sleep(self.drain_s)
            await self._refresh_one(slot)
            if slot.in_flight:
                slot.set("ready")
                return False
        idle = time.monotonic() - slot.last_used
        level = level or (2 if self.plan.swap == "sleep-2" else 1)
        if action == "sleep" and slot.handle is not None:
            self._event(f"sleeping {name} at level {level} (idle {_idle(idle)}) {why}")
            try:
                resp = await self._http.post(f"{slot.spec.url}/sleep", params={"level": level}, headers=self._headers)
                ok = resp.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                slot.level = level
                slot.set("sleeping")
                self._event(f"{name} sleeping: {self._used()} of {self.plan.budget_gb:.0f} GB in use")
                return True
            self._event(f"{name} did not go to sleep: stopping it instead")
        self._event(f"evicting {name} (idle {_idle(idle)}) {why}" if why.startswith("to fit") else
                    f"stopping {name} (idle {_idle(idle)}): {why}")
        await self._stop_server(slot)
        self._event(f"{name} stopped: {self._used()} of {self.plan.budget_gb:.0f} GB in use")
        return True

    async def _stop_server(self, slot: Slot) -> None:
        slot.set("stopping")
        if slot.handle is not None:
            await asyncio.to_thread(self.runner.stop, [slot.handle])
        slot.handle = None
        slot.set("stopped")

    async def _bring_up(self, name: str) -> None:
        slot = self.slots[name]
        if slot.state == "ready":
            return
        if slot.state == "sleeping" and slot.handle is not None:
            slot.set("waking")
            if await self._wake(slot):
                slot.set("ready")
                return
            self._event(f"{name} failed to wake: restarting it cold")
            await self._stop_server(slot)
        if slot.handle is not None:
            await self._stop_server(slot)
        slot.set("starting")
        self._event(f"starting {name} ({self.plan.members[name].memory_gb:.1f} GB)")
        slot.handle = await asyncio.to_thread(self.runner.start, slot.spec)
        timeout = self.plan.members[name].settings.load_timeout_s
        why = await self._wait_healthy(slot, timeout)
        if why:
            await self._stop_server(slot)
            slot.set("failed", why)
            slot.failed_start = time.monotonic()
            self._event(f"{name} failed: {why}")
            raise LoadFailed(f"{name} failed to start: {why}", retry_after_s=30)
        slot.last_used = time.monotonic()
        slot.failed_start = None
        slot.set("ready")

    async def _wake(self, slot: Slot) -> bool:
        """vLLM's sleep API (docs.vllm.ai "Sleep Mode"): wake_up; after level 2 the weights are reloaded."""
        base = slot.spec.url
        try:
            resp = await self._http.post(f"{base}/wake_up", headers=self._headers)
            if resp.status_code != 200:
                return False
            if slot.level == 2:
                await self._http.post(f"{base}/collective_rpc", json={"method": "reload_weights"},
                                      headers=self._headers)
                await self._http.post(f"{base}/reset_prefix_cache", headers=self._headers)
            return not await self._wait_healthy(slot, 30)
        except httpx.HTTPError:
            return False

    async def _wait_healthy(self, slot: Slot, timeout_s: float) -> str:
        """'' once /health answers 200; else why not (the server exited, or the time ran out)."""
        end = time.monotonic() + timeout_s
        assert slot.handle is not None  # noqa: S101 - started by the caller
        while time.monotonic() < end:
            if await asyncio.to_thread(self.runner.status, slot.handle) == "exited":  # a container: docker inspect
                code = await asyncio.to_thread(self.runner.exit_code, slot.handle)
                last = [line.strip() for line in tail(slot.spec.log, 40).splitlines() if line.strip()]
                reason = next((line for line in reversed(last) if "Error" in line), last[-1] if last else "")
                return f"exited with code {code} during start-up: {reason[:300]} (log: {slot.spec.log})"
            try:
                if (await self._http.get(f"{slot.spec.url}{slot.spec.health_path}", timeout=2)).status_code == 200:
                    return ""
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
        return f"not healthy after {timeout_s:.0f} s (log: {slot.spec.log})"

    # --- watching: idle times, crashes, ttl ------------------------------------------------------------
    async def _refresh_one(self, slot: Slot) -> None:
        if slot.state not in {"ready", "stopping"} or slot.handle is None:
            return
        try:
            resp = await self._http.get(f"{slot.spec.url}/metrics", timeout=2, headers=self._headers)
        except httpx.HTTPError:
            return
        busy, done = parse_metrics(resp.text)
        if busy or done != slot.done:
            slot.last_used = time.monotonic()
        slot.in_flight, slot.done = busy, done

    async def _refresh(self) -> None:
        await asyncio.gather(*(self._refresh_one(s) for s in self.slots.values()))

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self._watch_once()
            except Exception:  # keep watching; the log says what broke
                log.exception("watch failed")

    async def _watch_once(self) -> None:
        await self._refresh()
        now = time.monotonic()
        for slot in self.slots.values():
            if slot.state in {"ready", "sleeping"} and slot.handle is not None \
                    and await asyncio.to_thread(self.runner.status, slot.handle) == "exited":
                slot.handle = None
                slot.set("failed", f"exited while {slot.state}")
                self._event(f"{slot.name} exited while {slot.state}: it starts again on the next request")
        for name, slot in self.slots.items():
            settings = self.plan.members[name].settings
            if slot.state == "ready" and settings.ttl and not settings.pin and not slot.in_flight \
                    and now - slot.last_used >= settings.ttl and not self._lock.locked():
                async with self._lock:
                    if slot.state == "ready" and not slot.in_flight:
                        await self._leave(name, "sleep" if self.plan.swap != "stop" else "stop",
                                          f"ttl {settings.ttl:.0f} s expired")
