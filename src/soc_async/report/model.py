"""What a report holds: msgspec Structs, written as report.json and read back by
``--compare``. Every figure of docs/report.md has its Struct here.

Distributions are kept as counts, so two reports compare exactly: categorical ones as
``{label: count}``, discrete ones as ``{value: count}`` (JSON keys are strings), and
continuous ones as a :class:`Histogram` with fixed edges.
"""

from __future__ import annotations

import math

import msgspec

__all__ = [
    "ABCriterion",
    "ABSection",
    "ArchetypeJudgeInfo",
    "ArchetypeTable",
    "ArchetypeWindow",
    "Archetypes",
    "Counts",
    "Demographics",
    "Drift",
    "DriftWindow",
    "DuplicateKind",
    "Duplicates",
    "ExperienceMix",
    "GlanceRow",
    "Histogram",
    "HumanCriterion",
    "HumanSection",
    "Interval",
    "JudgeAgreement",
    "JudgeSection",
    "Judged",
    "Meta",
    "Moments",
    "Naturalness",
    "Report",
    "RuleExample",
    "Rules",
    "Shape",
    "Share",
]


class Moments(msgspec.Struct, kw_only=True):
    """Count, mean and standard deviation of a stream, updated one value at a time
    (Welford's method: no values kept)."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0  # sum of squared deviations from the running mean
    sd: float = 0.0  # population standard deviation (0.0 below two values)
    min: float | None = None
    max: float | None = None

    def add(self, x: float) -> None:
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)
        self.sd = math.sqrt(self.m2 / self.n)
        if self.min is None or x < self.min:
            self.min = x
        if self.max is None or x > self.max:
            self.max = x


class Histogram(msgspec.Struct, kw_only=True):
    """Counts in bins ``[edges[i], edges[i+1])``; the last bin also takes everything
    above its lower edge (so ``len(counts) == len(edges) - 1`` and nothing is lost)."""

    edges: list[float]
    counts: list[int]

    @classmethod
    def empty(cls, edges: list[float]) -> Histogram:
        return cls(edges=list(edges), counts=[0] * (len(edges) - 1))

    def add(self, x: float) -> None:
        edges = self.edges
        if x < edges[0]:
            self.counts[0] += 1
            return
        lo, hi = 0, len(edges) - 1
        while hi - lo > 1:  # the bin whose lower edge is the last one <= x
            mid = (lo + hi) // 2
            if edges[mid] <= x:
                lo = mid
            else:
                hi = mid
        self.counts[min(lo, len(self.counts) - 1)] += 1


class Share(msgspec.Struct, kw_only=True):
    """``hits`` of ``total``; ``value`` is their ratio (None when total is 0)."""

    hits: int = 0
    total: int = 0
    value: float | None = None

    def add(self, hit: bool) -> None:
        self.total += 1
        self.hits += int(hit)
        self.value = self.hits / self.total


class Meta(msgspec.Struct, kw_only=True):
    soc_async_version: str
    generated: str  # ISO time in UTC
    run_dir: str
    seed: int | None
    shard: str | None
    run_key: str | None
    merged: bool  # a directory written by soc-async merge
    config_hash: str | None  # sha256 of the effective config, `out` and endpoints left out
    config_source: str  # the config.toml read, or "defaults" when none was found
    torn_lines: list[str] = []  # FILE:LINE of torn last lines left out


class Counts(msgspec.Struct, kw_only=True):
    personas: int = 0
    experiences: int = 0
    conversations: int = 0
    targets: dict[str, int] = {}  # stage -> target of the run's config
    failures: dict[str, int] = {}  # stage -> failures
    failure_reasons: dict[str, dict[str, int]] = {}  # stage -> reason -> count
    tokens: dict[str, dict[str, int]] = {}  # stage -> prompt/completion/cached
    models: dict[str, dict[str, int]] = {}  # stage -> model -> records
    retries: dict[str, int] = {}  # rule violations corrected on the way, chats and failures


class RuleExample(msgspec.Struct, kw_only=True):
    id: str
    rule: str
    detail: str


class Rules(msgspec.Struct, kw_only=True):
    conversations: Share = msgspec.field(default_factory=Share)  # hits: passed every rule
    by_rule: dict[str, int] = {}  # rule -> conversations breaking it
    personas: Share = msgspec.field(default_factory=Share)
    personas_by_rule: dict[str, int] = {}
    experiences: Share = msgspec.field(default_factory=Share)
    experiences_by_rule: dict[str, int] = {}
    examples: list[RuleExample] = []  # the first few records that failed, any kind


class Demographics(msgspec.Struct, kw_only=True):
    personas: int = 0
    regions: dict[str, int] = {}
    countries: dict[str, int] = {}
    genders: dict[str, int] = {}
    age: Moments = msgspec.field(default_factory=Moments)
    ages: dict[str, int] = {}  # age -> personas
    age_target: dict[str, float] = {}  # age -> expected share under the configured law
    age_target_mean: float = 25.0
    age_target_sd: float = 5.0
    age_target_mean_actual: float = 25.0  # the clipped law's own mean and sd
    age_target_sd_actual: float = 5.0
    occupations: dict[str, int] | None = None  # top 30, when personas carry them
    occupation_count: int = 0  # personas that carry one
    bands: dict[str, int] | None = None  # socioeconomic band, when present
    region_matched: Share = msgspec.field(default_factory=Share)  # experience meta flag
    same_region: Share = msgspec.field(default_factory=Share)  # from the two personas
    region_match_target: float = 0.5


class ExperienceMix(msgspec.Struct, kw_only=True):
    experiences: int = 0
    styles: dict[str, int] = {}
    cadences: dict[str, int] = {}
    topics: dict[str, int] = {}  # topics per experience -> experiences
    budgets: dict[str, int] = {}  # turn budget of one topic -> topics
    roadmap_turns: Moments = msgspec.field(default_factory=Moments)  # budget sum per experience
    events: dict[str, int] = {}  # instant events per experience -> experiences
    style_hinted: Share = msgspec.field(default_factory=Share)
    initial_state_derived: Share = msgspec.field(default_factory=Share)
    start_months: dict[str, int] | None = None  # YYYY-MM -> experiences, when dates are set
    models: dict[str, int] = {}


class Shape(msgspec.Struct, kw_only=True):
    conversations: int = 0
    turns: dict[str, int] = {}  # turns per conversation -> conversations
    turn_moments: Moments = msgspec.field(default_factory=Moments)
    messages_per_turn: dict[str, dict[str, int]] = {}  # cadence -> messages -> turns
    message_types: dict[str, int] = {}
    gaps: dict[str, Histogram] = {}  # cadence -> minutes between consecutive messages
    ended_by: dict[str, int] = {}
    instant_events: Share = msgspec.field(default_factory=Share)  # turns with an event
    instant_event_target: float = 0.05
    summaries: Share = msgspec.field(default_factory=Share)  # conversations with a summary
    # Of the conversations longer than chat.active_window (so at least one fold was due),
    # the share that ended with a summary.
    summarized_when_long: Share = msgspec.field(default_factory=Share)
    summary_words: Moments = msgspec.field(default_factory=Moments)  # non-empty summaries
    ending_when_spent: Share = msgspec.field(default_factory=Share)  # tag endings, slots spent


class PacingRow(msgspec.Struct, kw_only=True):
    """Messages per turn of one cadence's turns against the configured distribution."""

    cadence: str
    turns: int = 0
    counts: dict[str, int] = {}  # messages -> turns
    shares: dict[str, float] = {}  # messages -> share of the cadence's turns
    # messages -> expected share: the configured pacing, mixed over the run's styles of
    # this cadence by their turns (pacing_by_style may differ per style).
    target: dict[str, float] = {}
    # The largest |share - target| in standard errors of the target share; None: no
    # target (pacing not configured) or no turns.
    worst_z: float | None = None


