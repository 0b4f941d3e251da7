"""Shards of one run and their merge: disjoint ids, nothing lost, foreign inputs refused."""

from __future__ import annotations

import argparse
import itertools
import json
import re
from pathlib import Path

import factories
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from soc_async.commands import merge as merge_command
from soc_async.errors import EXIT_USAGE, InputError, RunDirError
from soc_async.merge import MergePlan, ShardInput, check_ids, merge, parse_shard, plan_merge
from soc_async.records import (
    Conversation,
    Experience,
    ExperienceMeta,
    Failure,
    Message,
    Persona,
    Record,
    TopicSlot,
    Turn,
    Usage,
    decode_line,
    encode_line,
    id_index,
    make_id,
    record_id,
)
from soc_async.seeds import cards as cards_of
from soc_async.seeds import persona_cards
from soc_async.store import DATA_FILES, RunIdentity, run_key

FILE_STAGE = {"personas.jsonl": "personas", "conversations.jsonl": "chats"}


def _input(index: int, count: int, seed: int = 7, path: str | None = None) -> ShardInput:
    return ShardInput(
        path=path or f"shard-{index}",
        key=run_key(seed),
        seed=seed,
        index=index,
        count=count,
    )


def _shard_ids(seed: int, index: int, count: int, targets: dict[str, int]) -> dict[str, list[str]]:
    """The ids shard ``index/count`` writes: those whose index is ``index`` modulo ``count``."""
    ids: dict[str, list[str]] = {name: [] for name in DATA_FILES}
    for name, stage in FILE_STAGE.items():
        ids[name] = [make_id(seed, stage, i) for i in range(index, targets[stage], count)]
    # Every third chat of the shard failed instead of finishing.
    failed = ids["conversations.jsonl"][::3]
    ids["conversations.jsonl"] = [i for i in ids["conversations.jsonl"] if i not in failed]
    ids["failures.jsonl"] = failed
    return ids


run_shape = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**31),
        "count": st.integers(1, 9),
        "personas": st.integers(0, 40),
        "chats": st.integers(0, 40),
    }
)


@settings(max_examples=200, deadline=None)
@given(shape=run_shape, data=st.data())
def test_any_set_of_shards_merges_every_id_once(shape: dict[str, int], data: st.DataObject) -> None:
    """For any n and any non-empty set of shards (in any order), the plan takes every
    shard given, lists exactly the others as missing, and the checked ids are the union
    of the shards' ids with no id twice; with every shard, that union is the whole run."""
    n = shape["count"]
    chosen = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True))
    targets = {"personas": shape["personas"], "chats": shape["chats"]}
    inputs = [_input(i, n, shape["seed"]) for i in chosen]
    plan = plan_merge(inputs, allow_partial=True)
    assert [s.index for s in plan.shards] == sorted(chosen)
    assert set(plan.missing) == set(range(n)) - set(chosen)
    ids = {s.path: _shard_ids(shape["seed"], s.index, n, targets) for s in inputs}
    counts = check_ids(plan, ids)
    for name, stage in FILE_STAGE.items():
        merged = [i for s in plan.shards for i in ids[s.path][name]]
        if name == "conversations.jsonl":
            merged += [i for s in plan.shards for i in ids[s.path]["failures.jsonl"]]
        assert len(merged) == len(set(merged))
        expected = {
            make_id(shape["seed"], stage, i) for i in range(targets[stage]) if i % n in set(chosen)
        }
        assert set(merged) == expected
    assert sum(c[name] for c in counts.values() for name in DATA_FILES) == sum(
        len(v) for s in inputs for v in ids[s.path].values()
    )
    if len(chosen) < n:
        with pytest.raises(RunDirError, match="not given"):
            plan_merge(inputs)
    else:
        assert plan_merge(inputs).missing == ()


@settings(max_examples=100, deadline=None)
@given(shape=run_shape, data=st.data())
def test_a_shard_given_twice_is_refused(shape: dict[str, int], data: st.DataObject) -> None:
    """Naming one shard twice (same or another directory) is refused, whatever else is given."""
    n = shape["count"]
    chosen = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True))
    twice = data.draw(st.sampled_from(chosen))
    inputs = [_input(i, n, shape["seed"]) for i in chosen]
    copy = _input(twice, n, shape["seed"], path=data.draw(st.sampled_from(["again", "shard-x"])))
    inputs.insert(data.draw(st.integers(0, len(inputs))), copy)
    with pytest.raises(RunDirError, match="given twice"):
        plan_merge(inputs, allow_partial=True)


