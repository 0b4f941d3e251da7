"""The chat rollout: drives one conversation's state machine through model calls.

The rules live in :mod:`soc_async.chat.state` (pure); this module does the I/O
around them: renders each turn's prompt in prefix-cache order, asks the model, feeds the
reply to the state machine, retries a violation with a one-line correction, folds old
turns into a rolling summary in the background, and journals every accepted turn so a
resumed run continues mid-conversation with the same random draws.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import date

import anyio
import msgspec
from anyio.abc import TaskGroup

from soc_async.calls import ask_until_valid, build_request, failure, model_for_item, prompts
from soc_async.chat import state as sm
from soc_async.chat.grammar import turn_grammar
from soc_async.config import RunConfig, RunFacts
from soc_async.errors import RequestError, first_error
from soc_async.formats.clock import (
    describe_stamp,
    format_day,
    format_stamp,
    parse_time,
    weekday_name,
)
from soc_async.formats.events import attribute_events
from soc_async.formats.refusal import TRUNCATED, Refusal
from soc_async.formats.turn import parse_turn
from soc_async.llm.types import ChatRequest, Completer, Completion, EncodedPrefix
from soc_async.records import Conversation, Experience, Failure, Persona, Turn, Usage

SYSTEM_PROMPT_TEMPLATE = "chat_system.j2"


class TurnEvent(msgspec.Struct, tag="turn", kw_only=True):
    """Journaled when a turn is accepted; ``ended`` marks the turn that ended the chat.

    What the turn cost (tokens, calls, refusals) travels with it, so a resumed chat's
    record counts the work done before the interruption too."""

    turn: Turn
    ended: bool = False
    # The drawn message count the turn was held to (pacing); None: no pacing, or a
    # journal written before pacing.
    messages: int | None = None
    usage: Usage | None = None
    attempts: int = 0
    retries: dict[str, int] = {}


class FoldEvent(msgspec.Struct, tag="fold", kw_only=True):
    """Journaled when the oldest ``count`` unfolded turns went into the summary."""

    summary: str
    count: int
    usage: Usage | None = None  # what the summary call cost


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


_encoded = EncodedPrefix.encode_head
_TURN_SEPARATOR = _encoded("\n\n")  # between turns in the transcript


def _opening(state: sm.ChatState) -> tuple[str, str, str, str]:
    """The start day, its weekday, and the opening window's ends, as the tail spells them."""
    opens, closes = sm.opening_window(state)
    start_day = format_day(state.start_date)
    return start_day, weekday_name(opens), describe_stamp(opens), describe_stamp(closes)


class ChatStage:
    """Rolls out conversations; one instance serves every conversation of a run."""

    def __init__(
        self,
        config: RunConfig,
        completer: Completer,
        *,
        facts: RunFacts,
        journal: Journal,
    ) -> None:
        self.config = config
        self.completer = completer
        self.facts = facts
        self.journal = journal
        # Rendered once: byte-identical for every turn of every chat (the prefix cache).
        self.system = prompts.render(SYSTEM_PROMPT_TEMPLATE)
        self.summary_system = prompts.render("summary_system.j2")

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
        rules = sm.ChatRules.from_config(self.config.chat, experience.cadence, experience.style)
        start = date.fromisoformat(experience.start_date or self.config.chat.start_date)
        opens = parse_time(experience.start_time) if experience.start_time else None
        state = sm.initial_state(
            experience,
            chat_id=chat_id,
            names=names,
            rules=rules,
            start_date=start,
            start_time=opens,
        )
        rollout = _Rollout(self, chat_id, experience, personas, names, rules)
        problem = sm.plan_problem(state)
        if problem is not None:
            return rollout._failure(problem.reason, problem.detail)
        if not journaled:
            await self.journal(chat_id, StartEvent(experience_id=experience.id))
        for event in journaled:
            if isinstance(event, TurnEvent):
                _check_pacing(self.config.seed, chat_id, state, event, rules)
                state = sm.replay(state, event.turn, event.ended)
                rollout.attempts += event.attempts
                rollout.retries.update(event.retries)
            elif isinstance(event, FoldEvent):
                state = sm.apply_fold(state, event.summary, event.count)
            if isinstance(event, TurnEvent | FoldEvent) and event.usage is not None:
                rollout.usage.add(event.usage)
        return await rollout.run(state)


def _check_pacing(
    seed: int, chat_id: str, state: sm.ChatState, event: TurnEvent, rules: sm.ChatRules
) -> None:
    """A journaled turn holds the count this run's pacing draws for it, or the journal
    belongs to another config (the draw is a pure function of seed, chat and turn)."""
    if event.messages is None:
        return
    drawn = sm.messages_for_turn(seed, chat_id, state.turn_index, rules)
    if drawn != event.messages or len(event.turn.messages) != event.messages:
        raise sm.IllegalMove(
            f"{chat_id} turn {state.turn_index + 1}: journal holds "
            f"{len(event.turn.messages)} messages drawn as {event.messages}; "
            f"this config's pacing draws {drawn}"
        )


