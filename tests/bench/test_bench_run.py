"""The bench end to end against the fake server: phases, files, and the command."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from fakeproc import FakeProcess
from rich.console import Console

from soc_async import config as config_mod
from soc_async.bench import reference, session
from soc_async.bench.report import CSV_COLUMNS, render_breakdown, write_reports
from soc_async.bench.results import BenchSettings
from soc_async.bench.runner import run_bench
from soc_async.commands import bench as bench_command
from soc_async.errors import InputError, ServerError, first_error
from soc_async.testing.fake_server import FakeServer
from soc_async.testing.scripted import ScriptedWriter

FakeServerFactory = Callable[..., Awaitable[FakeServer]]  # the conftest's fake_server fixture

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


async def test_run_bench_measures_every_phase(
    fake_server: FakeServerFactory, tmp_path: Path
) -> None:
    """Each value gets a pipeline and a ceiling phase shaped like it; the files hold them."""
    server = await fake_server(reply=ScriptedWriter(seed=1), ttft_s=0.002, tpot_s=0.0002)
    config = config_mod.override(
        config_mod.RunConfig(), {"endpoints": [server.url], "chat.max_turns": 2}
    )
    settings = BenchSettings(concurrency=[1, 2], conversations=2, max_turns=2, adaptive=False)
    result = await run_bench(config, settings)

    assert [(p.phase, p.concurrency) for p in result.phases] == [
        ("pipeline", 1), ("ceiling", 1), ("pipeline", 2), ("ceiling", 2),
    ]  # fmt: skip
    for pipe, ceil in zip(result.phases[::2], result.phases[1::2], strict=True):
        assert pipe.conversations == 2 and pipe.conversations_failed == 0
        assert pipe.requests == 4  # 2 conversations x 2 turns
        assert pipe.output_tokens > 0 and pipe.tokens_per_s > 0
        assert pipe.prefix_hit_rate is not None  # the fake server exports the counters
        assert pipe.ttft_s.p50 is None  # ... but no TTFT histogram
        assert pipe.latency_s.p50 is not None and pipe.queue_s.p50 is not None
        # The ceiling imitates the pipeline's turns: same count, output, prompt length.
        assert ceil.requests == pipe.requests
        assert pipe.mean_completion_tokens is not None and pipe.mean_prompt_tokens is not None
        assert ceil.mean_completion_tokens == round(pipe.mean_completion_tokens)
        assert ceil.mean_prompt_tokens == pytest.approx(pipe.mean_prompt_tokens, rel=0.05)
    assert result.summary.recommended in (1, 2)
    assert result.environment["server_model"] == "fake-model"
    assert result.environment["server_urls"] == [server.url]

    written = write_reports(result, tmp_path)
    assert {p.name for p in written} == {"bench.csv", "bench.json", "bench.png"}
    rows = list(csv.DictReader((tmp_path / "bench.csv").read_text().splitlines()))
    assert [r["phase"] for r in rows] == ["pipeline", "ceiling", "pipeline", "ceiling"]
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert float(rows[0]["vs_ceiling"]) > 0
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["settings"]["concurrency"] == [1, 2]
    assert data["config"]["chat"]["max_turns"] == 2 and "api_key" not in data["config"]
    assert (tmp_path / "bench.png").read_bytes().startswith(PNG_MAGIC)


@pytest.fixture
def fake_process() -> Iterator[str]:
    """The fake server in its own process, answering with valid scripted turns."""
    with FakeProcess(
        "--reply", "soc_async.testing.scripted:reply", "--ttft-s", "0.002", "--no-record"
    ) as fake:
        yield fake.url


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench_command.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["bench", *argv])


def test_bench_command_writes_files_and_table(
    fake_process: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command sweeps, runs the adaptive controller, writes the three files and
    prints the table and a recommended concurrency; exit code 0."""
    out = tmp_path / "bench"
    argv = [
        "--endpoint", fake_process, "--concurrency", "2,1", "--conversations", "2",
        "--max-turns", "2", "--out", str(out), "--no-grammar",
    ]  # fmt: skip
    assert session.run(parse(argv), live=False) == 0
    printed = capsys.readouterr().out
    assert "recommended concurrency:" in printed and "adaptive controller:" in printed

    rows = list(csv.DictReader((out / "bench.csv").read_text().splitlines()))
    assert [(r["phase"], r["concurrency"]) for r in rows] == [
        ("pipeline", "1"), ("ceiling", "1"), ("pipeline", "2"), ("ceiling", "2"),
        ("adaptive", ""),
    ]  # fmt: skip
    assert all(float(r["tokens_per_s"]) > 0 for r in rows)
    assert float(rows[-1]["vs_best_fixed"]) > 0
    data = json.loads((out / "bench.json").read_text())
    assert data["settings"]["grammar"] is False
    assert data["config"]["calls"]["turn"]["grammar"] is False
    env = data["environment"]
    assert {"python", "platform", "cpu_count", "soc_async", "server_model", "vllm_version"} <= set(
        env
    )
    assert env["vllm_version"] is None  # the fake server has no /version
    adaptive = data["phases"][-1]
    assert adaptive["phase"] == "adaptive" and adaptive["capacity_history"]
    assert 1 <= adaptive["mean_capacity"] <= 2
    assert (out / "bench.png").read_bytes().startswith(PNG_MAGIC)