@settings(max_examples=100, deadline=None)
@given(shape=run_shape, other_seed=st.integers(0, 2**31), data=st.data())
def test_a_shard_of_another_run_is_refused(
    shape: dict[str, int], other_seed: int, data: st.DataObject
) -> None:
    """A shard whose run key and seed differ from the others' is refused, wherever it is
    in the list; so is a shard of the same run split into another n."""
    n = shape["count"]
    if other_seed == shape["seed"]:
        other_seed += 1
    inputs = [_input(i, n, shape["seed"]) for i in range(n)]
    foreign = _input(data.draw(st.integers(0, n - 1)), n, other_seed, path="foreign")
    inputs.insert(data.draw(st.integers(0, len(inputs))), foreign)
    with pytest.raises(RunDirError, match="another run"):
        plan_merge(inputs, allow_partial=True)
    resplit = [_input(0, n, shape["seed"]), _input(0, n + 1, shape["seed"], path="resplit")]
    with pytest.raises(RunDirError, match="share n"):
        plan_merge(resplit, allow_partial=True)


@settings(max_examples=100, deadline=None)
@given(shape=run_shape, data=st.data())
def test_an_id_twice_or_off_its_shard_is_refused(
    shape: dict[str, int], data: st.DataObject
) -> None:
    """An id that two shards both hold, or that a shard holds though its index is another
    shard's, is refused with the file that holds it."""
    n = shape["count"]
    seed = shape["seed"]
    inputs = [_input(i, n, seed) for i in range(n)]
    plan = plan_merge(inputs)
    index = data.draw(st.integers(0, 200))
    stray = make_id(seed, "personas", index)
    owner = inputs[index % n]
    ids = {s.path: {"personas.jsonl": [stray] if s is owner else []} for s in inputs}
    check_ids(plan, ids)  # its own shard: accepted
    ids[owner.path]["personas.jsonl"] = [stray, stray]
    with pytest.raises(RunDirError, match="appears twice"):
        check_ids(plan, ids)
    if n > 1:
        other = inputs[(index + 1) % n]
        ids = {s.path: {"personas.jsonl": [stray] if s is other else []} for s in inputs}
        with pytest.raises(RunDirError, match=f"not of shard {other.shard}"):
            check_ids(plan, ids)


def test_parse_shard_accepts_only_i_below_n() -> None:
    """ "i/n" parses only when 0 <= i < n."""
    assert parse_shard("3/8") == (3, 8)
    for bad in ("8/8", "1/0", "-1/2", "a/b", "1", ""):
        with pytest.raises(ValueError):
            parse_shard(bad)


def test_plan_needs_an_input() -> None:
    """An empty input list is refused, not merged into an empty dataset."""
    with pytest.raises(RunDirError):
        plan_merge([])
    assert isinstance(plan_merge([_input(0, 1)]), MergePlan)


# -- on disk ---------------------------------------------------------------------------


def _persona(item_id: str) -> Persona:
    return factories.persona(item_id, name="Ana")


def _conversation(item_id: str) -> Conversation:
    turn = Turn(
        sender="p-a",
        state="hello; 0 turns remaining; end",
        messages=[Message(t="10:00", d="01.03", type="text", text="hi")],
    )
    return Conversation(
        chat_id=item_id,
        experience_id=item_id.replace("c-", "e-"),
        persona_ids=["p-a", "p-b"],
        style="freeform",
        cadence="realtime",
        topics=[TopicSlot(title="hello", turns=1, primary=True)],
        turns=[turn],
        summary="",
        ended_by="max_turns",
        model="m",
        usage=Usage(prompt=3, completion=2),
    )


