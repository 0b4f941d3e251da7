"""Input files of the single-stage commands: every malformed line is named, FILE:LINE and
what was expected, with exit code 2, before any server is asked and before the output
directory exists; a good file still runs."""

from __future__ import annotations

from pathlib import Path

import factories
import msgspec
import pytest
from fakeproc import FakeProcess, free_port

from soc_async import cli
from soc_async.errors import EXIT_USAGE, InputError
from soc_async.records import (
    Experience,
    ExperienceMeta,
    Persona,
    TopicSlot,
    encode_line,
    make_id,
)
from soc_async.store import TornLine, check_stage_inputs, read_records

SEED = 5


def persona(i: int) -> Persona:
    item_id = make_id(SEED, "personas", i)
    return factories.persona(item_id, name=f"Name{i}", text="<character/>", iteration=i)


def experience(i: int, a: Persona, b: Persona) -> Experience:
    return Experience(
        id=make_id(SEED, "experiences", i),
        persona_ids=[a.id, b.id],
        experience_text="<experience/>",
        style="structured",
        cadence="realtime",
        topics=[TopicSlot(title="plans", turns=2, primary=True)],
        initial_state="plans; 1 turns remaining; next",
        instant_events=["the bus arrives", "a call comes in"],
        opener=a.id,
        meta=ExperienceMeta(iteration=i, model="m", time_taken=0.1),
    )


PEOPLE = [persona(i) for i in range(3)]
GOOD_PERSONAS = b"".join(encode_line(p) for p in PEOPLE)
GOOD_EXPERIENCES = encode_line(experience(0, PEOPLE[0], PEOPLE[1]))


def _persona_dict(**changes: object) -> bytes:
    data = msgspec.to_builtins(persona(9))
    data["kind"] = "persona"
    data.update(changes)
    return msgspec.json.encode(data) + b"\n"


def _missing_meta() -> bytes:
    data = msgspec.json.decode(_persona_dict())
    del data["meta"]
    return msgspec.json.encode(data) + b"\n"


# (name, personas file bytes, line named, words the error must contain)
BAD_PERSONAS = [
    ("not json", GOOD_PERSONAS + b"this is not json\n", 4, "not JSON"),
    ("json but not a record", b'{"hello": 1}\n' + GOOD_PERSONAS, 1, "not a valid record"),
    ("wrong kind", GOOD_EXPERIENCES + GOOD_PERSONAS, 1, "an experience record; expected a persona"),
    ("missing field", GOOD_PERSONAS + _missing_meta(), 4, "missing required field `meta`"),
    ("wrong type", GOOD_PERSONAS + _persona_dict(persona_text=7), 4, "Expected `str`, got `int`"),
    ("duplicate id", GOOD_PERSONAS + encode_line(PEOPLE[1]), 4, "duplicate id"),
    ("torn last line", GOOD_PERSONAS + encode_line(persona(7))[:-20], 4, "torn last line"),
]


def _main(*argv: str) -> int:
    with pytest.raises(SystemExit) as stop:
        cli.main(list(argv))
    return int(stop.value.code or 0)


def _no_server() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens: any contact would fail


@pytest.mark.parametrize(
    ("name", "data", "line", "words"), BAD_PERSONAS, ids=[c[0] for c in BAD_PERSONAS]
)
def test_a_bad_personas_file_is_named_before_anything_starts(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    data: bytes,
    line: int,
    words: str,
) -> None:
    """Each malformed personas file: exit 2, one error line naming FILE:LINE and why, no
    output directory, and no server contacted (none is listening)."""
    source = tmp_path / "personas.jsonl"
    source.write_bytes(data)
    out = tmp_path / "out"
    code = _main("experiences", "-n", "2", "--personas-file", str(source), "--out", str(out),
                 "--endpoint", _no_server())  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_USAGE
    assert len(err) == 1 and f"{source}:{line}:" in err[0] and words in err[0], err
    assert not out.exists()


@pytest.mark.parametrize(
    ("data", "words"),
    [(b"", "an empty file"), (encode_line(PEOPLE[0]), "1 persona record(s); at least 2")],
)
def test_too_few_personas_names_the_file_and_the_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: bytes, words: str
) -> None:
    """An empty file or a single persona: the file and the count, exit 2, nothing written."""
    source = tmp_path / "personas.jsonl"
    source.write_bytes(data)
    out = tmp_path / "out"
    code = _main("experiences", "-n", "2", "--personas-file", str(source), "--out", str(out),
                 "--endpoint", _no_server())  # fmt: skip
    assert code == EXIT_USAGE
    err = capsys.readouterr().err
    assert str(source) in err and words in err
    assert not out.exists()


