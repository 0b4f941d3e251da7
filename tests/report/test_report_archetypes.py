"""The archetype figure (drawn against the table, written, judged, drift), the archetype
call kind's strict reading, the scripted model's answer to it, and ``report
--judge-cards`` over HTTP against the fake server process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakeproc import FakeProcess, run_soc_async

from soc_async.archetypes import ArchetypeDraw, shares
from soc_async.config import RunConfig
from soc_async.formats.character import SECTIONS, canonical_text
from soc_async.llm.types import Completion, TokenUsage
from soc_async.records import Persona, PersonaMeta
from soc_async.report.archetype_judge import (
    ArchetypeJudged,
    CardReading,
    read_reply,
    reading_schema,
    system_prompt,
    user_prompt,
)
from soc_async.report.archetype_mix import ArchetypeFigure
from soc_async.report.proportions import total_variation, z_score
from soc_async.testing.scripted import ScriptedWriter

TABLE = RunConfig().archetypes


def _persona(i: int, temperament: str, coping: str, written: str) -> Persona:
    sections = {h: f"Plain text of {h.lower()}." for h in SECTIONS}
    sections["Core Traits"] = f"- By temperament {TABLE.temperaments[temperament].prompt}."
    sections["Emotional Profile"] = f"Under stress this person {TABLE.coping[written].prompt}."
    return Persona(
        id=f"p-{i:07d}",
        persona_text=canonical_text(sections),
        meta=PersonaMeta(
            iteration=i, model="m", region="r", subregion="s", name="n", gender="female",
            age=30, time_taken=0.0, temperament=temperament, coping=coping,
            archetype_hint="withdraws" if i % 10 == 0 else "",
        ),
    )  # fmt: skip


def _run(n: int, drift_from: int | None = None) -> list[Persona]:
    """Personas drawn as a run draws them; from ``drift_from`` on every card writes
    "withdraws" whatever was drawn."""
    temperament = ArchetypeDraw(shares(TABLE.temperaments), seed=1, salt="temperament", block=20)
    coping = ArchetypeDraw(shares(TABLE.coping), seed=1, salt="coping", block=20)
    out = []
    for i in range(n):
        c = coping.draw(i)
        written = "withdraws" if drift_from is not None and i >= drift_from else c
        out.append(_persona(i, temperament.draw(i), c, written))
    return out


def test_drawn_mix_sits_inside_three_standard_errors_in_every_window() -> None:
    """2,000 stratified draws in 10-20 windows: every row within 3 SE of its weight,
    every card written as drawn, no drift beyond the drawn baseline; arrival order
    (shards one after another) does not change the figure."""
    personas = _run(2000)
    figure = ArchetypeFigure(TABLE)
    for p in personas[1000:] + personas[:1000]:
        figure.persona(p)
    result = figure.result()
    assert result.personas == 2000 and 10 <= len(result.tables[0].windows) <= 20
    assert result.hinted.hits == 200 and result.hint_styles == {"withdraws": 200}
    for t in result.tables:
        assert t.within_3se is True and t.max_abs_z is not None and t.max_abs_z < 3
        assert sum(t.drawn.values()) == 2000
        assert t.written_match.value == 1.0 and t.written == t.drawn
        assert t.written_drift == t.drawn_drift
        assert sum(w.personas for w in t.windows) == 2000
    in_order = ArchetypeFigure(TABLE)
    for p in personas:
        in_order.persona(p)
    assert in_order.result() == result


def test_written_drift_and_judged_readings_are_figures() -> None:
    """Cards that all write "withdraws" from the middle on: the written match falls, the
    first-to-last distance of the written mix is far above the drawn one's, and the
    judge's readings (here: the truth) give the same picture on their sample."""
    personas = _run(1000, drift_from=500)
    truth = {p.id: "withdraws" if p.meta.iteration >= 500 else p.meta.coping for p in personas}
    judged = ArchetypeJudged(
        sample=200,
        seed=0,
        read=200,
        temperament={p.id: p.meta.temperament for p in personas[::5]},
        coping={p.id: truth[p.id] for p in personas[::5]},
    )
    figure = ArchetypeFigure(TABLE, judged)
    for p in personas:
        figure.persona(p)
    coping = figure.result().tables[1]
    share_withdraws = 1 - shares(TABLE.coping)["withdraws"]
    assert coping.written_match.value == pytest.approx(1 - 0.5 * share_withdraws, abs=0.02)
    assert coping.written_drift is not None and coping.drawn_drift is not None
    assert coping.written_drift > 0.7 > 0.2 > coping.drawn_drift
    assert coping.judged_match.total == 200
    assert coping.judged_match.value == pytest.approx(coping.written_match.value, abs=0.08)
    assert coping.judged_drift is not None and coping.judged_drift > 0.6
    assert coping.within_3se is True  # the draws stayed the table's
    assert figure.result().tables[0].judged_match.value == 1.0


