"""Figure 6, naturalness proxies: lexical diversity (MTLD per conversation and per
persona, distinct-1/2 over the corpus), how long text messages are, and how often a
turn has three messages, by cadence.

Only ``text`` messages count: the other types carry a caption ("[bus image]"), not
words somebody typed. MTLD is unreliable below about 50 words (McCarthy & Jarvis 2010;
TAALED's guidance), so shorter conversations and sides are left out and counted.
"""

from __future__ import annotations

from collections import defaultdict

from soc_async.records import CADENCES, Conversation
from soc_async.report.lexical import DistinctCounter, mtld, tokens
from soc_async.report.model import Moments, Naturalness, Share

__all__ = ["MTLD_MIN_TOKENS", "NaturalnessFigure"]

MTLD_MIN_TOKENS = 50


class NaturalnessFigure:
    def __init__(self) -> None:
        self._fig = Naturalness(mtld_min_tokens=MTLD_MIN_TOKENS)
        self._d1 = DistinctCounter(1)
        self._d2 = DistinctCounter(2)
        self._persona_sum: defaultdict[str, float] = defaultdict(float)
        self._persona_n: defaultdict[str, int] = defaultdict(int)
        self._three: defaultdict[str, Share] = defaultdict(Share)

    def conversation(self, c: Conversation) -> None:
        fig = self._fig
        whole: list[str] = []
        sides: dict[str, list[str]] = {}
        three = self._three[c.cadence]
        for turn in c.turns:
            three.add(len(turn.messages) >= 3)
            side = sides.setdefault(turn.sender, [])
            for m in turn.messages:
                if m.type != "text":
                    continue
                words = tokens(m.text)
                fig.words += len(words)
                fig.message_words.add(len(words))
                fig.message_words_hist.add(len(words))
                self._d1.add(words)
                self._d2.add(words)
                whole.extend(words)
                side.extend(words)
        if len(whole) >= MTLD_MIN_TOKENS:
            value = mtld(whole)
            fig.mtld.add(value)
            fig.mtld_hist.add(value)
        else:
            fig.mtld_short += 1
        for persona_id, words in sides.items():
            if len(words) >= MTLD_MIN_TOKENS:
                self._persona_sum[persona_id] += mtld(words)
                self._persona_n[persona_id] += 1

    def result(self) -> Naturalness:
        fig = self._fig
        per_persona = Moments()
        for persona_id, total in self._persona_sum.items():
            per_persona.add(total / self._persona_n[persona_id])
        fig.mtld_persona = per_persona
        fig.distinct_1 = self._d1.ratio()
        fig.distinct_2 = self._d2.ratio()
        fig.distinct_estimated = self._d1.estimated or self._d2.estimated
        order = [c for c in CADENCES if c in self._three] + sorted(
            c for c in self._three if c not in CADENCES
        )
        fig.three_messages = {c: self._three[c] for c in order}
        return fig