class Pacing(msgspec.Struct, kw_only=True):
    rows: list[PacingRow] = []
    configured: bool = True  # whether the run's config sets chat.pacing


class AgeBandRow(msgspec.Struct, kw_only=True):
    """The run's personas in one age band against the configured law's share of it."""

    band: str  # "18-24"
    personas: int = 0
    share: float | None = None
    target: float = 0.0
    z: float | None = None  # (share - target) in standard errors of the target share


class AgeCoverage(msgspec.Struct, kw_only=True):
    law: str = ""  # the configured law in words, e.g. "N(25, 5) on 18..70"
    personas: int = 0
    bands: list[AgeBandRow] = []  # the configured bands, else decades
    # Half the sum of |share - target| over single years: 0 is a perfect match.
    total_variation: float | None = None


class Naturalness(msgspec.Struct, kw_only=True):
    mtld: Moments = msgspec.field(default_factory=Moments)  # per conversation
    mtld_hist: Histogram = msgspec.field(
        default_factory=lambda: Histogram.empty([0, 25, 50, 75, 100, 125, 150, 200, 250, 300])
    )
    mtld_short: int = 0  # conversations under mtld_min_tokens words, left out
    mtld_min_tokens: int = 50
    mtld_reference: float = 159.8  # what SOC-2508 reported
    mtld_persona: Moments = msgspec.field(default_factory=Moments)  # per persona (mean of sides)
    distinct_1: float = 0.0
    distinct_2: float = 0.0
    distinct_estimated: bool = False  # past 200,000 distinct n-grams: HyperLogLog++
    words: int = 0  # words in every text message
    message_words: Moments = msgspec.field(default_factory=Moments)  # text messages
    message_words_hist: Histogram = msgspec.field(
        default_factory=lambda: Histogram.empty([0, 1, 3, 5, 10, 20, 40, 80, 150, 300])
    )
    three_messages: dict[str, Share] = {}  # cadence -> share of turns with 3 messages


