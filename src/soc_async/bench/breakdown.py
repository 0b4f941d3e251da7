"""Where the pipeline loses against vLLM's own benchmark on the same server, step by step.

``soc-async bench --breakdown`` runs, at each concurrency, besides the pipeline, the
ceiling and (with ``--reference``) vLLM's benchmark, the phases that switch one thing
off: a load with the pipeline's own spread of prompt, cached and output lengths instead
of their means (phase "ceiling", variant "spread"); the pipeline without the turn
grammar, and without summary calls (only when it made any), each followed by a load of
its own lengths (phase "ceiling" with the same variant). :func:`loss_steps` reads them
as a ladder from the reference down to the pipeline's whole-phase figure; each step's
factor is the tokens/s after it over the tokens/s before, and the factors multiply out
to pipeline / reference:

1. method: the bench's own uniform load (the ceiling) against vLLM's benchmark (this
   step also holds streaming: vLLM's benchmark streams, the bench's loads and the
   pipeline do not);
2. prompt-length spread: the load of the pipeline's lengths against the uniform one;
3. the ``priority`` field and the server's priority scheduler: the pipeline against the
   same without the field (variant "no-priority"; 1 when none was sent);
4. per-request sampling seeds: likewise ("no-seeds"; 1 when none were sent, the default);
5. stop strings: 1, the chat stage sends none (its turns end at the grammar's end or EOS);
6. conversations: what is left of the pipeline's share of a load of its own lengths,
   grammar, summaries, priorities and seeds taken out (turns that wait on each other,
   the client's work between them);
7. turn grammar: the pipeline's share of the load of its lengths, over the same share
   of the pipeline without the grammar (each against the work it did: without a grammar
   a small model writes other lengths, and tokens/s depends on them);
8. summary calls: likewise against the pipeline without them (1 when none were made);
9. end-of-phase tail: the pipeline's whole phase against its steady window.

Steps 1-8 compare steady windows (bench/steady.py), so the tail is counted once, in
step 9; their factors multiply out to pipeline / reference. Three more rows are
switches the pipeline figure does not hold (``in_ladder`` False), each the variant's
steady tokens/s over the pipeline's: "lockstep" (every conversation started at once, as
the bench did before its starts were staggered), "monitored" (the run's /metrics
readings and live panel beside the chats) and "journaled" (every accepted turn written
to a journal and fsynced, as a run does). A switch compared straight with the pipeline
does the same kind of work with other draws of the model, so its factor carries the
phases' sampling noise besides the switch. Pure: phases in,
:class:`~soc_async.bench.results.LossStep` rows out.
"""

from __future__ import annotations

from collections.abc import Sequence

from soc_async.bench.metrics import ratio
from soc_async.bench.results import LossStep, PhaseResult, by_concurrency

__all__ = ["loss_steps"]


def _steady(phase: PhaseResult | None) -> float | None:
    return phase.steady_tokens_per_s if phase is not None else None


def _product(*factors: float | None) -> float | None:
    out = 1.0
    for f in factors:
        if f is None:
            return None
        out *= f
    return out


