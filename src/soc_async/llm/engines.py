"""Several managed vLLM engines: staggered starts, bounded restarts, one endpoints file.

:class:`EngineGroup` owns the servers of an :class:`~soc_async.llm.plan.EnginePlan`.
Nothing here blocks for long: :meth:`EngineGroup.poll` makes one round of decisions
(start the next engine when its turn comes, notice one that became ready or died,
restart one whose delay is over) and returns; ``soc-async serve`` calls it in its
foreground loop, a run from a worker thread beside its event loop.

Each engine is a small state machine (:class:`EngineState`, moves in :data:`MOVES`):

    WAITING --start--> STARTING --/health 200--> READY
       STARTING / READY --exit, start timeout--> BACKOFF --delay--> STARTING
       any --more than max_restarts exits--> FAILED;  any --stop()--> STOPPED

Starts are staggered: the next engine starts once no other is loading, or
``stagger_s`` after the previous start, whichever comes first, so engines do not all
load weights and compile at the same moment. An engine that dies is stopped whole (its
workers too), then restarted on the same port and devices after a growing delay, at
most ``max_restarts`` times; meanwhile the client takes it out of service and its
conversations move to the live engines (llm/endpoints.py). The group is lost only when
every engine has FAILED.
"""

from __future__ import annotations

import enum
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec

from soc_async import logs
from soc_async.errors import InputError, ServerStartError
from soc_async.llm.plan import EnginePlan, EngineSpec
from soc_async.llm.readiness import EndpointsFile, ServedEngine
from soc_async.llm.server import ManagedServer

__all__ = ["MOVES", "EngineGroup", "EngineState", "IllegalEngineMove"]

log = logs.get("engines")


class EngineState(enum.Enum):
    WAITING = "waiting"  # planned; its turn in the staggered start has not come
    STARTING = "starting"  # its process runs; /health does not answer yet
    READY = "ready"  # answers /health
    BACKOFF = "backoff"  # exited or could not start; restarted once its delay is over
    FAILED = "failed"  # exited more often than max_restarts allows; left down
    STOPPED = "stopped"  # stopped on purpose


S = EngineState
MOVES: dict[EngineState, frozenset[EngineState]] = {
    S.WAITING: frozenset({S.STARTING, S.BACKOFF, S.FAILED, S.STOPPED}),
    S.STARTING: frozenset({S.READY, S.BACKOFF, S.FAILED, S.STOPPED}),
    S.READY: frozenset({S.BACKOFF, S.FAILED, S.STOPPED}),
    S.BACKOFF: frozenset({S.STARTING, S.FAILED, S.STOPPED}),
    S.FAILED: frozenset({S.STOPPED}),
    S.STOPPED: frozenset(),
}
_LIVE = frozenset({S.WAITING, S.STARTING, S.READY, S.BACKOFF})


class IllegalEngineMove(RuntimeError):
    """A state change the table does not allow: a bug in the group, never the user's."""


class _Slot:
    """One engine: its plan, its current server process, its state and history."""

    def __init__(self, index: int, engine: EngineSpec) -> None:
        self.index = index
        self.engine = engine
        self.state = S.WAITING
        self.since = 0.0  # when the state was entered (the group's clock)
        self.started_at = 0.0  # when the current process was started
        self.exits = 0  # unplanned ends so far: exits, failed starts, start timeouts
        self.server: ManagedServer | None = None
        self.last_error = ""

    @property
    def url(self) -> str:
        return self.engine.url

    def move(self, new: EngineState, now: float) -> None:
        if new not in MOVES[self.state]:
            raise IllegalEngineMove(f"engine {self.index}: {self.state.value} -> {new.value}")
        self.state = new
        self.since = now

    def __repr__(self) -> str:
        return f"<engine {self.index} {self.url} {self.state.value} exits={self.exits}>"


