"""Every export format loads with `datasets` the way users load it: right rows, one schema."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from soc_async import cli
from soc_async.errors import EXIT_OK, EXIT_USAGE
from soc_async.export import ROW_TYPES, export_run
from soc_async.export.card import at_a_glance
from soc_async.export.schema import hf_features
from soc_async.export.split import TRAIN
from soc_async.testing.synthetic import write_run

# Local files only: never ask the Hub for anything.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
datasets = pytest.importorskip("datasets")
yaml = pytest.importorskip("yaml")

FORMATS = sorted(ROW_TYPES)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("run")
    counts = write_run(path, personas=16, conversations=60, seed=2)
    assert counts.conversations == 54
    return path


def _front_matter(out: Path) -> dict:
    text = (out / "README.md").read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def _same_schema(loaded, declared) -> None:
    """Equal features, where a column that is null in every row may load as null."""
    if isinstance(loaded, datasets.Value) and loaded.dtype == "null":
        return
    if isinstance(loaded, dict):
        assert list(loaded) == list(declared)
        for k in loaded:
            _same_schema(loaded[k], declared[k])
    elif isinstance(loaded, datasets.List):
        assert isinstance(declared, datasets.List)
        _same_schema(loaded.feature, declared.feature)
    else:
        assert loaded == declared, (loaded, declared)


@pytest.mark.parametrize("fmt", FORMATS)
def test_format_loads_from_json_parquet_and_card(fmt, run_dir, tmp_path):
    """load_dataset reads the JSONL (json builder), the Parquet (parquet builder) and the
    directory itself (through the card's configs): the same rows per split as exported,
    the card's features, and no row whose keys differ from another's."""
    out = tmp_path / "out"
    summary = export_run(run_dir, out, fmt=fmt, splits={"validation": 0.1}, seed=4, parquet=True)
    declared = datasets.Features._from_yaml_list(hf_features(ROW_TYPES[fmt]))
    cache = str(tmp_path / "cache")
    for split in (TRAIN, "validation"):
        jsonl = out / "data" / f"{split}.jsonl"
        rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
        assert len(rows) == summary.rows[split] > 0
        seen: dict[str, set[tuple[str, ...]]] = {}
        for r in rows:
            _shapes(r, "", seen)
        assert all(len(keys) == 1 for keys in seen.values()), "objects whose keys vary"
        from_json = datasets.load_dataset(
            "json", data_files=str(jsonl), split="train", cache_dir=cache
        )
        assert from_json.num_rows == summary.rows[split]
        _same_schema(from_json.features, declared)
        parquet = out / "data" / f"{split}.parquet"
        from_parquet = datasets.load_dataset(
            "parquet", data_files=str(parquet), split="train", cache_dir=cache
        )
        assert from_parquet.num_rows == summary.rows[split]
        assert from_parquet.features == declared
    via_card = datasets.load_dataset(str(out), cache_dir=cache)
    assert {s: d.num_rows for s, d in via_card.items()} == summary.rows
    assert via_card["train"].features == declared
    info = _front_matter(out)["dataset_info"]
    assert {s["name"]: s["num_examples"] for s in info["splits"]} == summary.rows


def _shapes(value, path: str, seen: dict[str, set[tuple[str, ...]]]) -> None:
    """Record, per path, the key tuple of every object found there (list items merged)."""
    if isinstance(value, dict):
        seen.setdefault(path, set()).add(tuple(value))
        for k, v in value.items():
            _shapes(v, f"{path}.{k}", seen)
    elif isinstance(value, list):
        for v in value:
            _shapes(v, path + "[]", seen)


def test_jsonl_only_export_loads_through_its_card(run_dir, tmp_path):
    """Without --parquet the card points at the JSONL files and load_dataset(OUT) applies
    the card's features, so a column null in every row still loads as a string."""
    out = tmp_path / "out"
    summary = export_run(run_dir, out, fmt="spb")
    ds = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "cache"))
    assert ds["train"].num_rows == summary.rows[TRAIN] == 16
    assert ds["train"].features["username"] == datasets.Value("string")


