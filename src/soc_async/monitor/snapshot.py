"""One line of metrics.jsonl: the run's figures at one moment, as plain data.

A running ``soc-async run`` writes a :class:`Snapshot` every ``monitor.interval_s``
seconds and a last one with ``finished: true`` when it ends, whatever the outcome. The
live panel, ``status --watch``, ``status --json``, ``status --plot`` and the Prometheus
endpoint all read these same figures, so what a user sees on the node, on a login node
and in Grafana agrees.

Counters (requests, tokens, faults, stage done/failed) are cumulative over the writing
process; a resumed run starts its process counters again but its stages count what the
run directory already holds. Rates (``*_per_s``, ``eta_s``) are computed by the writer
over a recent window (:data:`RATE_WINDOW_S`), so a reader shows them as they are.

New fields go last with defaults and old ones are never retyped: old lines stay readable
(:func:`decode_snapshot` reads a line of any version).
"""

from __future__ import annotations

import msgspec

__all__ = [
    "RATE_WINDOW_S",
    "ControllerFigures",
    "EngineFigures",
    "Snapshot",
    "StageFigures",
    "decode_snapshot",
    "encode_snapshot",
]

# The window of the recent rates, in seconds: long enough to smooth the 5-s steps of a
# metrics line, short enough that a slowdown shows within a minute.
RATE_WINDOW_S = 60.0


class StageFigures(msgspec.Struct, kw_only=True):
    target: int = 0  # this shard's items of the stage
    done: int = 0  # written to the stage's file
    failed: int = 0  # written to failures.jsonl
    active: int = 0  # in progress now
    skipped: int = 0  # not attempted: a chat whose experience failed
    rate: float = 0.0  # items settled (done or failed) per second over the recent window
    eta_s: float | None = None  # seconds to settle the rest at ``rate``; None: no rate yet

    @property
    def settled(self) -> int:
        return self.done + self.failed + self.skipped


class EngineFigures(msgspec.Struct, kw_only=True):
    """One server (endpoint) as the client sees it, and as its /metrics says."""

    url: str
    up: bool = True  # in service; False while it is taken out and probed
    in_flight: int = 0  # our requests on it now
    limit: int | None = None  # its own limit on requests in flight now (fixed or adaptive)
    requests: int = 0  # replies it sent us
    completion_tokens: int = 0  # in those replies
    faults: dict[str, int] = {}  # failed attempts on it, by cause (llm.client.FAULT_CAUSES)
    # From its /metrics (None: not read, or unreadable at the last poll):
    running: float | None = None  # requests in its batch (anyone's)
    waiting: float | None = None  # requests queued in it
    kv_cache_usage: float | None = None  # 0..1, the fullest engine behind the URL
    preemptions: float | None = None  # since this run started reading it
    prefix_hit_rate: float | None = None  # prompt tokens from the prefix cache, this run
    tokens_per_s: float | None = None  # generation tokens/s between the last two reads
    metrics_error: str = ""  # why the last read failed


class ControllerFigures(msgspec.Struct, kw_only=True):
    """The engines' limits summed and what last moved one of them."""

    adaptive: bool = False  # False: a fixed --concurrency, nothing moves it
    limit: int = 0  # the sum of the engines' own limits (EngineFigures.limit)
    reason: str = ""  # the reason of the last decision (a hold included)
    moved_reason: str = ""  # the reason of the last change of the limit
    moved_ago_s: float | None = None  # seconds since that change
    moves: int = 0  # changes so far


class Snapshot(msgspec.Struct, kw_only=True):
    time: float = 0.0  # Unix time of the reading
    elapsed_s: float = 0.0  # since the writing process started
    requests: int = 0  # replies received
    request_errors: int = 0  # requests that failed for good (4xx, retries exhausted)
    in_flight: int = 0
    capacity: int = 0  # the limit on requests in flight
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    tokens_per_s: float = 0.0  # completion tokens/s over the recent window
    mean_latency_s: float = 0.0
    mean_queue_s: float = 0.0
    stages: dict[str, StageFigures] = {}
    tokens_per_s_overall: float = 0.0  # completion tokens / elapsed_s
    requests_per_s: float = 0.0  # over the recent window
    faults: dict[str, int] = {}  # failed transport attempts by cause, every endpoint
    rejections: dict[str, int] = {}  # content rejections by reason, from finished records
    failures: dict[str, int] = {}  # failure records written, by reason
    controller: ControllerFigures | None = None
    engines: list[EngineFigures] = []
    finished: bool = False  # the last line the run writes
    outcome: str = ""  # on the finished line: "done" | "interrupted" | "failed"
    pid: int = 0  # the writing process, so a reader on the same host sees it die
    host: str = ""
    thinking_stripped: int = 0  # <think> parts removed from replies before parsing

    @property
    def cached_share(self) -> float:
        """The share of prompt tokens served from vLLM's prefix cache, 0..1."""
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    @property
    def faults_total(self) -> int:
        return sum(self.faults.values())


_decoder = msgspec.json.Decoder(Snapshot)
_encoder = msgspec.json.Encoder()


def decode_snapshot(line: bytes | str) -> Snapshot:
    """The snapshot on one metrics.jsonl line; unknown keys are ignored, missing ones
    take their defaults. Raises ``msgspec.DecodeError`` or ``ValidationError``."""
    return _decoder.decode(line)


def encode_snapshot(snapshot: Snapshot) -> bytes:
    """One metrics.jsonl line, without its newline."""
    return _encoder.encode(snapshot)
