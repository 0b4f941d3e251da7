"""The Prometheus endpoint: a snapshot's figures in the exposition format."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from soc_async.errors import InputError
from soc_async.monitor.exporter import MetricsServer
from soc_async.monitor.snapshot import (
    ControllerFigures,
    EngineFigures,
    Snapshot,
    StageFigures,
)

SNAP = Snapshot(
    time=1.7e9,
    elapsed_s=125.0,
    requests=300,
    request_errors=2,
    in_flight=12,
    capacity=48,
    prompt_tokens=90_000,
    completion_tokens=30_000,
    cached_tokens=60_000,
    tokens_per_s=250.0,
    stages={
        "personas": StageFigures(target=10, done=10),
        "chats": StageFigures(target=20, done=5, failed=1, skipped=1, active=8),
    },
    rejections={"bad_state": 4},
    failures={"retries_exhausted:bad_state": 1},
    controller=ControllerFigures(adaptive=True, limit=48, moves=3),
    engines=[
        EngineFigures(
            url="http://127.0.0.1:8000",
            in_flight=12,
            requests=300,
            faults={"5xx": 3, "timeout": 1},
            running=10,
            waiting=0,
            kv_cache_usage=0.4,
            preemptions=2,
            prefix_hit_rate=0.75,
            tokens_per_s=260.0,
        ),
        EngineFigures(url="http://127.0.0.1:8001", up=False, faults={"connect": 2}),
    ],
)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample at ``url``, parsed by prometheus_client's own parser."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


def test_the_endpoint_serves_the_published_snapshot() -> None:
    """Nothing before the first snapshot; then every figure under its soc_async_ name,
    counters as _total, labels for stage, cause, endpoint; unread engine figures absent."""
    with MetricsServer("127.0.0.1", 0, {"path": "runs/x", "seed": "1", "shard": "0/1"}) as srv:
        assert not scrape(srv.url)
        srv.publish(SNAP)
        got = scrape(srv.url)
    ep0, ep1 = (("endpoint", "http://127.0.0.1:8000"),), (("endpoint", "http://127.0.0.1:8001"),)
    assert got["soc_async_requests_total", ()] == 300
    assert got["soc_async_request_errors_total", ()] == 2
    assert got["soc_async_tokens_total", (("kind", "completion"),)] == 30_000
    assert got["soc_async_stage_done_total", (("stage", "chats"),)] == 5
    assert got["soc_async_stage_failed_total", (("stage", "chats"),)] == 2  # failed + skipped
    assert got["soc_async_stage_target", (("stage", "personas"),)] == 10
    assert got["soc_async_limit", ()] == 48 and got["soc_async_limit_moves_total", ()] == 3
    faults = "soc_async_transport_faults_total"
    assert got[faults, (("cause", "5xx"), *ep0)] == 3
    assert got[faults, (("cause", "connect"), *ep1)] == 2
    assert got["soc_async_rejections_total", (("reason", "bad_state"),)] == 4
    assert got["soc_async_engine_up", ep0] == 1 and got["soc_async_engine_up", ep1] == 0
    assert got["soc_async_engine_kv_cache_usage", ep0] == 0.4
    assert got["soc_async_engine_preemptions_total", ep0] == 2
    assert ("soc_async_engine_kv_cache_usage", ep1) not in got  # never read: absent
    info = next(k for k in got if k[0] == "soc_async_run_info")
    assert ("path", "runs/x") in info[1]


def test_a_busy_port_is_an_input_error_naming_it() -> None:
    """A port another program holds: InputError (exit 2) naming the port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with (
            pytest.raises(InputError, match=f"--metrics-port {port}"),
            MetricsServer("127.0.0.1", port),
        ):
            pass