@pytest.mark.parametrize("value", ["0,2", "a,b", ","])
def test_bad_concurrency_is_a_usage_error(value: str) -> None:
    """A concurrency list that is not positive integers is refused before anything runs."""
    with pytest.raises(InputError, match="--concurrency"):
        session.settings_from(parse(["--concurrency", value]), config_mod.RunConfig())


def test_first_error_unwraps_task_groups() -> None:
    """Out of nested task-group failures the CLI gets an interrupt first, then the
    project's own error, and the group itself only when it holds neither."""
    server_down = ServerError("http://x: every server down")
    nested = ExceptionGroup("outer", [ValueError("a"), ExceptionGroup("inner", [server_down])])
    assert first_error(nested) is server_down
    interrupt = KeyboardInterrupt()
    mixed = BaseExceptionGroup("g", [server_down, BaseExceptionGroup("h", [interrupt])])
    assert first_error(mixed) is interrupt
    plain = ExceptionGroup("g", [ValueError("a")])
    assert first_error(plain) is plain


def test_unreachable_endpoint_is_a_server_error(tmp_path: Path) -> None:
    """No server at the endpoint: one ServerError (exit code 1), no files written."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed: nothing listens there
    argv = ["--endpoint", f"http://127.0.0.1:{port}", "--ready-timeout", "0"]
    argv += ["--out", str(tmp_path / "b")]
    with pytest.raises(ServerError):
        session.run(parse(argv), live=False)
    assert not (tmp_path / "b").exists()


def no_vllm_benchmark(monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes vLLM's benchmark module fail to import, as on a machine without vLLM."""
    monkeypatch.setitem(sys.modules, reference.MODULE, None)


async def test_reference_and_breakdown_without_vllm(
    fake_server: FakeServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With vLLM's benchmark missing, --reference is one note and the sweep runs on; the
    breakdown's phases (no grammar, the pipeline's spread, then the switches read against
    the pipeline) follow each ceiling, and the loss ladder starts at the ceiling."""
    no_vllm_benchmark(monkeypatch)
    server = await fake_server(reply=ScriptedWriter(seed=1), ttft_s=0.002, tpot_s=0.0002)
    config = config_mod.override(
        config_mod.RunConfig(), {"endpoints": [server.url], "chat.max_turns": 2}
    )
    settings = BenchSettings(
        concurrency=[2], conversations=4, max_turns=2, adaptive=False, reference=True,
        breakdown=True,
    )  # fmt: skip
    result = await run_bench(config, settings)

    assert [(p.phase, p.variant) for p in result.phases] == [
        ("pipeline", ""), ("ceiling", ""), ("ceiling", "spread"),
        ("pipeline", "no-grammar"), ("ceiling", "no-grammar"),
        ("pipeline", "lockstep"), ("pipeline", "monitored"), ("pipeline", "journaled"),
    ]  # fmt: skip
    (missing,) = [n for n in result.notes if n.startswith("no reference phase")]
    assert reference.MODULE in missing
    assert any("fitted, not exact" in n for n in result.notes)  # the fake has no /tokenize
    assert result.summary.points[0].reference_tokens_per_s is None
    pipe, ceil, spread, no_grammar, its_load, *switches = result.phases
    assert all(p.conversations_failed == 0 and p.requests >= 2 for p in switches)
    assert pipe.steady_tokens_per_s is not None and ceil.steady_tokens_per_s is not None
    assert spread.requests == ceil.requests and its_load.requests == no_grammar.requests
    assert result.breakdown and result.breakdown[0].step == "the bench's uniform load"
    ladder = [r for r in result.breakdown if r.in_ladder]
    assert ladder[-1].step == "end-of-phase tail"
    assert [r.step.split(":")[0] for r in result.breakdown if not r.in_ladder] == ["beside"] * 3
    console = Console(width=200, record=True)
    console.print(render_breakdown(result))
    assert "prompt-length spread" in console.export_text()


def test_bench_command_says_the_reference_is_missing(
    fake_process: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`bench --reference` where vLLM's benchmark cannot be imported: exit 0, the files,
    and one note under the table saying the reference phase was skipped and why (logged
    once as well, when it happens)."""
    no_vllm_benchmark(monkeypatch)
    out = tmp_path / "bench"
    argv = [
        "--endpoint", fake_process, "--concurrency", "2", "--conversations", "2",
        "--max-turns", "2", "--out", str(out), "--no-grammar", "--no-adaptive", "--reference",
    ]  # fmt: skip
    assert session.run(parse(argv), live=False) == 0
    printed = capsys.readouterr().out
    skipped = [line for line in printed.splitlines() if line.startswith("note: no reference")]
    assert len(skipped) == 1 and reference.MODULE in skipped[0]
    data = json.loads((out / "bench.json").read_text())
    assert data["settings"]["reference"] is True
    assert [p["phase"] for p in data["phases"]] == ["pipeline", "ceiling"]
    assert any(n.startswith("no reference phase") for n in data["notes"])
    rows = list(csv.DictReader((out / "bench.csv").read_text().splitlines()))
    assert rows[0]["vs_reference"] == "" and float(rows[0]["vs_ceiling"]) > 0