def _write_shard(
    root: Path, seed: int, index: int, count: int, targets: dict[str, int], torn: bool = False
) -> dict[str, list[bytes]]:
    """A shard directory as the store leaves it; returns the lines of each data file."""
    d = root / f"shard-{index}"
    d.mkdir(parents=True)
    identity = RunIdentity.new(seed, f"{index}/{count}")
    (d / "run.json").write_bytes(msgspec.json.encode(identity) + b"\n")
    (d / "config.toml").write_text(f'seed = {seed}\nshard = "{index}/{count}"\n')
    ids = _shard_ids(seed, index, count, targets)
    records: dict[str, list[Record]] = {
        "personas.jsonl": [_persona(i) for i in ids["personas.jsonl"]],
        "experiences.jsonl": [],
        "conversations.jsonl": [_conversation(i) for i in ids["conversations.jsonl"]],
        "failures.jsonl": [
            Failure(id=i, stage="chats", reason="retries_exhausted:clock", attempts=4)
            for i in ids["failures.jsonl"]
        ],
    }
    lines = {name: [encode_line(r) for r in rs] for name, rs in records.items()}
    for name, ls in lines.items():
        if name == "experiences.jsonl":
            continue  # a stage file the shard never wrote
        data = b"".join(ls)
        if torn:
            data += b'{"kind":"persona","id":"p-00'  # a write cut short by a kill
        (d / name).write_bytes(data)
    return lines


def _read(path: Path) -> list[Record]:
    return [decode_line(line) for line in path.read_bytes().splitlines() if line.strip()]


_runs = itertools.count()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(shape=run_shape, torn=st.booleans())
def test_merge_on_disk_keeps_every_record_once(
    tmp_path: Path, shape: dict[str, int], torn: bool
) -> None:
    """Merging every shard directory writes each record of each shard exactly once,
    byte for byte, leaves torn last lines out, counts what it wrote in merge.json, and
    marks the output as the whole run (shard 0/1, same key and seed)."""
    root = tmp_path / f"case-{next(_runs)}"
    n, seed = shape["count"], shape["seed"]
    targets = {"personas": shape["personas"], "chats": shape["chats"]}
    written = [_write_shard(root, seed, i, n, targets, torn=torn) for i in range(n)]
    out = root / "merged"
    summary = merge([root / f"shard-{i}" for i in reversed(range(n))], out)
    for name in DATA_FILES:
        expected = sorted(line for shard in written for line in shard[name])
        assert sorted((out / name).read_bytes().splitlines(keepends=True)) == expected
        ids = [record_id(r) for r in _read(out / name)]
        assert len(ids) == len(set(ids))
        assert summary.counts[name] == len(expected)
    on_disk = json.loads((out / "merge.json").read_text())
    assert on_disk["counts"] == summary.counts
    assert on_disk["merged"] == [f"{i}/{n}" for i in range(n)]
    assert on_disk["missing"] == []
    # A torn line ends each of the three files every shard wrote.
    assert on_disk["dropped_torn_lines"] == (3 * n if torn else 0)
    identity = msgspec.json.decode((out / "run.json").read_bytes(), type=RunIdentity)
    assert (identity.key, identity.seed, identity.shard) == (run_key(seed), seed, "0/1")


def _args(dirs: list[Path], out: Path, allow_partial: bool = False) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    merge_command.register(parser.add_subparsers(dest="command"))
    argv = ["merge", *map(str, dirs), "--out", str(out)]
    return parser.parse_args(argv + (["--allow-partial"] if allow_partial else []))


def test_command_refuses_a_duplicate_or_foreign_shard_and_writes_nothing(tmp_path: Path) -> None:
    """The merge command refuses a shard given twice and a shard of another run with a
    one-line error of exit code 2, before creating the output directory."""
    targets = {"personas": 6, "chats": 6}
    _write_shard(tmp_path / "a", 1, 0, 2, targets)
    _write_shard(tmp_path / "a", 1, 1, 2, targets)
    _write_shard(tmp_path / "b", 2, 1, 2, targets)
    out = tmp_path / "out"
    cases = {
        "given twice": [tmp_path / "a/shard-0", tmp_path / "a/shard-1", tmp_path / "a/shard-0"],
        "another run": [tmp_path / "a/shard-0", tmp_path / "b/shard-1"],
    }
    for message, dirs in cases.items():
        with pytest.raises(RunDirError, match=message) as info:
            merge_command.handle(_args(dirs, out))
        assert info.value.exit_code == EXIT_USAGE
        assert "\n" not in str(info.value)
        assert not out.exists()


