"""Figure 1, counts and failures: records per stage, failures by stage and reason,
tokens and models per stage."""

from __future__ import annotations

from collections import Counter, defaultdict

from soc_async.records import Conversation, Experience, Failure, Persona
from soc_async.report.model import Counts

__all__ = ["CountsFigure"]


class CountsFigure:
    def __init__(self) -> None:
        self._n: Counter[str] = Counter()
        self._failures: Counter[str] = Counter()
        self._reasons: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._tokens: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._models: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._retries: Counter[str] = Counter()

    def persona(self, p: Persona) -> None:
        self._record("personas", p.meta.model, p.meta.prompt_tokens, p.meta.completion_tokens)

    def experience(self, e: Experience) -> None:
        m = e.meta
        self._record("experiences", m.model, m.prompt_tokens, m.completion_tokens)

    def conversation(self, c: Conversation) -> None:
        self._record("chats", c.model, c.usage.prompt, c.usage.completion, c.usage.cached)
        self._retries.update(c.retries)

    def failure(self, f: Failure) -> None:
        self._failures[f.stage] += 1
        self._reasons[f.stage][f.reason] += 1
        self._retries.update(f.retries)

    def _record(
        self, stage: str, model: str, prompt: int, completion: int, cached: int = 0
    ) -> None:
        self._n[stage] += 1
        tokens = self._tokens[stage]
        tokens["prompt"] += prompt
        tokens["completion"] += completion
        tokens["cached"] += cached
        self._models[stage][model or "(unnamed)"] += 1

    def result(self, targets: dict[str, int]) -> Counts:
        return Counts(
            personas=self._n["personas"],
            experiences=self._n["experiences"],
            conversations=self._n["chats"],
            targets=dict(targets),
            failures=dict(self._failures.most_common()),
            failure_reasons={s: dict(c.most_common()) for s, c in sorted(self._reasons.items())},
            tokens={s: dict(c) for s, c in self._tokens.items()},
            models={s: dict(c.most_common()) for s, c in self._models.items()},
            retries=dict(self._retries.most_common()),
        )
