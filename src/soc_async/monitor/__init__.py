"""Watching a run: its figures as data (snapshot), rates, the live panel, the Prometheus
endpoint, following a run directory another process writes, and the throughput plot.

    snapshot.py   Snapshot: one metrics.jsonl line, the shape every reader uses
    rates.py      RateWindow: rates over a recent window; the ETA (pure)
    engines.py    EngineWatch: each server's /metrics turned into per-engine figures
    panel.py      RunPanel: a snapshot drawn with rich, fitted to the terminal's width
    exporter.py   the Prometheus endpoint of ``run --metrics-port``
    follow.py     Follower: a run directory read as another process writes it
    plot.py       ``status --plot``: throughput, limit and engine load over time
"""
