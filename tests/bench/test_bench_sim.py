"""`soc-async bench` against the simulated engine: the sweep sized from the server, the
files, and the knee of the curve."""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from soc_async import config as config_mod
from soc_async.bench import session, sizing
from soc_async.bench.sizing import ServerFacts, plan_sweep
from soc_async.commands import bench as bench_command


@pytest.fixture
def simulator() -> Iterator[str]:
    """The `tiny` simulated engine (max_num_seqs 64, a KV cache for a few dozen chat
    turns) in its own process, 5x faster than real time, answering valid turns."""
    with subprocess.Popen(
        [sys.executable, "-m", "soc_async.testing.simulator", "--profile", "tiny",
         "--time-scale", "5", "--reply", "soc_async.testing.scripted:reply"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as proc:  # fmt: skip
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("listening on "), line
            yield line.split()[-1]
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench_command.register(parser.add_subparsers())
    return parser.parse_args(["bench", *argv])


@pytest.mark.slow
def test_bench_sweeps_the_simulator_up_to_its_batch_and_finds_the_knee(
    simulator: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No --concurrency: the sweep doubles up to the engine's max_num_seqs (64, read from
    /server_info); throughput rises, peaks inside the sweep and falls at 64 (prefix cache
    evicted, preemptions); the files hold every phase and say where the sweep came from."""
    out = tmp_path / "bench"
    args = parse(
        ["--endpoint", simulator, "--max-turns", "6", "--conversations", "1", "--out", str(out)]
    )
    assert session.run(args, live=False) == 0

    data = json.loads((out / "bench.json").read_text())
    sweep = [1, 2, 4, 8, 16, 32, 64]
    assert data["settings"]["concurrency"] == sweep
    assert "max_num_seqs 64" in data["settings"]["sweep_source"]
    assert data["environment"]["server_facts"]["time_scale"] == 5.0
    summary = data["summary"]
    rates = {p["concurrency"]: p["pipeline_tokens_per_s"] for p in summary["points"]}
    assert list(rates) == sweep
    knee = summary["recommended"]
    assert 1 < knee < 64 and summary["best_concurrency"] < 64, rates
    assert rates[1] < 0.5 * summary["best_tokens_per_s"], rates
    # Past the knee the engine evicts the conversations' cached prefixes and preempts
    # (figures from the server, so not subject to the client's timing).
    phases = {(p["phase"], p["concurrency"]): p for p in data["phases"]}
    past, fits = phases[("pipeline", 64)], [phases[("pipeline", c)] for c in (4, 8)]
    assert past["preemptions"] > max(p["preemptions"] for p in fits), phases
    assert past["prefix_hit_rate"] < min(p["prefix_hit_rate"] for p in fits) - 0.1, phases
    assert past["conversations_failed"] == 0
    assert summary["adaptive_tokens_per_s"] > 0

    rows = list(csv.DictReader((out / "bench.csv").read_text().splitlines()))
    assert [(r["phase"], r["concurrency"]) for r in rows[:2]] == [
        ("pipeline", "1"), ("ceiling", "1"),
    ]  # fmt: skip
    assert rows[-1]["phase"] == "adaptive"
    assert (out / "bench.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "sweep 1,2,4,8,16,32,64: up to the engine's max_num_seqs 64" in printed
    assert f"recommended concurrency: {knee} (the knee" in printed
    assert "5x faster than real time" in printed


def test_sweep_plans_follow_what_the_server_says() -> None:
    """max_num_seqs when known (capped at 2,048); else an estimate from the KV cache, at
    least 256; nothing known: the fixed default; the embedded CPU server: a short plan."""
    assert plan_sweep(ServerFacts(max_num_seqs=1024)).concurrency == [
        16, 32, 64, 128, 256, 512, 1024,
    ]  # fmt: skip
    assert plan_sweep(ServerFacts(max_num_seqs=8192)).concurrency[-1] == 2048
    h100 = plan_sweep(ServerFacts(num_gpu_blocks=24_000, block_size=16))
    assert h100.concurrency[-1] == 512 and "384,000 tokens" in h100.source
    small = plan_sweep(ServerFacts(num_gpu_blocks=1_000, block_size=16))
    assert small.concurrency[-1] == 256
    assert plan_sweep(ServerFacts()).concurrency == [1, 4, 16, 64]
    assert plan_sweep(None).concurrency == [1, 4, 16, 64]
    cpu = plan_sweep(None, embedded_cpu=True)
    assert cpu.concurrency == [2, 8] and cpu.max_turns == 2 and cpu.conversations == 2


def test_facts_are_read_from_metrics_and_server_info() -> None:
    """num_gpu_blocks and block_size from vllm:cache_config_info's labels; max_num_seqs
    and the simulator's time scale from /server_info's JSON; other shapes are ignored."""
    page = (
        "# TYPE vllm:cache_config_info gauge\n"
        'vllm:cache_config_info{block_size="16",engine="0",num_gpu_blocks="24000"} 1.0\n'
    )
    facts = sizing.facts_from_metrics(page)
    assert (facts.num_gpu_blocks, facts.block_size, facts.kv_tokens) == (24000, 16, 384000)
    assert sizing.facts_from_metrics("not a metrics page {") == ServerFacts()
    info = {
        "vllm_config": {"scheduler_config": {"max_num_seqs": 512}},
        "simulator": {"time_scale": 20},
    }
    both = sizing.facts_from_server_info(info, facts)
    assert (both.max_num_seqs, both.num_gpu_blocks, both.time_scale) == (512, 24000, 20.0)
    assert sizing.facts_from_server_info(["no"], facts) == facts


def test_the_embedded_cpu_server_gets_the_short_plan() -> None:
    """No endpoint and no model: the bench will start the embedded CPU server, so its
    sweep, turns and conversations are the short CPU plan unless given."""
    args = parse([])
    config = session._config(args)
    settings = session.settings_from(args, config)
    assert settings.concurrency == [2, 8] and settings.max_turns == 2
    assert settings.conversations == 2 and "embedded CPU" in settings.sweep_source
    remote = parse(["--endpoint", "http://gpu:8000"])
    config = session._config(remote)
    settings = session.settings_from(remote, config)
    assert settings.concurrency == [] and settings.max_turns == session.DEFAULT_TURNS
    given = parse(["--endpoint", "http://gpu:8000", "--concurrency", "8,2"])
    settings = session.settings_from(given, config_mod.RunConfig())
    assert settings.concurrency == [2, 8] and settings.sweep_source == "--concurrency"
