"""Several managed engines on a fake GPU node: staggered starts, an engine that dies is
restarted while the others serve on, restarts are bounded, and the group is lost only
when every engine is."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import FakeNode

from soc_async.config import ServerConfig
from soc_async.errors import ServerStartError
from soc_async.llm.engines import MOVES, EngineGroup, EngineState, IllegalEngineMove, _Slot
from soc_async.llm.layout import GIB, GpuSet
from soc_async.llm.plan import EnginePlan, EngineSpec, plan_engines
from soc_async.llm.readiness import read_endpoints_file
from soc_async.llm.server import ServerSpec

S = EngineState


def gpus(n: int) -> GpuSet:
    return GpuSet(ids=tuple(str(i) for i in range(n)), memory_bytes=80 * GIB)


def plan(node: FakeNode, monkeypatch: pytest.MonkeyPatch, n: int, **env: str) -> EnginePlan:
    node.apply(monkeypatch)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    node.model()
    server = ServerConfig(
        model="Qwen/Qwen2.5-7B-Instruct", startup_timeout_s=120, command=["vllm", "serve"]
    )
    return plan_engines(server, gpus=gpus(n), log_dir=node.tmp / "logs")


def ask(url: str) -> bool:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    request = urllib.request.Request(
        url + "/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status == 200
    except OSError:
        return False


def poll_until(group: EngineGroup, done: Callable[[], bool], limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while not done():
        assert time.monotonic() < deadline, group.states()
        group.poll()
        time.sleep(0.1)


def test_the_state_table_refuses_what_it_does_not_list() -> None:
    """A failed engine is never started again; a stopped one never moves."""
    assert S.STARTING not in MOVES[S.FAILED]
    assert MOVES[S.STOPPED] == frozenset()
    slot = _Slot(0, EngineSpec(spec=ServerSpec(model="m", port=1)))
    slot.move(S.STARTING, 0.0)
    with pytest.raises(IllegalEngineMove, match="starting -> waiting"):
        slot.move(S.WAITING, 1.0)


@pytest.mark.slow
def test_starts_are_staggered_and_every_engine_becomes_ready(
    fake_node: FakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a long stagger, the next engine starts only once the one before is ready
    (never two loading at once); all three serve, and the endpoints file lists them."""
    group = EngineGroup(
        plan(fake_node, monkeypatch, 3, FAKE_VLLM_LOAD_S="0.5"), stagger_s=300, stop_grace_s=5
    )
    starts: list[dict[int, EngineState]] = []
    try:
        group.start()
        seen = group.states()
        while any(s in (S.WAITING, S.STARTING) for s in group.states().values()):
            group.poll()
            now = group.states()
            for k, state in now.items():
                if seen[k] is S.WAITING and state is not S.WAITING:
                    starts.append({j: s for j, s in now.items() if j != k})
            seen = now
            time.sleep(0.05)
        assert len(group.ready_urls()) == 3
        assert len(starts) == 2
        for others in starts:  # when engine k started, no other was loading
            assert S.STARTING not in others.values()
        path = group.write_endpoints_file(fake_node.tmp / "engines.json")
        served = read_endpoints_file(path)
        assert served is not None and served.urls == group.urls
        assert [e.gpus for e in served.engines] == ["0", "1", "2"]
        assert all(ask(url) for url in group.urls)
    finally:
        group.stop()
    assert all(s is S.STOPPED for s in group.states().values())
    assert read_endpoints_file(path) is not None  # its writer (this process) still runs


@pytest.mark.slow
def test_a_dead_engine_is_restarted_while_the_others_serve(
    fake_node: FakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Engine 1 crashes on its first request: it goes to BACKOFF and is started again on
    the same port and devices; engine 0 stays READY and answers throughout."""
    p = plan(
        fake_node,
        monkeypatch,
        2,
        FAKE_VLLM_DIE_AFTER="1",
        FAKE_VLLM_DIE_DEVICES="1",
        FAKE_VLLM_DIE_ONCE=str(fake_node.tmp / "deaths"),
        FAKE_VLLM_RECORD=str(fake_node.tmp / "starts.log"),
    )
    with EngineGroup(p, restart_delay_s=0.2, stagger_s=0.1, stop_grace_s=5) as group:
        first, second = group.urls
        assert not ask(second)  # it dies answering
        poll_until(group, lambda: group.states()[1] is S.BACKOFF)
        assert group.states()[0] is S.READY and ask(first)
        poll_until(group, lambda: group.states()[1] is S.READY)
        assert ask(second) and ask(first)
        assert group.slots[1].exits == 1 and group.live() == 2
    starts = (fake_node.tmp / "starts.log").read_text().splitlines()
    assert [line.split()[0] for line in starts] == [
        "CUDA_VISIBLE_DEVICES=0",
        "CUDA_VISIBLE_DEVICES=1",
        "CUDA_VISIBLE_DEVICES=1",
    ]
    assert starts[1].split()[2:] == starts[2].split()[2:]  # same port, same flags


@pytest.mark.slow
def test_restarts_are_bounded_and_the_group_is_lost_only_with_its_last_engine(
    fake_node: FakeNode, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An engine that dies on every request is given up after max_restarts restarts
    (FAILED, never started again) while the other serves on; the group is alive until
    that one goes too."""
    p = plan(fake_node, monkeypatch, 2, FAKE_VLLM_DIE_AFTER="1", FAKE_VLLM_DIE_DEVICES="0")
    group = EngineGroup(p, max_restarts=2, restart_delay_s=0.1, stagger_s=0.1, stop_grace_s=5)
    try:
        group.start()
        group.wait_started(poll_s=0.1)
        for _ in range(3):
            poll_until(group, lambda: group.states()[0] in (S.READY, S.FAILED))
            if group.states()[0] is S.FAILED:
                break
            ask(group.urls[0])
            poll_until(group, lambda: group.states()[0] in (S.BACKOFF, S.FAILED))
        assert group.states() == {0: S.FAILED, 1: S.READY}
        assert group.slots[0].exits == 3 and group.live() == 1
        assert "exited while serving (exit code 17)" in group.slots[0].last_error
        group.slots[1].server.stop(5)  # type: ignore[union-attr]
        group.max_restarts = 0
        poll_until(group, lambda: group.live() == 0)
    finally:
        group.stop()


def test_no_engine_ready_is_an_error_with_the_log_tail(
    fake_node: FakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Engines that cannot start (the model is not in the offline cache) are given up
    and the group reports why, with the end of vLLM's log."""
    p = plan(fake_node, monkeypatch, 1)
    p.engines[0].spec.model = "org/not-downloaded"
    with pytest.raises(ServerStartError, match="no vLLM engine became ready") as caught:
        EngineGroup(p, max_restarts=1, restart_delay_s=0.05, stop_grace_s=5).__enter__()
    assert "offline mode" in caught.value.log_tail
