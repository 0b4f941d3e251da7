"""The scripted completer the stage, rollout and pipeline tests stand on."""

from __future__ import annotations

import anyio
import pytest

from soc_async.errors import RequestError
from soc_async.llm.types import ChatRequest, Completion, TokenUsage
from soc_async.testing.completer import Gate, ScriptedCompleter


def request(text: str) -> ChatRequest:
    return ChatRequest(
        messages=[{"role": "system", "content": "s"}, {"role": "user", "content": text}]
    )


async def test_list_replies_come_in_order_and_every_call_is_recorded() -> None:
    """A str becomes a finished completion, a Completion is returned as it is, an exception
    is raised; each call keeps its kind, request, affinity, priority and outcome."""
    cut = Completion(text="half", finish_reason="length", usage=TokenUsage(completion=9))
    model = ScriptedCompleter(["one", cut, RequestError("no", status=400)])
    first = await model.complete("persona", request("a"), affinity="x", priority=3)
    assert (first.text, first.finish_reason, first.model) == ("one", "stop", "scripted-model")
    assert (first.usage.prompt, first.usage.completion) == (100, 50)
    assert await model.complete("turn", request("b")) is cut
    with pytest.raises(RequestError):
        await model.complete("summary", request("c"))
    assert model.kinds == ["persona", "turn", "summary"]
    assert [c.user for c in model.calls] == ["a", "b", "c"]
    assert (model.calls[0].affinity, model.calls[0].priority) == ("x", 3)
    assert [c.outcome for c in model.calls] == ["answered", "answered", "raised"]
    assert model.requests("turn") == [request("b")]
    with pytest.raises(AssertionError, match="no reply left for call 3"):
        await model.complete("turn", request("d"))


async def test_a_reply_function_gets_kind_request_and_call_number() -> None:
    """The function is called with the call's kind, its request and its number from 0."""
    seen: list[tuple[str, str, int]] = []

    def reply(kind: str, req: ChatRequest, n: int) -> str:
        seen.append((kind, req.messages[-1]["content"], n))
        return f"{kind}-{n}"

    model = ScriptedCompleter(reply)
    assert (await model.complete("turn", request("a"))).text == "turn-0"
    assert (await model.complete("summary", request("b"))).text == "summary-1"
    assert seen == [("turn", "a", 0), ("summary", "b", 1)]


async def test_a_gate_holds_calls_of_its_kind_from_the_nth_until_opened() -> None:
    """Calls before ``after`` pass; later ones of that kind wait at the gate, other kinds
    do not; opening lets them through, and a cancelled held call is recorded as such."""
    gate = Gate(after=1)
    model = ScriptedCompleter(lambda kind, req, n: kind, gates={"turn": gate})
    assert (await model.complete("turn", request("a"))).text == "turn"
    texts: list[str] = []

    async def ask(kind: str) -> None:
        texts.append((await model.complete(kind, request(kind))).text)

    async with anyio.create_task_group() as tg:
        tg.start_soon(ask, "turn")
        await gate.reached()
        await ask("summary")
        assert texts == ["summary"] and gate.held == 1
        gate.open()
    assert texts == ["summary", "turn"] and gate.held == 0

    other = Gate()
    model = ScriptedCompleter(["never"], gates={"turn": other})
    async with anyio.create_task_group() as tg:
        tg.start_soon(model.complete, "turn", request("x"))
        await other.reached()
        tg.cancel_scope.cancel()
    assert model.calls[0].outcome == "cancelled" and other.held == 0


async def test_from_writer_answers_every_kind() -> None:
    """The writer-backed completer replies to any kind, reading what it can off the prompt."""
    model = ScriptedCompleter.from_writer()
    summary = ChatRequest(
        messages=[
            {"role": "system", "content": "You keep a running summary of an online chat"},
            {"role": "user", "content": "Next stretch of the chat: ..."},
        ]
    )
    assert (await model.complete("summary", summary)).text.startswith("They caught up")
    assert (await model.complete("other", request("anything"))).text == "ok"