def test_command_merges_a_partial_run_only_when_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing shard is refused by default; with --allow-partial it is merged, the
    missing shard is named in a warning and in merge.json, and one summary line is printed."""
    targets = {"personas": 9, "chats": 9}
    for i in (0, 2):
        _write_shard(tmp_path, 5, i, 3, targets)
    dirs = [tmp_path / "shard-0", tmp_path / "shard-2"]
    with pytest.raises(RunDirError, match="1/3"):
        merge_command.handle(_args(dirs, tmp_path / "out"))
    capsys.readouterr()
    assert merge_command.handle(_args(dirs, tmp_path / "out", allow_partial=True)) == 0
    captured = capsys.readouterr()
    assert "1/3" in captured.err
    assert len(captured.out.strip().splitlines()) == 1
    assert "merged 2/3 shards" in captured.out
    assert json.loads((tmp_path / "out/merge.json").read_text())["missing"] == ["1/3"]


def test_merge_refuses_a_non_empty_output_and_a_bad_line(tmp_path: Path) -> None:
    """The output must be new or empty; a corrupt line inside a shard (not its last) is
    an error naming the file and line, and the inputs are never modified."""
    targets = {"personas": 4, "chats": 0}
    _write_shard(tmp_path, 3, 0, 1, targets)
    shard = tmp_path / "shard-0"
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    with pytest.raises(RunDirError, match="not empty"):
        merge([shard], busy)
    personas = shard / "personas.jsonl"
    lines = personas.read_bytes().splitlines(keepends=True)
    personas.write_bytes(lines[0] + b"{broken\n" + b"".join(lines[1:]))
    before = personas.read_bytes()
    with pytest.raises(InputError, match=r"personas.jsonl:2"):
        merge([shard], tmp_path / "out")
    assert personas.read_bytes() == before
    with pytest.raises(RunDirError, match=r"no run\.json"):
        merge([tmp_path], tmp_path / "out2")


def test_soc_async_merge_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`soc-async merge DIR... --out OUT` is wired into the CLI: exit code 0 and one
    summary line for a whole run; exit code 2 and one error line for a shard given twice."""
    from soc_async import cli

    targets = {"personas": 4, "chats": 4}
    for i in range(2):
        _write_shard(tmp_path, 9, i, 2, targets)
    dirs = [str(tmp_path / "shard-0"), str(tmp_path / "shard-1")]
    with pytest.raises(SystemExit) as done:
        cli.main(["merge", *dirs, "--out", str(tmp_path / "out")])
    assert done.value.code == 0
    assert "merged 2/2 shards" in capsys.readouterr().out
    with pytest.raises(SystemExit) as refused:
        cli.main(["merge", dirs[0], dirs[0], "--out", str(tmp_path / "out2")])
    assert refused.value.code == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "given twice" in err[0]


# -- cross-shard near-duplicates --------------------------------------------------------


def _card_name(card: str) -> str:
    found = re.search(r"^\*\*Name:\*\* (.+)$", card, re.M)
    assert found
    return found.group(1)


def _seeded_persona(item_id: str, card: str, name: str | None = None) -> Persona:
    own = _card_name(card)
    text = card.replace(own, name) if name else card
    return factories.persona(item_id, name=name or own, text=text)


def _seeded_experience(item_id: str, text: str, pair: list[str]) -> Experience:
    return Experience(
        id=item_id,
        persona_ids=pair,
        experience_text=text,
        style="freeform",
        cadence="async",
        topics=[],
        initial_state="",
        instant_events=[],
        opener=pair[0],
        meta=ExperienceMeta(iteration=0, model="m", time_taken=0.1),
    )


def _planted_array(root: Path, seed: int = 4) -> dict[str, Path]:
    """Three shards of one run written from the hand-written seed cards and experiences
    (all distinct), with planted copies: shard 2's persona 5 is persona 0's card under
    another name, and shard 1's experience 4 copies experience 0's text. Experience 2
    (shard 2) uses the copied persona; each experience has one chat of the same index."""
    cards = persona_cards()
    texts = cards_of("experiences", ".txt")
    shards = {i: root / f"shard-{i}" for i in range(3)}
    pid = [make_id(seed, "personas", i) for i in range(6)]
    personas = [_seeded_persona(pid[i], cards[i]) for i in range(5)]
    personas.append(_seeded_persona(pid[5], cards[0], name="Zuzana Novak"))  # the copy
    pairs = [
        [pid[0], pid[1]],
        [pid[2], pid[3]],
        [pid[5], pid[4]],
        [pid[1], pid[3]],
        [pid[4], pid[0]],
    ]
    exp_texts = [texts[0], texts[1], texts[2], texts[3], texts[0]]  # 4 copies 0
    experiences = [
        _seeded_experience(make_id(seed, "experiences", j), exp_texts[j], pairs[j])
        for j in range(5)
    ]
    chats = []
    for j, e in enumerate(experiences):
        chat = _conversation(make_id(seed, "chats", j))
        chat.experience_id = e.id
        chats.append(chat)
    for i, d in shards.items():
        d.mkdir(parents=True)
        identity = RunIdentity.new(seed, f"{i}/3")
        (d / "run.json").write_bytes(msgspec.json.encode(identity) + b"\n")
        (d / "config.toml").write_text(f'seed = {seed}\nshard = "{i}/3"\n')
        for name, records in (
            ("personas.jsonl", personas),
            ("experiences.jsonl", experiences),
            ("conversations.jsonl", chats),
        ):
            mine = [r for r in records if id_index(record_id(r)) % 3 == i]
            (d / name).write_bytes(b"".join(encode_line(r) for r in mine))
        (d / "failures.jsonl").write_bytes(b"")
    return shards


