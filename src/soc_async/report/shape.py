"""Figure 5, chat shape: turns per conversation, messages per turn and the gaps between
messages by cadence, message types, endings, instant events and summaries."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

from soc_async.config import ChatConfig
from soc_async.records import CADENCES, Conversation
from soc_async.report.model import Histogram, Moments, Shape, Share
from soc_async.report.rules import ENDING_STYLES, clock_minutes

__all__ = ["GAP_EDGES", "ShapeFigure"]

# Minutes between consecutive messages: fine where realtime chats live, coarse for async.
GAP_EDGES: list[float] = [0, 1, 2, 5, 10, 15, 30, 60, 120, 240, 360, 720, 1440, 2880, 4320, 10080]
_YEAR = 366 * 24 * 60


def _ordered(keys: Iterable[str]) -> list[str]:
    """Cadences in their natural order (realtime, delayed, async), then any other."""
    present = list(keys)
    return [c for c in CADENCES if c in present] + sorted(k for k in present if k not in CADENCES)


class ShapeFigure:
    def __init__(self, chat: ChatConfig) -> None:
        self._window = chat.active_window
        self._event_target = chat.instant_event_p
        self._turns: Counter[int] = Counter()
        self._turn_moments = Moments()
        self._per_turn: defaultdict[str, Counter[int]] = defaultdict(Counter)
        self._types: Counter[str] = Counter()
        self._gaps = {c: Histogram.empty(GAP_EDGES) for c in CADENCES}
        self._ended: Counter[str] = Counter()
        self._events = Share()
        self._summaries = Share()
        self._summarized_long = Share()
        self._summary_words = Moments()
        self._spent = Share()

    def conversation(self, c: Conversation) -> None:
        n = len(c.turns)
        self._turns[n] += 1
        self._turn_moments.add(n)
        self._ended[c.ended_by] += 1
        if c.ended_by == "exhausted":
            budget = sum(t.turns for t in c.topics)
            self._spent.add(c.style in ENDING_STYLES and bool(c.topics) and n >= budget)
        has_summary = bool(c.summary.strip())
        self._summaries.add(has_summary)
        if has_summary:
            self._summary_words.add(len(c.summary.split()))
        if n > self._window:
            self._summarized_long.add(has_summary)
        gaps = self._gaps.setdefault(c.cadence, Histogram.empty(GAP_EDGES))
        per_turn = self._per_turn[c.cadence]
        prev: int | None = None
        for turn in c.turns:
            per_turn[len(turn.messages)] += 1
            self._events.add(turn.instant_event is not None)
            for m in turn.messages:
                self._types[m.type] += 1
                now = clock_minutes(m.d, m.t)
                if now is None:
                    prev = None
                    continue
                if prev is not None:
                    while now < prev - 24 * 60:  # the calendar rolled over
                        now += _YEAR
                    if now >= prev:
                        gaps.add(now - prev)
                prev = now

    def result(self) -> Shape:
        return Shape(
            conversations=self._turn_moments.n,
            turns={str(k): v for k, v in sorted(self._turns.items())},
            turn_moments=self._turn_moments,
            messages_per_turn={
                cadence: {str(k): v for k, v in sorted(self._per_turn[cadence].items())}
                for cadence in _ordered(self._per_turn)
            },
            message_types=dict(self._types.most_common()),
            gaps={c: h for c, h in self._gaps.items() if sum(h.counts)},
            ended_by=dict(self._ended.most_common()),
            instant_events=self._events,
            instant_event_target=self._event_target,
            summaries=self._summaries,
            summarized_when_long=self._summarized_long,
            summary_words=self._summary_words,
            ending_when_spent=self._spent,
        )