class DuplicateKind(msgspec.Struct, kw_only=True):
    items: int = 0
    near_duplicates: int = 0  # items with an earlier item at estimated Jaccard >= threshold
    rate: float | None = None  # near_duplicates / items
    examples: list[list[str]] = []  # [id, id of its earlier near-duplicate], a few


class Duplicates(msgspec.Struct, kw_only=True):
    threshold: float = 0.8
    num_perm: int = 64
    shingle_words: int = 3
    personas: DuplicateKind = msgspec.field(default_factory=DuplicateKind)
    experiences: DuplicateKind = msgspec.field(default_factory=DuplicateKind)
    openings: DuplicateKind = msgspec.field(default_factory=DuplicateKind)


class DriftWindow(msgspec.Struct, kw_only=True):
    start: int  # first iteration of the window
    end: int  # last iteration, inclusive
    personas: int
    traits_top_share: float | None  # share of trait words that are the window's top 20
    coping_top_share: float | None
    traits_words: int = 0
    coping_words: int = 0


class Drift(msgspec.Struct, kw_only=True):
    top: int = 20
    window_size: int = 0
    windows: list[DriftWindow] = []
    top_traits: list[str] = []  # the 20 most frequent trait words over all personas
    top_coping: list[str] = []


class ArchetypeWindow(msgspec.Struct, kw_only=True):
    start: int  # first iteration of the window
    end: int  # last iteration, inclusive
    personas: int  # with a drawn row
    drawn: dict[str, int] = {}  # label -> personas drawn it
    # label -> (share - weight) / sqrt(weight (1 - weight) / personas): the drawn share's
    # distance from its weight in standard errors of independent draws
    z: dict[str, float] = {}
    written: dict[str, int] = {}  # label (or "unclear") -> cards, by the table's keywords
    judged: dict[str, int] = {}  # label -> sampled cards, as the judge read them


class ArchetypeTable(msgspec.Struct, kw_only=True):
    name: str  # "temperament" | "coping"
    weights: dict[str, float] = {}  # label -> configured share
    drawn: dict[str, int] = {}  # label -> personas, whole run
    written: dict[str, int] = {}  # label (or "unclear") -> cards, by keywords
    judged: dict[str, int] = {}  # label -> sampled cards, by the judge
    windows: list[ArchetypeWindow] = []
    max_abs_z: float | None = None  # over every window and label
    within_3se: bool | None = None  # every drawn label within 3 SE of its weight, every window
    written_match: Share = msgspec.field(default_factory=Share)  # keyword reading == drawn
    judged_match: Share = msgspec.field(default_factory=Share)  # judge reading == drawn
    # Total variation distance between the first and the last window's distributions
    # (0: the same mix, 1: nothing in common): drift as one figure.
    written_drift: float | None = None
    judged_drift: float | None = None
    # The same distance between the drawn mixes: what window-to-window sampling alone
    # gives, the baseline the written and judged figures are read against.
    drawn_drift: float | None = None