def test_a_personas_file_given_for_experiences_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`chats --experiences personas.jsonl`: its first line is named as the wrong kind."""
    people = tmp_path / "personas.jsonl"
    people.write_bytes(GOOD_PERSONAS)
    out = tmp_path / "out"
    code = _main("chats", "--experiences-file", str(people), "--personas-file", str(people),
                 "--out", str(out), "--endpoint", _no_server())  # fmt: skip
    assert code == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"{people}:1: a persona record; expected an experience record" in err
    assert not out.exists()


def test_an_experience_naming_an_unknown_persona_is_refused(tmp_path: Path) -> None:
    """The experiences' people must be in the personas file given beside them."""
    people = tmp_path / "personas.jsonl"
    people.write_bytes(encode_line(PEOPLE[0]) + encode_line(PEOPLE[2]))
    exps = tmp_path / "experiences.jsonl"
    exps.write_bytes(GOOD_EXPERIENCES)
    with pytest.raises(InputError, match=rf"{exps}:1: .* names persona {PEOPLE[1].id}"):
        check_stage_inputs(personas=people, experiences=exps)


def test_a_torn_last_line_is_left_out_only_when_allowed(tmp_path: Path) -> None:
    """The reader stops at a torn last line with allow_torn, and names it otherwise."""
    source = tmp_path / "personas.jsonl"
    source.write_bytes(GOOD_PERSONAS + encode_line(persona(8))[:30])
    with pytest.raises(TornLine, match=r"personas\.jsonl:4: torn last line"):
        list(read_records(source, Persona))
    assert [p for _, p in read_records(source, Persona, allow_torn=True)] == PEOPLE
    assert check_stage_inputs(personas=source, allow_torn=True, min_personas=2) == {"personas": 3}


def test_a_good_file_still_runs_and_a_torn_one_runs_with_the_flag(tmp_path: Path) -> None:
    """A valid personas file runs the experience stage against the fake server; a torn
    copy of it runs too with --allow-torn."""
    from fakeproc import run_soc_async
    from test_run_fake import check_run_dir, write_config

    cfg = write_config(tmp_path)
    source = tmp_path / "personas.jsonl"
    with FakeProcess("--reply", "soc_async.testing.scripted:reply") as fake:
        common = ("--config", str(cfg), "--endpoint", fake.url)
        made = run_soc_async("personas", "-n", "4", "--out", str(tmp_path / "p"), *common)
        assert made.returncode == 0, made.stderr[-2000:]
        good = (tmp_path / "p" / "personas.jsonl").read_bytes()
        source.write_bytes(good + good.splitlines(keepends=True)[0][:40])
        refused = run_soc_async("experiences", "-n", "2", "--personas-file", str(source),
                                "--out", str(tmp_path / "x"), *common)  # fmt: skip
        assert refused.returncode == EXIT_USAGE and "torn last line" in refused.stderr
        ran = run_soc_async("experiences", "-n", "2", "--personas-file", str(source),
                            "--allow-torn", "--out", str(tmp_path / "e"), *common)  # fmt: skip
        assert ran.returncode == 0, ran.stderr[-2000:]
    assert check_run_dir(tmp_path / "e", max_turns=6)["experiences"] == 2


def test_resume_names_a_hand_edited_line_before_any_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run --resume DIR` whose personas.jsonl was edited by hand: the line is named,
    exit 2, no server asked, and the file is left as it was."""
    from soc_async.store import RunDir, RunIdentity

    run = RunDir.create(tmp_path / "run", f"seed = {SEED}\nendpoints = ['{_no_server()}']\n",
                        RunIdentity.new(SEED))  # fmt: skip
    run.release()
    path = run.file("personas")
    path.write_bytes(GOOD_PERSONAS + b'{"kind": "persona", "id": 3}\n')
    before = path.read_bytes()
    code = _main("run", "--resume", str(run.path))
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and f"{path}:4:" in err, err
    assert path.read_bytes() == before
