"""Bad input to ``soc-async annotate``: one line naming what is wrong, exit code 2.

A rubric with an unknown scale or a missing anchor is refused naming the file and the
line the problem is on; a directory without conversations is refused before any server
starts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from soc_async import cli
from soc_async.annotate.rubric import DEFAULT_RUBRIC, SCALES, default_rubric, parse_rubric
from soc_async.errors import InputError
from soc_async.testing.synthetic import write_run

RUBRIC = """\
version = "t-1"
flags = ["broken turn"]

[[criteria]]
key = "naturalness"
label = "Naturalness"
scale = "1-3"
[criteria.anchors]
1 = "stiff"
2 = "mixed"
3 = "natural"

[[criteria]]
key = "overall"
label = "Overall"
scale = "{scale}"
[criteria.anchors]
1 = "bad"
2 = "poor"
{three}
4 = "good"
5 = "great"
"""


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as ended:
        cli.main(["annotate", *args])
    return int(ended.value.code), capsys.readouterr().err


def test_the_default_rubric_has_every_criterion_the_method_asks_for() -> None:
    r = default_rubric()
    keys = [c.key for c in r.criteria]
    assert keys == [
        "naturalness",
        "persona_opener",
        "persona_other",
        "topic_adherence",
        "pacing",
        "events",
        "overall",
    ]
    assert all(c.scale == "1-5" and sorted(c.anchors) == list("12345") for c in r.criteria)
    assert r.flags == ["broken turn", "wrong person", "repetition"]
    assert r.flag_keys == {"broken turn": "b", "wrong person": "w", "repetition": "r"}
    assert r.comment and r.text.startswith("# The default rubric")


def test_a_good_rubric_reads_back() -> None:
    r = parse_rubric(RUBRIC.format(scale="1-5", three='3 = "fair"'), "r.toml")
    assert [c.key for c in r.criteria] == ["naturalness", "overall"]
    assert (r.criteria[0].low, r.criteria[0].high) == SCALES["1-3"]


@pytest.mark.parametrize(
    ("scale", "three", "line", "words"),
    [
        ("1-10", '3 = "fair"', 16, "unknown scale '1-10'; expected one of 1-3, 1-5, 1-7"),
        ("1-5", "", 17, "no anchor for 3; expected one sentence for every point 1-5"),
        ("1-5", '3 = "fair"\n6 = "six"', 21, "anchor 6 is outside the scale 1-5"),
        ("1-5", 'three = "x"', 17, "no anchor for 3"),
    ],
)
def test_a_bad_rubric_names_file_and_line_and_exits_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    scale: str,
    three: str,
    line: int,
    words: str,
) -> None:
    """The line is the one a person must edit: the scale line, the anchors table."""
    write_run(tmp_path / "run", conversations=6)
    path = tmp_path / "rubric.toml"
    path.write_text(RUBRIC.format(scale=scale, three=three))
    code, err = run_cli(capsys, str(tmp_path / "run"), "--rubric", str(path), "--port", "0")
    assert code == 2
    assert err.count("\n") == 1, err
    assert err.startswith(f"soc-async: error: {path}:{line}: criteria[1] (overall): ")
    assert words in err
    assert not (tmp_path / "run" / "annotate-plan.json").exists()  # refused before anything


def test_an_unknown_key_names_its_line(tmp_path: Path) -> None:
    text = RUBRIC.format(scale="1-5", three='3 = "fair"').replace(
        'label = "Overall"', 'lable = "x"'
    )
    with pytest.raises(InputError, match=r"^r\.toml:15: criteria\[1\]\.lable: unknown key$"):
        parse_rubric(text, "r.toml")
    with pytest.raises(InputError, match=r"^r\.toml:3: not valid TOML"):
        parse_rubric('version = "x"\n\n[[criteria]\n', "r.toml")


def test_annotate_on_a_directory_without_conversations_exits_2_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_run(tmp_path / "run", conversations=4)
    (tmp_path / "run" / "conversations.jsonl").write_text("")
    code, err = run_cli(capsys, str(tmp_path / "run"), "--port", "0")
    assert code == 2 and err.count("\n") == 1
    assert "no conversations to rate" in err and str(tmp_path / "run") in err

    (tmp_path / "empty").mkdir()
    code, err = run_cli(capsys, str(tmp_path / "empty"), "--port", "0")
    assert code == 2 and err.count("\n") == 1 and "not a soc-async run directory" in err


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--sample", "0"], "--sample 0: expected a number of conversations >= 1"),
        (["--overlap", "1.5"], "--overlap 1.5: expected a fraction from 0 to 1"),
    ],
)
def test_bad_numbers_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], words: str
) -> None:
    write_run(tmp_path / "run", conversations=4)
    code, err = run_cli(capsys, str(tmp_path / "run"), *args, "--port", "0")
    assert code == 2 and words in err and err.count("\n") == 1


def test_a_stored_plan_is_not_changed_under_raters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second --sample against a stored plan is refused: raters who started would be
    rating another sample."""
    from soc_async.annotate.server import open_session

    write_run(tmp_path / "run", conversations=20)
    first = open_session(tmp_path / "run", rubric=default_rubric(), sample=5)
    first.log.close()
    code, err = run_cli(capsys, str(tmp_path / "run"), "--sample", "8", "--port", "0")
    assert code == 2 and "already holds a plan of 5" in err
    again = open_session(tmp_path / "run", rubric=default_rubric())
    assert [i.id for i in again.plan.items] == [i.id for i in first.plan.items]
    again.log.close()
    assert DEFAULT_RUBRIC == "default_rubric.toml"
