"""The dataset card: README.md with the YAML front matter that `datasets` reads.

The front matter names the configs and their data files per split (``configs``), the
features of the rows (``dataset_info.features``, derived from the row Struct) and the
number of rows per split; `load_dataset(OUT)` uses them. The body states the counts, the
model mix, the generation settings read from the run's config.toml and, when the run
directory has a report.json (``soc-async report``), its at-a-glance figures.

The YAML is written by a small emitter (block style, every string double-quoted as in
JSON, which YAML reads the same) so no YAML library is needed.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec

from soc_async.export.schema import hf_features

__all__ = ["GENERATION_SETTINGS", "CardFacts", "at_a_glance", "render_card", "yaml_dump"]

# Dotted keys of config.toml shown under "Generation settings", when the run has them.
GENERATION_SETTINGS = (
    "seed",
    "shard",
    "model",
    *(
        f"calls.{kind}.{key}"
        for kind in ("persona", "experience", "turn", "summary")
        for key in ("model", "temperature", "top_p", "max_tokens", "grammar", "retries")
    ),
    "persona.few_shot",
    "persona.ring_capacity",
    "persona.age_mean",
    "persona.age_sd",
    "persona.age_distribution",
    "experience.few_shot",
    "experience.region_match",
    "experience.min_events",
    "experience.max_events",
    "chat.max_turns",
    "chat.active_window",
    "chat.fold",
    "chat.instant_event_p",
    "chat.min_messages",
    "chat.max_messages",
    "chat.start_date",
)

_DESCRIPTIONS = {
    "soc-2602": "Synthetic online conversations, each self-contained: the chat with its "
    "experience and both persona cards, and the turns as the `<turn>` text the method "
    "writes.",
    "soc-2508": "Synthetic online conversations in the schema of SOC-2508: `chat_id`, "
    "`experience` (two personas, relationship, situation, topic), `chat_parts`, `model`.",
    "spb": "A synthetic persona bank: each persona's markdown-in-XML character card and "
    "its sample, plus the short SPB-2508 fields extracted from the card.",
    "messages": "Chat-format training samples (system/user/assistant), one per "
    "conversation and side: the side's persona is the assistant.",
}


class CardFacts(msgspec.Struct, kw_only=True):
    """Everything the card states, gathered by the exporter."""

    format: str
    row_type: type
    splits: dict[str, int]  # split -> rows, in the order to list them
    files: dict[str, dict[str, str]]  # "jsonl"/"parquet" -> split -> path relative to OUT
    sizes: dict[str, int]  # path relative to OUT -> bytes
    records: dict[str, int]  # personas, experiences, conversations
    failures: dict[str, int]  # by stage
    failure_reasons: dict[str, int]
    models: dict[str, dict[str, int]]  # "conversations"/"personas"/"experiences" -> model -> n
    turns: int
    messages: int
    styles: dict[str, int]
    ended_by: dict[str, int]
    dropped: int  # conversations left out by a grouped split
    split_spec: dict[str, float]
    split_seed: int
    options: dict[str, Any]  # format options (messages)
    config: dict[str, Any]  # config.toml as plain data
    report: dict[str, Any] | None  # report.json as plain data
    source: str  # the run directory
    license: str | None


def yaml_dump(value: Any, indent: int = 0) -> str:
    """``value`` (dicts, lists, str, int, float, bool, None) as block-style YAML."""
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return pad + "{}\n"
        out = []
        for k, v in value.items():
            if _scalar(v) or v in ({}, []):
                out.append(f"{pad}{k}: {_flow(v)}\n")
            else:
                out.append(f"{pad}{k}:\n{yaml_dump(v, indent + 2)}")
        return "".join(out)
    if isinstance(value, list):
        out = []
        for item in value:
            if _scalar(item):
                out.append(f"{pad}- {_flow(item)}\n")
            else:
                body = yaml_dump(item, indent + 2)
                out.append(f"{pad}- {body[indent + 2 :]}")
        return "".join(out)
    return pad + _flow(value) + "\n"


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, str | int | float | bool)


def _flow(v: Any) -> str:
    if v == {}:
        return "{}"
    if v == []:
        return "[]"
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return json.dumps(v)
    if isinstance(v, str) and v.isidentifier() and v.lower() not in {"true", "false", "null"}:
        return v
    return json.dumps(v, ensure_ascii=False)


def _size_category(n: int) -> str:
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):  # fmt: skip
        if n < bound:
            return name
    return "10M<n<100M"


def front_matter(facts: CardFacts) -> dict[str, Any]:
    """The card's YAML front matter as plain data."""
    features = hf_features(facts.row_type)
    # One config: datasets picks one builder for a repository's files, so JSONL and Parquet
    # cannot be two configs of one card. Parquet, when written, is the faster to load.
    kind = "parquet" if "parquet" in facts.files else "jsonl"
    files = facts.files[kind]
    split_info = [
        {"name": s, "num_bytes": facts.sizes.get(files[s], 0), "num_examples": n}
        for s, n in facts.splits.items()
    ]
    size = sum(facts.sizes.get(files[s], 0) for s in facts.splits)
    configs = [
        {
            "config_name": "default",
            "data_files": [{"split": s, "path": files[s]} for s in facts.splits],
        }
    ]
    infos = {
        "features": features,
        "splits": split_info,
        "download_size": size,
        "dataset_size": size,
    }
    meta: dict[str, Any] = {}
    if facts.license:
        meta["license"] = facts.license
    meta |= {
        "pretty_name": f"soc-async export ({facts.format})",
        "task_categories": ["text-generation"],
        "tags": ["synthetic", "conversations", "soc-async", facts.format],
        "size_categories": [_size_category(sum(facts.splits.values()))],
        "configs": configs,
        "dataset_info": infos,
    }
    return meta