def _at(c: int, phases: Sequence[PhaseResult], grammar: bool) -> list[LossStep]:
    def get(phase: str, variant: str = "") -> PhaseResult | None:
        return by_concurrency(phases, phase, variant).get(c)  # type: ignore[arg-type]

    def share(variant: str) -> float | None:
        """A pipeline's steady tokens/s over a load of its own lengths'."""
        return ratio(_steady(get("pipeline", variant)), _steady(get("ceiling", variant)))

    def against(variant: str) -> float | None:
        """The pipeline's steady tokens/s over the same without one thing (``variant``)."""
        return ratio(_steady(pipe), _steady(get("pipeline", variant)))

    pipe, ceil, ref = get("pipeline"), get("ceiling"), get("reference")
    spread = get("ceiling", "spread")
    if pipe is None or _steady(pipe) is None:
        return []
    summaries = pipe.requests_by_kind.get("summary", 0)
    own = ratio(_steady(pipe), _steady(spread if spread is not None else ceil))
    grammar_f = ratio(own, share("no-grammar")) if grammar else 1.0
    summary_f = 1.0 if summaries == 0 else ratio(own, share("no-summaries"))
    priority_f = against("no-priority") if get("pipeline", "no-priority") else 1.0
    seeds_f = against("no-seeds") if get("pipeline", "no-seeds") else 1.0
    # The pipeline with neither grammar nor summaries, as far as the two variants say.
    bare = ratio(_steady(pipe), _product(grammar_f, summary_f))
    load = spread if _steady(spread) is not None else ceil
    rows: list[LossStep] = []

    def add(
        step: str, rate: float | None, before: float | None, by: str, in_ladder: bool = True
    ) -> None:
        rows.append(
            LossStep(
                concurrency=c,
                step=step,
                tokens_per_s=rate,
                factor=ratio(rate, before) if before is not None else None,
                measured_by=by,
                in_ladder=in_ladder,
            )
        )

    start = _steady(ref) if ref is not None else _steady(ceil)
    if ref is not None:
        add("vLLM's own benchmark", start, None, "reference phase, steady window")
        add("method: the bench's uniform load", _steady(ceil), start, "ceiling / reference")
    else:
        add("the bench's uniform load", start, None, "ceiling phase, steady window")
    if spread is not None:
        add(
            "prompt-length spread",
            _steady(spread),
            _steady(ceil),
            "ceiling with the pipeline's lengths / ceiling",
        )
    after_priority = _product(_steady(load), priority_f)
    add(
        "the priority field and the priority scheduler",
        after_priority,
        _steady(load),
        "pipeline / the same without the field"
        if get("pipeline", "no-priority")
        else "none sent (the server has no priority scheduling)",
    )
    after_seeds = _product(after_priority, seeds_f)
    add(
        "per-request sampling seeds",
        after_seeds,
        after_priority,
        "pipeline / the same without seeds"
        if get("pipeline", "no-seeds")
        else "none sent (client.send_seed off, the default)",
    )
    add(
        "stop strings",
        after_seeds,
        after_seeds,
        "none sent: the chat stage ends turns by its grammar and EOS",
    )
    idle = 1.0 - pipe.occupancy if pipe.occupancy is not None else None
    add(
        "conversations: turns wait on each other, client work between them",
        bare,
        after_seeds,
        "the rest: pipeline / the load of its lengths, grammar, summaries, priorities "
        "and seeds taken out"
        + (f"; slots idle {idle:.0%} of the pipeline's steady window" if idle is not None else "")
        + f"; client queue p50 {pipe.queue_s.p50 or 0.0:.2g} s",
    )
    grammar_rate = ratio(_steady(pipe), summary_f)
    add(
        "turn grammar",
        grammar_rate,
        bare,
        "(pipeline / its lengths' load) / (the same without the turn grammar)"
        if grammar
        else "none sent (--no-grammar)",
    )
    add(
        "summary calls",
        _steady(pipe),
        grammar_rate,
        "none made at these turn counts"
        if summaries == 0
        else "(pipeline / its lengths' load) / (the same without summary calls)",
    )
    add(
        "end-of-phase tail",
        pipe.tokens_per_s,
        _steady(pipe),
        "pipeline's whole phase / its steady window",
    )
    for variant, step, by in _BESIDE:
        other = get("pipeline", variant)
        if other is not None:
            add(step, _steady(other), _steady(pipe), by, in_ladder=False)
    return rows


# Switches the pipeline figure does not hold: (variant, step, measured by).
_BESIDE = (
    (
        "lockstep",
        "beside: all conversations started at once (the bench before)",
        "lockstep pipeline / the staggered pipeline",
    ),
    (
        "monitored",
        "beside: /metrics readings and the live panel (a run's)",
        "pipeline with them / without",
    ),
    (
        "journaled",
        "beside: the journal's writes and fsyncs (a run's)",
        "pipeline journaling every turn / without",
    ),
)


def loss_steps(phases: Sequence[PhaseResult], *, grammar: bool = True) -> list[LossStep]:
    """The loss ladder at every concurrency that has a pipeline phase with a steady
    window; a step whose phases are missing has None for its figures. ``grammar``: the
    pipeline sent turn grammars (else that step is 1)."""
    values = sorted(by_concurrency(phases, "pipeline"))
    return [row for c in values for row in _at(c, phases, grammar)]
