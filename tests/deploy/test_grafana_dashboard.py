"""deploy/grafana/soc-async.json reads only metrics the Prometheus endpoint serves."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from soc_async.monitor.exporter import SnapshotCollector
from soc_async.monitor.snapshot import (
    ControllerFigures,
    EngineFigures,
    Snapshot,
    StageFigures,
)

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "soc-async.json"


def served_names() -> set[str]:
    """Every sample name the endpoint serves for a snapshot with every figure set."""
    engine = EngineFigures(url="http://e:1", faults={"5xx": 1}, running=1, waiting=1,
                           kv_cache_usage=0.1, preemptions=1, prefix_hit_rate=0.5,
                           tokens_per_s=1.0)  # fmt: skip
    snap = Snapshot(
        stages={"chats": StageFigures(target=1)},
        rejections={"r": 1},
        failures={"f": 1},
        controller=ControllerFigures(adaptive=True, limit=1),
        engines=[engine],
    )
    collector = SnapshotCollector({"path": "p"})
    collector.publish(snap)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def test_every_query_names_served_metrics_and_the_layout_is_sound() -> None:
    """Each panel query's soc_async_* names are served; panel ids are unique and every
    panel fits Grafana's 24-column grid."""
    dash = json.loads(DASHBOARD.read_text())
    served = served_names()
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = {n for e in exprs for n in re.findall(r"soc_async_[a-z_]+", e)}
    used |= set(re.findall(r"soc_async_[a-z_]+", json.dumps(dash["templating"])))
    assert used and used <= served, used - served
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in dash["panels"])