def _dotted(config: dict[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _cell(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:,.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    elif isinstance(value, int) and not isinstance(value, bool):
        text = f"{value:,}"
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    return text.replace("|", "\\|").replace("\n", " ") or '""'


def _table(head: tuple[str, str], rows: list[tuple[str, Any]]) -> str:
    out = [f"| {head[0]} | {head[1]} |", "|---|---|"]
    out += [f"| {_cell(k)} | {_cell(v)} |" for k, v in rows]
    return "\n".join(out)


def at_a_glance(report: dict[str, Any] | None) -> list[tuple[str, Any]]:
    """The report's at-a-glance figures as (label, value) rows: ``glance`` as
    ``soc-async report`` writes it (a list of ``{label, shown, target, ...}``), read
    tolerantly (also ``at_a_glance``: a mapping, a list of ``{label|name|key|title,
    value}`` objects or ``[label, value]`` pairs); anything else gives no rows."""
    report = report or {}
    glance = report.get("glance", report.get("at_a_glance"))
    if isinstance(glance, dict):
        return [(str(k), v) for k, v in glance.items()]
    rows: list[tuple[str, Any]] = []
    if isinstance(glance, list):
        for item in glance:
            if isinstance(item, dict):
                label = next(
                    (item[k] for k in ("label", "name", "key", "title") if k in item), None
                )
                if label is not None and "shown" in item:
                    target = item.get("target")
                    shown = item["shown"]
                    rows.append((str(label), f"{shown} (target {target})" if target else shown))
                elif label is not None and "value" in item:
                    value = item["value"]
                    unit = item.get("unit")
                    rows.append((str(label), f"{_cell(value)} {unit}" if unit else value))
            elif isinstance(item, list | tuple) and len(item) == 2:
                rows.append((str(item[0]), item[1]))
    return rows


def _mix(counter: dict[str, int]) -> str:
    total = sum(counter.values()) or 1
    return ", ".join(
        f"{k} {v:,} ({100 * v / total:.0f}%)" for k, v in Counter(counter).most_common()
    )


def render_card(facts: CardFacts) -> str:
    """README.md: front matter, then the card's sections."""
    fm = yaml_dump(front_matter(facts))
    total = sum(facts.splits.values())
    lines = [
        f"---\n{fm}---",
        "",
        f"# soc-async export: {facts.format}",
        "",
        _DESCRIPTIONS[facts.format],
        f"Written by `soc-async export --format {facts.format}` from the run directory "
        f"`{facts.source}`; docs/export.md of soc-async describes every field.",
        "",
        "## Loading",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        'ds = load_dataset("path/to/this/directory")  # or the Hub repository it is pushed to',
    ]
    if "parquet" in facts.files:
        lines.append("# the same rows from the JSONL files:")
        files = ", ".join(f'"{s}": "{p}"' for s, p in facts.files["jsonl"].items())
        lines.append(f'jsonl = load_dataset("json", data_files={{{files}}})')
    lines += ["```", "", "## Splits", ""]
    split_rows: list[tuple[str, Any]] = list(facts.splits.items())
    lines.append(_table(("split", "rows"), split_rows))
    if facts.split_spec:
        spec = ", ".join(f"{k}={v}" for k, v in facts.split_spec.items())
        if facts.format == "spb":
            text = (
                f"Held out: {spec} of the conversations, grouped by persona, seed "
                f"{facts.split_seed}; a persona is in the split its conversations went to in "
                "the conversation formats exported with the same split and seed (personas in "
                "no conversation are drawn with the split's fraction)."
            )
        else:
            text = (
                f"Held out: {spec} of the conversations, grouped by persona (no persona on "
                f"two sides), seed {facts.split_seed}. Conversations between personas that "
                f"ended up on different sides are left out: {facts.dropped:,}."
            )
        lines += ["", text]
    lines += ["", "## Counts", ""]
    count_rows: list[tuple[str, Any]] = [
        ("rows", total),
        ("personas", facts.records.get("personas", 0)),
        ("experiences", facts.records.get("experiences", 0)),
        ("conversations", facts.records.get("conversations", 0)),
        ("turns", facts.turns),
        ("messages", facts.messages),
    ]
    if facts.records.get("conversations"):
        count_rows.append(("turns per conversation", facts.turns / facts.records["conversations"]))
    count_rows += [(f"failed {stage}", n) for stage, n in facts.failures.items()]
    if facts.styles:
        count_rows.append(("styles", _mix(facts.styles)))
    if facts.ended_by:
        count_rows.append(("ended by", _mix(facts.ended_by)))
    lines.append(_table(("what", "count"), count_rows))
    if facts.failure_reasons:
        lines += ["", "Failures by reason (not in the dataset):", ""]
        top = Counter(facts.failure_reasons).most_common(10)
        lines.append(_table(("reason", "items"), list(top)))
    lines += ["", "## Model mix", ""]
    lines.append(
        _table(("records", "models"), [(k, _mix(v)) for k, v in facts.models.items() if v])
    )
    settings = [
        (k, v) for k in GENERATION_SETTINGS if (v := _dotted(facts.config, k)) not in (None, "")
    ]
    lines += ["", "## Generation settings", ""]
    if settings:
        lines.append(_table(("setting", "value"), settings))
    else:
        lines.append("The run directory has no config.toml; the settings are unknown.")
    if facts.options:
        lines += ["", "## Format options", ""]
        lines.append(_table(("option", "value"), list(facts.options.items())))
    glance = at_a_glance(facts.report)
    if glance:
        lines += ["", "## At a glance (soc-async report)", ""]
        lines.append(_table(("figure", "value"), glance))
    lines += [
        "",
        "## Known limitations",
        "",
        "Every persona, situation and message is written by a language model: names, "
        "places and links may be invented, and the model's biases carry over.",
        "",
    ]
    return "\n".join(lines)


def read_report(run_dir: Path) -> dict[str, Any] | None:
    """DIR/report.json as plain data; None when absent or unreadable."""
    try:
        data = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