class _Fold:
    """A summary call running beside the next turns: its result, once it lands."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.summary = ""
        self.usage = Usage()
        self.done = anyio.Event()


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
        people = [
            {"name": names[pid], "card": personas[pid].persona_text} for pid in (opener, other)
        ]
        events = experience.instant_events
        # Who each event happens to: as the experience stage attributed them, or, for a
        # record written before attribution, read off the names now.
        self.event_owners: list[str | None] = (
            list(experience.event_personas)
            if len(experience.event_personas) == len(events)
            else attribute_events(events, [(pid, names[pid]) for pid in experience.persona_ids])
        )
        # The model that writes this chat's turns: one per chat, drawn by its id.
        self.model = model_for_item(stage.config, "turn", chat_id, stage.facts.model)
        # Rendered once: the cards and the experience never change within a conversation.
        # Kept encoded as JSON, the way every request of this chat sends it first
        # (EncodedPrefix: no decoding and encoding again per turn, and a quarter of the
        # memory of a str, which takes 4 bytes a character once the cards carry emoji).
        self.fixed = _encoded(
            prompts.render(
                "chat_fixed.j2", people=people, experience_text=experience.experience_text
            )
        )
        # Each accepted turn rendered once, in order, and kept encoded like the fixed
        # part: a request splices the unfolded ones in as they are, so the transcript is
        # neither joined as text nor encoded again for every turn.
        self.rendered: list[bytes] = []
        # chat_user.j2 around its transcript, encoded, for the summary it was made with.
        self._around: tuple[str, bytes, bytes] | None = None

    async def run(self, state: sm.ChatState) -> Conversation | Failure:
        """Turns until the chat is done; a summary fold runs in the same task group, so
        no task outlives the rollout, whether it ends, fails or is cancelled."""
        self.rendered = [_encoded(render_turn(t, self.names)) for t in state.turns]
        try:
            async with anyio.create_task_group() as tg:
                result = await self._turns(state, tg)
                tg.cancel_scope.cancel()  # a failed chat leaves no summary call behind
        except BaseExceptionGroup as group:
            # Callers see the error itself, as from the other stages, not the group.
            error = first_error(group)
            if isinstance(error, RequestError):
                return self._failure(f"request:{error.reason}", str(error))
            if error is group:
                raise
            raise error from group
        if isinstance(result, Failure):
            return result
        return Conversation(
            chat_id=self.chat_id,
            experience_id=self.experience.id,
            persona_ids=list(result.speakers),
            style=self.experience.style,
            cadence=self.experience.cadence,
            topics=self.experience.topics,
            turns=result.turns,
            summary=result.summary,
            ended_by=result.ended_by or "max_turns",
            model=self.model,
            usage=self.usage,
            retries=dict(self.retries),
        )

    async def _turns(self, state: sm.ChatState, tg: TaskGroup) -> sm.ChatState | Failure:
        cfg = self.s.config
        fold: _Fold | None = None
        while not sm.is_done(state):
            # A fold runs beside the next turns rather than blocking them; the window
            # simply holds a few more turns until the summary lands.
            if fold is None and sm.fold_due(state, cfg.chat.active_window, cfg.chat.fold):
                fold = _Fold(cfg.chat.fold)
                tg.start_soon(
                    self._summarize, fold, state.summary, sm.turns_to_fold(state, fold.count)
                )
            if fold is not None and fold.done.is_set():
                state = await self._apply_fold(state, fold)
                fold = None
            result = await self._next_turn(state)
            if isinstance(result, Failure):
                return result
            state = result
        if fold is not None:
            await fold.done.wait()
            state = await self._apply_fold(state, fold)
        return state

    async def _apply_fold(self, state: sm.ChatState, fold: _Fold) -> sm.ChatState:
        event = FoldEvent(summary=fold.summary, count=fold.count, usage=fold.usage)
        await self.s.journal(self.chat_id, event)
        self.usage.add(fold.usage)
        return sm.apply_fold(state, fold.summary, fold.count)

    async def _next_turn(self, state: sm.ChatState) -> sm.ChatState | Failure:
        """Asks for the next turn until the state machine accepts one or retries run out."""
        cfg = self.s.config
        call = cfg.call("turn")
        event = sm.instant_event_for(
            cfg.seed,
            self.chat_id,
            state.turn_index,
            self.experience.instant_events,
            cfg.chat.instant_event_p,
            speaker=sm.current_speaker(state),
            owners=self.event_owners,
        )
        count = sm.messages_for_turn(cfg.seed, self.chat_id, state.turn_index, self.rules)
        rules = sm.paced(self.rules, count)
        grammar = turn_grammar(state, rules) if call.grammar else None
        remaining = sm.turn_limit(state) - state.turn_index

        def check(reply: Completion) -> sm.ChatState | Refusal:
            if reply.finish_reason == "length":
                return TRUNCATED
            parsed = parse_turn(reply.text)
            if isinstance(parsed, Refusal):
                return parsed
            return sm.apply_turn(state, parsed, rules, instant_event=event)

        outcome = await ask_until_valid(
            self.s.completer,
            "turn",
            lambda _, correction: self._request(
                state, event, grammar, correction, remaining, count
            ),
            check,
            sm.ChatState,
            retries=call.retries,
            priority=remaining,
            affinity=self.chat_id,
        )
        spent = Usage(
            prompt=outcome.prompt_tokens,
            completion=outcome.completion_tokens,
            cached=outcome.cached_tokens,
        )
        self.attempts += outcome.attempts
        self.usage.add(spent)
        self.retries.update(outcome.rejections)
        if outcome.value is None:
            return outcome.failure(
                self.chat_id, "chats", attempts=self.attempts, retries=dict(self.retries)
            )
        accepted = outcome.value
        ended = accepted.ended_by == "exhausted"
        event = TurnEvent(
            turn=accepted.turns[-1],
            ended=ended,
            messages=count,
            usage=spent,
            attempts=outcome.attempts,
            retries=outcome.rejections,
        )
        await self.s.journal(self.chat_id, event)
        self.rendered.append(_encoded(render_turn(accepted.turns[-1], self.names)))
        return accepted

    def _request(
        self,
        state: sm.ChatState,
        event: str | None,
        grammar: str | None,
        correction: str,
        remaining: int,
        count: int | None = None,
    ) -> ChatRequest:
        speaker = sm.current_speaker(state)
        listener = next(p for p in state.speakers if p != speaker)
        first_turn = state.clock is None
        last_time, last_day = ("", "") if first_turn else format_stamp(state.clock)
        # The opening window is spelled out on the first turn only (chat_tail.j2).
        opening = _opening(state) if first_turn else ("", "", "", "")
        tail = prompts.render(
            "chat_tail.j2",
            speaker=self.names[speaker],
            listener=self.names[listener],
            state_line=sm.expected_state_line(state),
            first_turn=first_turn,
            start_day=opening[0],
            weekday=opening[1],
            opens=opening[2],
            closes=opening[3],
            last_time=last_time,
            last_day=last_day,
            ending_allowed=sm.ending_allowed(state),
            event=event,
            messages=count,
            correction=f"{correction.rstrip('.')}. Write the turn again following the rules."
            if correction
            else "",
        )
        return build_request(
            self.s.config,
            self.s.facts,
            "turn",
            self.s.system,
            EncodedPrefix(self._head(state), tail),
            grammar=grammar,
            priority=remaining,
            item_id=self.chat_id,
        )

    def _head(self, state: sm.ChatState) -> bytes:
        """The prompt up to the tail, encoded: the fixed part, then chat_user.j2 (the
        summary and the unfolded turns)."""
        turns = self.rendered[state.folded :]
        if not turns:
            user = prompts.render("chat_user.j2", summary=state.summary, transcript="")
            return self.fixed + _encoded(user)
        if self._around is None or self._around[0] != state.summary:
            before, after = prompts.render_around(
                "chat_user.j2", "transcript", summary=state.summary
            )
            self._around = (state.summary, _encoded(before), _encoded(after))
        _, before, after = self._around
        return b"".join((self.fixed, before, _TURN_SEPARATOR.join(turns), after))

    async def _summarize(self, fold: _Fold, summary: str, turns: list[Turn]) -> None:
        user = prompts.render(
            "summary_user.j2",
            summary=summary,
            transcript="\n\n".join(render_turn(t, self.names) for t in turns),
        )
        request = build_request(
            self.s.config,
            self.s.facts,
            "summary",
            self.s.summary_system,
            user,
            item_id=self.chat_id,
        )
        reply = await self.s.completer.complete("summary", request, affinity=self.chat_id)
        fold.usage = Usage(
            prompt=reply.usage.prompt, completion=reply.usage.completion, cached=reply.usage.cached
        )
        # A summary is prose for the next prompts, not a validated record: a cut one is
        # still better than none, so only an empty reply falls back to the old summary.
        fold.summary = " ".join(reply.text.split()) or summary
        fold.done.set()

    def _failure(self, reason: str, detail: str) -> Failure:
        return failure(
            self.chat_id,
            "chats",
            reason=reason,
            detail=detail,
            attempts=self.attempts,
            retries=dict(self.retries),
        )