def test_split_keeps_personas_apart_across_formats(run_dir, tmp_path):
    """With one seed, a persona of a validation conversation (soc-2602) is a validation
    persona (spb), and no persona of a validation conversation speaks in train."""
    conv = export_run(run_dir, tmp_path / "c", fmt="soc-2602", splits={"validation": 0.2}, seed=9)
    bank = export_run(run_dir, tmp_path / "p", fmt="spb", splits={"validation": 0.2}, seed=9)
    assert conv.rows["validation"] > 0 and bank.rows["validation"] > 0

    def personas(path: Path) -> set[str]:
        return {
            p for line in path.read_text().splitlines() for p in json.loads(line)["persona_ids"]
        }

    held = personas(tmp_path / "c/data/validation.jsonl")
    assert not held & personas(tmp_path / "c/data/train.jsonl")
    bank_held = {
        json.loads(line)["id"]
        for line in (tmp_path / "p/data/validation.jsonl").read_text().splitlines()
    }
    assert held <= bank_held


def test_card_states_counts_models_settings_and_report(run_dir, tmp_path):
    """The card lists the counts, the model mix, the generation settings of config.toml
    and, when report.json exists, its at-a-glance figures."""
    (run_dir / "report.json").write_text(
        json.dumps({"at_a_glance": {"distinct-4": 0.81, "conversations": 54}, "other": [1]})
    )
    try:
        export_run(run_dir, tmp_path / "out", fmt="messages", license="cc-by-4.0")
    finally:
        (run_dir / "report.json").unlink()
    card = (tmp_path / "out/README.md").read_text()
    meta = _front_matter(tmp_path / "out")
    assert meta["license"] == "cc-by-4.0"
    assert meta["configs"][0]["data_files"] == [{"split": "train", "path": "data/train.jsonl"}]
    assert "| conversations | 54 |" in card
    assert "fake-model-a" in card and "fake-model-b" in card
    assert "| chat.max_turns | 12 |" in card and "| calls.turn.temperature | 1 |" in card
    assert "## At a glance (soc-async report)" in card and "| distinct-4 | 0.81 |" in card
    export_run(run_dir, tmp_path / "plain", fmt="messages")
    assert "At a glance" not in (tmp_path / "plain/README.md").read_text()


def test_at_a_glance_is_read_tolerantly():
    """A mapping, a list of {label, value[, unit]} or of pairs is read; anything else is not."""
    assert at_a_glance({"at_a_glance": {"a": 1}}) == [("a", 1)]
    written = {"glance": [{"key": "k", "label": "Age", "value": 25.1, "shown": "25.1",
                           "target": "25", "ok": True}]}  # fmt: skip
    assert at_a_glance(written) == [("Age", "25.1 (target 25)")]  # as soc-async report writes
    assert at_a_glance({"at_a_glance": [{"label": "a", "value": 2, "unit": "s"}]}) == [("a", "2 s")]
    assert at_a_glance({"at_a_glance": [["a", 3], {"no": "label"}]}) == [("a", 3)]
    assert at_a_glance({"at_a_glance": "text"}) == []
    assert at_a_glance(None) == []


def test_command_line(run_dir, tmp_path, capsys):
    """`soc-async export` writes and reports; bad input is one line and exit code 2."""

    def run(*args: str) -> int:
        with pytest.raises(SystemExit) as exc:
            cli.main(["export", str(run_dir), *args])
        return int(exc.value.code)

    assert (
        run("--format", "soc-2508", "--out", str(tmp_path / "a"), "--split", "validation=0.1")
        == EXIT_OK
    )
    assert "soc-2508: train" in capsys.readouterr().out
    assert run("--format", "soc-2508", "--out", str(tmp_path / "a")) == EXIT_USAGE  # not empty
    assert "not empty" in capsys.readouterr().err
    assert (
        run("--format", "spb", "--out", str(tmp_path / "b"), "--split", "train=0.1") == EXIT_USAGE
    )
    assert run("--format", "nope", "--out", str(tmp_path / "c")) == EXIT_USAGE
    with pytest.raises(SystemExit) as exc:
        cli.main(
            ["export", str(tmp_path / "missing"), "--format", "spb", "--out", str(tmp_path / "d")]
        )
    assert exc.value.code == EXIT_USAGE