def test_merge_drops_planted_cross_shard_duplicates(tmp_path: Path) -> None:
    """The copied card and experience are dropped, with the experience that uses the
    copied persona and the chats of both dropped experiences; near_duplicates.jsonl says
    what and why; ids stay unique; the rest is kept."""
    seed = 4
    shards = _planted_array(tmp_path, seed)
    out = tmp_path / "merged"
    summary = merge(list(shards.values()), out)
    removed = [
        msgspec.json.decode(line)
        for line in (out / "near_duplicates.jsonl").read_bytes().splitlines()
    ]
    why = {(r["file"], r["id"]): (r["reason"], r["duplicate_of"]) for r in removed}
    pid = [make_id(seed, "personas", i) for i in range(6)]
    eid = [make_id(seed, "experiences", j) for j in range(5)]
    cid = [make_id(seed, "chats", j) for j in range(5)]
    assert why == {
        ("personas.jsonl", pid[5]): ("near_duplicate", pid[0]),
        ("experiences.jsonl", eid[4]): ("near_duplicate", eid[0]),
        ("experiences.jsonl", eid[2]): ("uses_dropped", pid[5]),
        ("conversations.jsonl", cid[4]): ("uses_dropped", eid[4]),
        ("conversations.jsonl", cid[2]): ("uses_dropped", eid[2]),
    }
    assert all(r["action"] == "dropped" for r in removed)
    assert {r["shard"] for r in removed if r["reason"] == "near_duplicate"} == {"2/3", "1/3"}
    kept = {name: [record_id(r) for r in _read(out / name)] for name in DATA_FILES}
    assert sorted(kept["personas.jsonl"]) == sorted(pid[:5])
    assert sorted(kept["experiences.jsonl"]) == sorted([eid[0], eid[1], eid[3]])
    assert sorted(kept["conversations.jsonl"]) == sorted([cid[0], cid[1], cid[3]])
    all_ids = [i for ids in kept.values() for i in ids]
    assert len(all_ids) == len(set(all_ids))
    assert summary.counts["personas.jsonl"] == 5
    assert summary.near_duplicates == {
        "personas.jsonl": 1,
        "experiences.jsonl": 2,
        "conversations.jsonl": 2,
    }
    assert "5 cross-shard near-duplicate records dropped" in summary.line(out)


def test_merge_flags_or_ignores_near_duplicates_as_configured(tmp_path: Path) -> None:
    """ "flag" keeps every record and lists the two copies; "off" lists nothing; the
    config key is read from the shards' config.toml, the flag overrides it."""
    shards = _planted_array(tmp_path / "a")
    for d in shards.values():
        with (d / "config.toml").open("a") as f:
            f.write('[merge]\nnear_duplicates = "flag"\n')
    flagged = merge(list(shards.values()), tmp_path / "flagged")
    lines = (tmp_path / "flagged" / "near_duplicates.jsonl").read_bytes().splitlines()
    assert [msgspec.json.decode(x)["action"] for x in lines] == ["flagged", "flagged"]
    assert flagged.counts["personas.jsonl"] == 6 and flagged.counts["experiences.jsonl"] == 5
    off = merge(list(shards.values()), tmp_path / "off", near_duplicates_action="off")
    assert (tmp_path / "off" / "near_duplicates.jsonl").read_bytes() == b""
    assert off.counts["conversations.jsonl"] == 5 and "near-duplicate" not in off.line(tmp_path)


def test_merge_command_prints_the_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shards = _planted_array(tmp_path)
    args = _args(list(shards.values()), tmp_path / "merged")
    assert merge_command.handle(args) == 0
    assert "5 cross-shard near-duplicate records dropped" in capsys.readouterr().out