class EngineGroup:
    """The engines of ``plan``: ``start()``, then ``poll()`` until ``stop()``."""

    def __init__(
        self,
        plan: EnginePlan,
        *,
        max_restarts: int = 3,
        stagger_s: float = 15.0,
        restart_delay_s: float = 10.0,
        stop_grace_s: float = 20.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plan = plan
        self.max_restarts = max_restarts
        self.stagger_s = stagger_s
        self.restart_delay_s = restart_delay_s
        self.stop_grace_s = stop_grace_s
        self._clock = clock
        self.slots = [_Slot(k, e) for k, e in enumerate(plan.engines)]
        self._last_start: float | None = None
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(self.slots)))
        self._closed = False

    # -- what it is -----------------------------------------------------------------------

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.slots]

    def ready_urls(self) -> list[str]:
        return [s.url for s in self.slots if s.state is S.READY]

    def live(self) -> int:
        """Engines not given up: ready, starting, waiting or about to be restarted."""
        return sum(s.state in _LIVE for s in self.slots)

    @property
    def priority_scheduling(self) -> bool:
        return all(s.engine.priority for s in self.slots)

    @property
    def max_num_seqs(self) -> int | None:
        """The batch size of each endpoint, when they all share one."""
        sizes = {s.engine.max_num_seqs for s in self.slots}
        return sizes.pop() if len(sizes) == 1 else None

    def states(self) -> dict[int, EngineState]:
        return {s.index: s.state for s in self.slots}

    def endpoints_file(self) -> EndpointsFile:
        """What ``--endpoints-file`` holds: every engine, whatever its state."""
        return EndpointsFile(
            model=self.plan.model,
            pid=os.getpid(),
            engines=[
                ServedEngine(
                    url=s.url,
                    gpus=s.engine.gpus,
                    max_num_seqs=s.engine.max_num_seqs,
                    priority=s.engine.priority,
                )
                for s in self.slots
            ],
        )

    def write_endpoints_file(self, path: str | os.PathLike[str]) -> Path:
        """Writes :meth:`endpoints_file` to ``path`` atomically (readers never see half)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        with os.fdopen(fd, "wb") as f:
            f.write(msgspec.json.encode(self.endpoints_file()))
        os.replace(tmp, target)
        return target

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Starts the first engine; the others follow from :meth:`poll`."""
        self.poll()

    def poll(self) -> int:
        """One round of decisions; returns :meth:`live`."""
        now = self._clock()
        starting = [s for s in self.slots if s.state is S.STARTING]
        healthy = dict(
            zip(
                [s.index for s in starting],
                self._pool.map(lambda s: s.server is not None and s.server.ready(), starting),
                strict=True,
            )
        )
        for slot in self.slots:
            if slot.state is S.STARTING:
                self._check_starting(slot, healthy[slot.index], now)
            elif slot.state is S.READY and not (slot.server and slot.server.alive()):
                self._exited(slot, now, "exited while serving")
            elif slot.state is S.BACKOFF and now >= slot.since + self._delay(slot):
                self._launch(slot, now)
        waiting = [s for s in self.slots if s.state is S.WAITING]
        if waiting and self._may_start_next(now):
            self._launch(waiting[0], now)
        return self.live()

    def wait_started(self, *, poll_s: float = 0.5) -> None:
        """Polls until no engine is waiting or starting; ServerStartError when none became
        ready (with the last engine's log tail), the group stopped."""
        while any(s.state in (S.WAITING, S.STARTING) for s in self.slots):
            self.poll()
            if any(s.state in (S.WAITING, S.STARTING) for s in self.slots):
                time.sleep(poll_s)
        if not self.ready_urls():
            tail = ""
            for slot in self.slots:
                if slot.server is not None:
                    tail = slot.server.log_tail() or tail
            errors = "; ".join(f"engine {s.index}: {s.last_error}" for s in self.slots)
            self.stop()
            raise ServerStartError(f"no vLLM engine became ready ({errors})", tail)

    def stop(self) -> None:
        """Stops every engine (each whole process group); safe to call more than once."""
        now = self._clock()
        servers = [s.server for s in self.slots if s.server is not None]
        if servers and not self._closed:
            list(self._pool.map(lambda server: server.stop(self.stop_grace_s), servers))
        else:
            for server in servers:
                server.stop(self.stop_grace_s)
        for slot in self.slots:
            slot.server = None
            if slot.state is not S.STOPPED:
                slot.move(S.STOPPED, now)
        self._closed = True
        self._pool.shutdown(wait=False)

    def log_tail(self) -> str:
        """The end of the last log among the engines, for an error message."""
        for slot in reversed(self.slots):
            if slot.server is not None and slot.server.log_tail():
                return slot.server.log_tail()
        return ""

    def __enter__(self) -> EngineGroup:
        try:
            self.start()
            self.wait_started()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- decisions ------------------------------------------------------------------------

    def _may_start_next(self, now: float) -> bool:
        if self._last_start is None:
            return True
        loading = any(s.state is S.STARTING for s in self.slots)
        return not loading or now - self._last_start >= self.stagger_s

    def _delay(self, slot: _Slot) -> float:
        return min(120.0, self.restart_delay_s * 2 ** max(0, slot.exits - 1))

    def _launch(self, slot: _Slot, now: float) -> None:
        server = ManagedServer(slot.engine.spec, stop_grace_s=self.stop_grace_s)
        slot.server = server
        self._last_start = now
        try:
            server.start()
        except (InputError, ServerStartError) as exc:
            slot.move(S.STARTING, now)
            self._exited(slot, now, f"could not start: {exc}")
            return
        slot.started_at = now
        slot.move(S.STARTING, now)
        attempt = f" (restart {slot.exits} of {self.max_restarts})" if slot.exits else ""
        log.info(
            "engine starting" + attempt,
            engine=slot.index,
            url=slot.url,
            gpus=slot.engine.gpus or "cpu",
            log=str(server.log_path),
        )

    def _check_starting(self, slot: _Slot, healthy: bool, now: float) -> None:
        server = slot.server
        assert server is not None
        if healthy:
            slot.move(S.READY, now)
            log.info(
                "engine ready",
                engine=slot.index,
                url=slot.url,
                after_s=round(now - slot.started_at, 1),
            )
        elif not server.alive():
            self._exited(slot, now, "exited before it was ready")
        elif now - slot.started_at >= slot.engine.spec.startup_timeout_s:
            self._exited(slot, now, f"not ready after {slot.engine.spec.startup_timeout_s:g} s")

    def _exited(self, slot: _Slot, now: float, why: str) -> None:
        server = slot.server
        if server is not None:
            server.stop(min(self.stop_grace_s, 5.0))  # what is left of it: workers, port
            code = server.returncode
            if code is not None:
                why = f"{why} (exit code {code})"
        slot.exits += 1
        slot.last_error = why
        tail = server.log_tail(8) if server is not None else ""
        if slot.exits > self.max_restarts:
            slot.move(S.FAILED, now)
            log.error(
                "engine given up",
                engine=slot.index,
                url=slot.url,
                reason=why,
                exits=slot.exits,
                live=self.live(),
                log_tail=tail,
            )
            return
        slot.move(S.BACKOFF, now)
        log.warning(
            "engine down; restarting",
            engine=slot.index,
            url=slot.url,
            reason=why,
            restart=f"{slot.exits} of {self.max_restarts}",
            in_s=round(self._delay(slot), 1),
            log_tail=tail,
        )