class ArchetypeJudgeInfo(msgspec.Struct, kw_only=True):
    sample: int  # cards asked for
    seed: int
    model: str = ""
    read: int = 0
    refused: dict[str, str] = {}  # persona id -> why (this session)


class Archetypes(msgspec.Struct, kw_only=True):
    personas: int = 0  # with a drawn temperament and coping style
    without: int = 0  # personas of runs from before archetypes were drawn
    window_size: int = 0
    hinted: Share = msgspec.field(default_factory=Share)  # prompts that named a dominant style
    hint_styles: dict[str, int] = {}  # the style named -> prompts
    tables: list[ArchetypeTable] = []  # temperament, coping
    judge: ArchetypeJudgeInfo | None = None


class Judged(msgspec.Struct, kw_only=True):
    chat_id: str
    scores: dict[str, int]
    total: int
    reason: str


class JudgeSection(msgspec.Struct, kw_only=True):
    sample: int  # conversations asked for
    seed: int
    model: str = ""
    judged: int = 0
    refused: dict[str, str] = {}  # chat_id -> why its score was refused (this session)
    criteria: list[str] = []
    distribution: dict[str, dict[str, int]] = {}  # criterion -> score -> conversations
    means: dict[str, float] = {}
    worst: list[Judged] = []  # the five lowest totals
    worst_transcripts: dict[str, str] = {}  # chat_id -> its text, for the HTML


class GlanceRow(msgspec.Struct, kw_only=True):
    key: str  # stable name, used by --compare
    label: str
    value: float | None
    shown: str  # the value as a person reads it
    target: str  # "" where the method states none
    ok: bool | None  # None: no target, or no data


class Interval(msgspec.Struct, kw_only=True):
    value: float | None  # a mean, or a share
    low: float | None  # its 95% interval; None where n is too small
    high: float | None
    n: int  # conversations (a mean) or decided pairs (a share)


class JudgeAgreement(msgspec.Struct, kw_only=True):
    criterion: str  # the judge's criterion compared with the people's
    items: int  # conversations both the judge and people scored
    spearman: float | None  # judge score against the raters' mean
    alpha: float | None  # Krippendorff's alpha (ordinal), the judge as one more rater


class HumanCriterion(msgspec.Struct, kw_only=True):
    key: str
    label: str
    mean: Interval  # over conversations, each its raters' mean
    distribution: dict[str, int]  # score -> answers
    alpha: float | None  # Krippendorff's alpha (ordinal) over the shared conversations
    alpha_items: int  # conversations rated by two raters or more
    judge: JudgeAgreement | None = None


class ABCriterion(msgspec.Struct, kw_only=True):
    key: str
    label: str
    a: int  # answers preferring run A (this report's run)
    b: int  # answers preferring run B
    tie: int
    b_rate: Interval  # B's share of the answers that were not a tie


class ABSection(msgspec.Struct, kw_only=True):
    compare: str  # run B's directory, as given to annotate --compare
    compare_key: str
    pairs: int
    answers: int
    raters: int
    left_a: int  # answers whose pair showed A on the left (balance check)
    criteria: list[ABCriterion]


class HumanSection(msgspec.Struct, kw_only=True):
    rubrics: list[str]  # rubric versions the answers were given on
    raters: int
    ratings: int  # each rater's last answer per conversation
    items: int  # conversations rated
    shared_items: int  # conversations rated by two raters or more
    criteria: list[HumanCriterion]
    flags: dict[str, int]  # flag -> ratings that raised it
    comments: int
    ab: list[ABSection] = []


class Report(msgspec.Struct, kw_only=True):
    meta: Meta
    glance: list[GlanceRow]
    counts: Counts
    rules: Rules
    demographics: Demographics
    experiences: ExperienceMix
    shape: Shape
    naturalness: Naturalness
    duplicates: Duplicates
    drift: Drift
    judge: JudgeSection | None = None
    pacing: Pacing = msgspec.field(default_factory=Pacing)
    ages: AgeCoverage = msgspec.field(default_factory=AgeCoverage)
    human: HumanSection | None = None  # soc-async annotate's answers (report/human.py)
    archetypes: Archetypes | None = None  # None in reports from before archetypes
