"""The chat rollout: drives one conversation's state machine through model calls.

The rules live in :mod:`soc_async.chat.state` (pure); this module does the I/O
around them: renders each turn's prompt in prefix-cache order, asks the model, feeds the
reply to the state machine, retries a violation with a one-line correction, folds old
turns into a rolling summary in the background, and journals every accepted turn so a
resumed run continues mid-conversation with the same random draws.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import date

import msgspec

from soc_async import prompts
from soc_async.chat import state as sm
from soc_async.chat.grammar import turn_grammar
from soc_async.config import RunConfig
from soc_async.errors import RequestError
from soc_async.formats.clock import format_stamp
from soc_async.formats.turn import TurnError, parse_turn
from soc_async.llm.types import ChatRequest, Completer, Completion
from soc_async.records import Conversation, Experience, Failure, Persona, Turn, Usage

SYSTEM_PROMPT_TEMPLATE = "chat_system.j2"


class TurnEvent(msgspec.Struct, tag="turn", kw_only=True):
    """Journaled when a turn is accepted; ``ended`` marks the turn that ended the chat."""

    turn: Turn
    ended: bool = False


class FoldEvent(msgspec.Struct, tag="fold", kw_only=True):
    """Journaled when the oldest ``count`` unfolded turns went into the summary."""

    summary: str
    count: int


class StartEvent(msgspec.Struct, tag="start", kw_only=True):
    """Journaled first, so a resume knows which experience a chat was rolled out from."""

    experience_id: str


ChatEvent = StartEvent | TurnEvent | FoldEvent
Journal = Callable[[str, ChatEvent], Awaitable[None]]

_event_decoder = msgspec.json.Decoder(ChatEvent)
_event_encoder = msgspec.json.Encoder()


def encode_event(event: ChatEvent) -> bytes:
    return _event_encoder.encode(event)


def decode_event(data: bytes | str) -> ChatEvent:
    return _event_decoder.decode(data)


def render_turn(turn: Turn, names: dict[str, str]) -> str:
    """One past turn as the transcript shows it: speaker, then one line per message.

    The turn's private instant event is deliberately left out: the other side must not
    see it, and the speaker's own reaction is in the messages.
    """
    lines = [f"{names[turn.sender]}:"]
    for m in turn.messages:
        kind = "" if m.type == "text" else f" ({m.type})"
        lines.append(f"  [{m.d} {m.t}]{kind} {m.text}")
    return "\n".join(lines)


class ChatStage:
    """Rolls out conversations; one instance serves every conversation of a run."""

    def __init__(
        self,
        config: RunConfig,
        completer: Completer,
        *,
        model_name: str,
        journal: Journal,
        send_priority: bool = False,
    ) -> None:
        self._config = config
        self._completer = completer
        self._model = model_name
        self._journal = journal
        self._send_priority = send_priority
        self._system = prompts.render(SYSTEM_PROMPT_TEMPLATE)
        self._summary_system = prompts.render("summary_system.j2")

    async def roll_out(
        self,
        chat_id: str,
        experience: Experience,
        personas: dict[str, Persona],
        journaled: Sequence[ChatEvent] = (),
    ) -> Conversation | Failure:
        """The finished conversation, or a failure with its reason; never half of one.

        ``journaled`` holds the events of an earlier, interrupted rollout of the same
        chat: they are replayed first, and the rollout continues from there.
        """
        names = {pid: personas[pid].meta.name for pid in experience.persona_ids}
        rules = sm.ChatRules.from_config(self._config.chat, experience.cadence)
        start = date.fromisoformat(experience.start_date or self._config.chat.start_date)
        state = sm.initial_state(
            experience, chat_id=chat_id, names=names, rules=rules, start_date=start
        )
        rollout = _Rollout(self, chat_id, experience, personas, names, rules)
        if not journaled:
            await self._journal(chat_id, StartEvent(experience_id=experience.id))
        for event in journaled:
            if isinstance(event, TurnEvent):
                state = sm.replay(state, event.turn, event.ended)
            elif isinstance(event, FoldEvent):
                state = sm.apply_fold(state, event.summary, event.count)
        return await rollout.run(state)


class _Rollout:
    """The mutable bookkeeping of one conversation in progress (usage, retries, summary)."""

    def __init__(
        self,
        stage: ChatStage,
        chat_id: str,
        experience: Experience,
        personas: dict[str, Persona],
        names: dict[str, str],
        rules: sm.ChatRules,
    ) -> None:
        self.s = stage
        self.chat_id = chat_id
        self.experience = experience
        self.names = names
        self.rules = rules
        self.usage = Usage()
        self.retries: Counter[str] = Counter()
        self.attempts = 0
        self.started = time.monotonic()
        opener = experience.opener
        other = next(p for p in experience.persona_ids if p != opener)
        self.people = [
            {"name": names[pid], "card": personas[pid].persona_text} for pid in (opener, other)
        ]

    async def run(self, state: sm.ChatState) -> Conversation | Failure:
        cfg = self.s._config
        folding: asyncio.Task[str] | None = None
        fold_count = 0
        try:
            while not sm.is_done(state):
                # A fold runs beside the next turns rather than blocking them; the window
                # simply holds a few more turns until the summary lands.
                if folding is None and sm.fold_due(state, cfg.chat.active_window, cfg.chat.fold):
                    fold_count = cfg.chat.fold
                    folded = sm.turns_to_fold(state, fold_count)
                    folding = asyncio.create_task(self._summarize(state.summary, folded))
                if folding is not None and folding.done():
                    state = await self._apply_fold(state, folding.result(), fold_count)
                    folding = None
                result = await self._next_turn(state)
                if isinstance(result, Failure):
                    return result
                state = result
            if folding is not None:
                state = await self._apply_fold(state, await folding, fold_count)
                folding = None
        except RequestError as exc:
            return self._failure(f"request:{exc.reason}", str(exc))
        finally:
            if folding is not None and not folding.done():
                folding.cancel()
        return Conversation(
            chat_id=self.chat_id,
            experience_id=self.experience.id,
            persona_ids=list(state.speakers),
            style=self.experience.style,
            cadence=self.experience.cadence,
            topics=self.experience.topics,
            turns=state.turns,
            summary=state.summary,
            ended_by=state.ended_by or "max_turns",
            model=self.s._model,
            usage=self.usage,
            retries=dict(self.retries),
        )

    async def _apply_fold(self, state: sm.ChatState, summary: str, count: int) -> sm.ChatState:
        await self.s._journal(self.chat_id, FoldEvent(summary=summary, count=count))
        return sm.apply_fold(state, summary, count)

    async def _next_turn(self, state: sm.ChatState) -> sm.ChatState | Failure:
        """Asks for the next turn until the state machine accepts one or retries run out."""
        cfg = self.s._config
        call = cfg.call("turn")
        event = sm.instant_event_for(
            cfg.seed,
            self.chat_id,
            state.turn_index,
            self.experience.instant_events,
            cfg.chat.instant_event_p,
        )
        grammar = turn_grammar(state, self.rules) if call.grammar else None
        correction = ""
        last: sm.Violation | TurnError | None = None
        for _ in range(call.retries + 1):
            reply = await self._ask(state, event, grammar, correction)
            if reply.finish_reason == "length":
                last = TurnError(reason="truncated", detail="the reply was cut by max_tokens")
            else:
                parsed = parse_turn(reply.text)
                last = (
                    parsed
                    if isinstance(parsed, TurnError)
                    else sm.apply_turn(state, parsed, self.rules, instant_event=event)
                )
                if isinstance(last, sm.ChatState):
                    ended = last.ended_by == "exhausted"
                    await self.s._journal(self.chat_id, TurnEvent(turn=last.turns[-1], ended=ended))
                    return last
            self.retries[last.reason] += 1
            correction = f"{last.detail} Write the turn again following the rules."
        assert last is not None
        return self._failure(f"retries_exhausted:{last.reason}", last.detail)

    async def _ask(
        self, state: sm.ChatState, event: str | None, grammar: str | None, correction: str
    ) -> Completion:
        speaker = sm.current_speaker(state)
        listener = next(p for p in state.speakers if p != speaker)
        transcript = "\n\n".join(render_turn(t, self.names) for t in state.turns[state.folded :])
        fixed = prompts.render(
            "chat_user.j2",
            people=self.people,
            experience_text=self.experience.experience_text,
            summary=state.summary,
            transcript=transcript,
        )
        last_time, last_day = ("", "") if state.clock is None else format_stamp(state.clock)
        tail = prompts.render(
            "chat_tail.j2",
            speaker=self.names[speaker],
            listener=self.names[listener],
            state_line=sm.expected_state_line(state),
            first_turn=state.clock is None,
            start_day=state.start_date.strftime("%d.%m"),
            last_time=last_time,
            last_day=last_day,
            ending_allowed=sm.ending_allowed(state),
            event=event,
            correction=correction,
        )
        remaining = sm.turn_limit(state) - state.turn_index
        user = fixed + tail
        # Only the joined prompt stays alive while the request waits for its slot: with
        # thousands of conversations waiting, a second copy is a third of the memory.
        del fixed, tail, transcript
        request = self._request(
            "turn",
            self.s._system,
            user,
            grammar=grammar,
            priority=remaining if self.s._send_priority else None,
        )
        self.attempts += 1
        reply = await self.s._completer.complete(
            "turn", request, affinity=self.chat_id, priority=remaining
        )
        self._count(reply)
        return reply

    async def _summarize(self, summary: str, turns: list[Turn]) -> str:
        user = prompts.render(
            "summary_user.j2",
            summary=summary,
            transcript="\n\n".join(render_turn(t, self.names) for t in turns),
        )
        request = self._request("summary", self.s._summary_system, user)
        reply = await self.s._completer.complete("summary", request, affinity=self.chat_id)
        self._count(reply)
        # A summary is prose for the next prompts, not a validated record: a cut one is
        # still better than none, so only an empty reply falls back to the old summary.
        text = " ".join(reply.text.split())
        return text or summary

    def _request(self, kind: str, system: str, user: str, **fields: object) -> ChatRequest:
        """A request of call kind ``kind`` with that kind's model and sampling settings."""
        cfg = self.s._config
        call = cfg.call(kind)
        return ChatRequest(
            messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
            model=cfg.model_for(kind) or self.s._model,
            max_tokens=call.max_tokens,
            temperature=call.temperature,
            top_p=call.top_p,
            **fields,  # type: ignore[arg-type]
        )

    def _count(self, reply: Completion) -> None:
        self.usage.prompt += reply.usage.prompt
        self.usage.completion += reply.usage.completion
        self.usage.cached += reply.usage.cached

    def _failure(self, reason: str, detail: str) -> Failure:
        return Failure(
            id=self.chat_id,
            stage="chats",
            reason=reason,
            attempts=self.attempts,
            detail=detail[:500],
            retries=dict(self.retries),
        )
