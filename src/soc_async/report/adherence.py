"""Figure 2, rules: every record re-checked by :mod:`.rules`; the share that passes
(it should be 100%) and which rules the others break."""

from __future__ import annotations

from collections import Counter

from soc_async.config import RunConfig
from soc_async.records import Conversation, Experience, Persona
from soc_async.report.model import RuleExample, Rules, Share
from soc_async.report.rules import (
    ChatChecks,
    Finding,
    check_conversation,
    check_experience,
    check_persona,
)

__all__ = ["MAX_EXAMPLES", "RulesFigure", "chat_rules"]

MAX_EXAMPLES = 20


def chat_rules(config: RunConfig) -> ChatChecks:
    """The checker's rules from a run's config."""
    ch = config.chat
    return ChatChecks(
        max_turns=ch.max_turns,
        min_messages=ch.min_messages,
        max_messages=ch.max_messages,
        start_date=ch.start_date,
        gaps={k: (v[0], v[1]) for k, v in ch.gaps.items()},
        min_turns=ch.min_turns,
        max_overtime_turns=ch.max_overtime_turns,
        opening_minutes=ch.opening_minutes,
    )


class RulesFigure:
    """Keeps the persona ids and names it needs for the conversation checks, and the
    experiences' own start dates (only those that set one)."""

    def __init__(self, config: RunConfig) -> None:
        self._rules = chat_rules(config)
        self._events = (config.experience.min_events, config.experience.max_events)
        self._names: dict[str, str] = {}
        self._starts: dict[str, str] = {}
        self._times: dict[str, str] = {}  # experience id -> start_time, where set
        # experience id -> {event: persona id it names}, attributed events only
        self._owners: dict[str, dict[str, str]] = {}
        self._fig = Rules()
        self._by: dict[str, Counter[str]] = {k: Counter() for k in ("c", "p", "e")}

    def persona(self, p: Persona) -> None:
        self._names[p.id] = p.meta.name
        self._note("p", p.id, check_persona(p), self._fig.personas)

    def experience(self, e: Experience) -> None:
        ids = self._names.keys() if self._names else None
        lo, hi = self._events
        found = check_experience(e, ids, min_events=lo, max_events=hi)
        self._note("e", e.id, found, self._fig.experiences)
        if e.start_date:
            self._starts[e.id] = e.start_date[:10]
        if e.start_time:
            self._times[e.id] = e.start_time
        if len(e.event_personas) == len(e.instant_events):
            owned = {
                ev: owner
                for ev, owner in zip(e.instant_events, e.event_personas, strict=True)
                if owner is not None
            }
            if owned:
                self._owners[e.id] = owned

    def conversation(self, c: Conversation) -> None:
        found = check_conversation(
            c,
            self._rules,
            persona_ids=self._names.keys() if self._names else None,
            names=self._names or None,
            start_date=self._starts.get(c.experience_id),
            start_time=self._times.get(c.experience_id),
            event_owners=self._owners.get(c.experience_id),
        )
        self._note("c", c.chat_id, found, self._fig.conversations)

    def _note(self, kind: str, item: str, found: list[Finding], share: Share) -> None:
        share.add(not found)
        for f in found:
            self._by[kind][f.rule] += 1
        if found and len(self._fig.examples) < MAX_EXAMPLES:
            self._fig.examples.append(
                RuleExample(id=item, rule=found[0].rule, detail=found[0].detail)
            )

    def result(self) -> Rules:
        fig = self._fig
        fig.by_rule = dict(self._by["c"].most_common())
        fig.personas_by_rule = dict(self._by["p"].most_common())
        fig.experiences_by_rule = dict(self._by["e"].most_common())
        return fig