def test_z_score_and_total_variation() -> None:
    assert z_score(30, 100, 0.2) == pytest.approx(2.5)
    assert z_score(5, 0, 0.2) == 0.0
    from collections import Counter

    assert total_variation(Counter(a=1, b=1), Counter(a=2)) == pytest.approx(0.5)
    assert total_variation(Counter(), Counter(a=1)) is None


def _completion(text: str, finish: str = "stop") -> Completion:
    return Completion(
        text=text, finish_reason=finish, model="m", usage=TokenUsage(prompt=1, completion=1)
    )


def test_reply_is_read_strictly() -> None:
    """Exactly two known labels pass; an unknown label, an extra key, prose or a cut reply
    is refused with a correction naming the labels."""
    ok = read_reply(_completion('{"temperament": "easygoing", "coping": "humour"}'), TABLE)
    assert ok == CardReading(temperament="easygoing", coping="humour")
    bad = read_reply(_completion('{"temperament": "easygoing", "coping": "sulks"}'), TABLE)
    assert not isinstance(bad, CardReading) and bad.reason == "unknown_coping"
    assert "withdraws" in bad.detail
    extra = '{"temperament": "easygoing", "coping": "humour", "why": "x"}'
    assert read_reply(_completion(extra), TABLE).reason == "malformed_reading"  # type: ignore[union-attr]
    assert read_reply(_completion("humour"), TABLE).reason == "malformed_reading"  # type: ignore[union-attr]
    cut = read_reply(_completion('{"temperament": "easy', "length"), TABLE)
    assert cut.reason == "truncated"  # type: ignore[union-attr]
    schema = reading_schema(TABLE)
    assert schema["properties"]["coping"]["enum"] == list(TABLE.coping)
    assert schema["additionalProperties"] is False


def test_scripted_model_answers_the_archetype_call_from_the_card() -> None:
    """The scripted model names the rows whose descriptions the card repeats, as a JSON
    object the strict reader accepts; broken, a label on no list."""
    card = _persona(0, "blunt and stubborn", "makes a plan", "physical outlet").persona_text
    body = {
        "messages": [
            {"role": "system", "content": system_prompt(TABLE)},
            {"role": "user", "content": user_prompt(card)},
        ],
        "structured_outputs": {"json": reading_schema(TABLE)},
    }
    reply = ScriptedWriter()(body)
    assert read_reply(_completion(reply), TABLE) == CardReading(
        temperament="blunt and stubborn", coping="physical outlet"
    )
    broken = ScriptedWriter(error_rate=1.0)(body)
    assert "something else" in json.loads(broken).values()


@pytest.mark.slow
def test_report_judge_cards_over_http_and_resume(tmp_path: Path) -> None:
    """A 200-persona run on the fake server draws every row within 3 SE in every window
    and writes them as drawn; --judge-cards 6 reads six cards (archetypes.jsonl), 9 adds
    three; the report and the HTML carry the figure; a negative count is exit code 2."""
    run = tmp_path / "run"
    out = tmp_path / "out"
    with FakeProcess("--reply", "soc_async.testing.scripted:reply") as fake:
        done = run_soc_async(
            "personas", "-n", "200", "--endpoint", fake.url, "--out", str(run), "--seed", "4"
        )
        assert done.returncode == 0, done.stderr[-2000:]
        args = ["report", str(run), "--out", str(out / "report.html"), "--endpoint", fake.url]
        done = run_soc_async(*args, "--judge-cards", "6")
        assert done.returncode == 0, done.stderr[-2000:]
        assert "6 cards read" in done.stdout
        first = (out / "archetypes.jsonl").read_text().splitlines()
        assert len(first) == 6
        done = run_soc_async(*args, "--judge-cards", "9")
        assert done.returncode == 0, done.stderr[-2000:]
    lines = (out / "archetypes.jsonl").read_text().splitlines()
    assert lines[:6] == first and len(lines) == 9
    report = json.loads((run / "report.json").read_text())
    arch = report["archetypes"]
    assert arch["personas"] == 200 and arch["judge"]["read"] == 9
    for table in arch["tables"]:
        assert table["within_3se"] is True
        assert table["written_match"]["value"] == 1.0
        assert table["judged_match"] == {"hits": 9, "total": 9, "value": 1.0}
    assert "8b. Archetypes" in (out / "report.html").read_text()
    bad = run_soc_async("report", str(run), "--judge-cards", "-1")
    assert bad.returncode == 2 and "--judge-cards -1" in bad.stderr


def test_compare_names_a_fallen_match_share() -> None:
    """--compare lists the coping match share when it moves more than 3 points, and not
    a report from before archetypes against itself."""
    from soc_async.report.compare import compare

    def report(written: float) -> dict[str, object]:
        table = {"name": "coping", "written_match": {"value": written}, "judged_match": {}}
        return {"archetypes": {"tables": [table]}}

    keys = [d.key for d in compare(report(0.9), report(0.7))]
    assert keys == ["archetypes:coping:written_match"]
    assert compare(report(0.9), report(0.89)) == []
    assert compare({}, {}) == []
