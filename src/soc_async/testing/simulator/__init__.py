"""A simulated vLLM engine: continuous batching, a paged KV cache with prefix caching,
preemption, and vLLM's HTTP API and /metrics, faster than real time.

Modules: :mod:`.profiles` (named engines and the step-time model), :mod:`.kv` (the
block pool and prefix cache), :mod:`.engine` (one engine, step by step, pure),
:mod:`.driver` (engines on the event loop's clock, time-scaled), :mod:`.metrics` (the
/metrics page), :mod:`.server` (HTTP, one port per engine; ``python -m
soc_async.testing.simulator``), :mod:`.workload` (chat-turn load through the project's
limiter and controller, for deterministic runs on a virtual clock). docs/simulator.md
describes the model and the source of each figure.
"""

from soc_async.testing.simulator.driver import SimCluster
from soc_async.testing.simulator.engine import SimEngine, SimRequest
from soc_async.testing.simulator.profiles import PROFILES, SimProfile, profile, step_time
from soc_async.testing.simulator.server import SimServer

__all__ = [
    "PROFILES",
    "SimCluster",
    "SimEngine",
    "SimProfile",
    "SimRequest",
    "SimServer",
    "profile",
    "step_time",
]
