"""The judge against the fake vLLM server with scripted scores: what is sent, the
aggregation, resume from judge.jsonl, and malformed scores refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from handmade_run import C, write_run

from soc_async import config as config_mod
from soc_async.report.judge import SCHEMA, MalformedScore, parse_verdict, sample_ids
from soc_async.report.judging import JudgeStore, judge_sample
from soc_async.run.gateway import ModelGateway
from soc_async.run.progress import RunCounters

# Each conversation is told apart by words only it has.
MARKERS = {"bye now": C[0], "heard the new album": C[1], "maybe": C[2]}
SCORES = {
    C[0]: {"persona_consistency": 4, "naturalness": 2, "topic_adherence": 5, "pacing": 3},
    C[1]: {"persona_consistency": 5, "naturalness": 5, "topic_adherence": 5, "pacing": 5},
    C[2]: {"persona_consistency": 1, "naturalness": 3, "topic_adherence": 2, "pacing": 2},
}


class Scripted:
    """The fake server's reply function: the scripted verdict of the conversation in the
    prompt, or a scripted bad reply for it; keeps every request body."""

    def __init__(self, bad: dict[str, str] | None = None) -> None:
        self.bad = bad or {}
        self.bodies: list[dict[str, Any]] = []

    def which(self, body: dict[str, Any]) -> str:
        prompt = body["messages"][1]["content"]
        found = [cid for marker, cid in MARKERS.items() if marker in prompt]
        assert len(found) == 1, found
        return found[0]

    def __call__(self, body: dict[str, Any]) -> str:
        self.bodies.append(body)
        cid = self.which(body)
        if cid in self.bad:
            return self.bad[cid]
        return json.dumps({**SCORES[cid], "reason": f"scripted for {cid}"})


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return write_run(tmp_path / "run")


async def judge(server: Any, run: Path, store_path: Path, n: int, seed: int = 0):
    cfg = config_mod.from_dict({"endpoints": [server.url], "concurrency": {"fixed": 4}})
    async with ModelGateway(cfg, RunCounters()) as gateway:
        return await judge_sample(
            gateway, cfg, gateway.facts, run, JudgeStore(store_path), n=n, seed=seed
        )


async def test_scores_are_asked_under_the_schema_and_aggregated(fake_server, run, tmp_path):
    """Each request carries the JSON schema (structured_outputs.json) at temperature 0;
    the figure has per-criterion distributions and means, and the worst first."""
    scripted = Scripted()
    server = await fake_server(reply=scripted)
    section = await judge(server, run, tmp_path / "judge.jsonl", n=3)
    assert len(scripted.bodies) == 3
    body = scripted.bodies[0]
    assert body["structured_outputs"] == {"json": SCHEMA} and body["temperature"] == 0.0
    assert (section.sample, section.judged, section.refused) == (3, 3, {})
    assert section.means == {
        "persona_consistency": pytest.approx(10 / 3),
        "naturalness": pytest.approx(10 / 3),
        "topic_adherence": 4.0,
        "pacing": pytest.approx(10 / 3),
    }
    assert section.distribution["topic_adherence"] == {"1": 0, "2": 1, "3": 0, "4": 0, "5": 2}
    assert [w.chat_id for w in section.worst] == [C[2], C[0], C[1]]
    assert [w.total for w in section.worst] == [8, 14, 20]
    assert section.worst[0].reason == f"scripted for {C[2]}"
    assert "maybe" in section.worst_transcripts[C[2]]
    assert section.model == "fake-model"


async def test_the_sample_is_seeded_and_a_rerun_judges_only_what_is_missing(
    fake_server, run, tmp_path
):
    """n=2 judges the two ids of smallest seeded hash; judge.jsonl keeps them; asking for
    3 next time sends one request; asking again sends none and reads the same figure."""
    scripted = Scripted()
    server = await fake_server(reply=scripted)
    store = tmp_path / "judge.jsonl"
    first = await judge(server, run, store, n=2, seed=7)
    expected = sample_ids(C, 2, 7)
    assert sorted(scripted.which(b) for b in scripted.bodies) == sorted(expected)
    stored = {json.loads(line)["chat_id"] for line in store.read_text().splitlines()}
    assert stored == set(expected)
    assert first.judged == 2
    second = await judge(server, run, store, n=3, seed=7)
    assert len(scripted.bodies) == 3 and second.judged == 3
    third = await judge(server, run, store, n=3, seed=7)
    assert len(scripted.bodies) == 3
    assert third.means == second.means and len(store.read_text().splitlines()) == 3


async def test_a_torn_last_line_of_judge_jsonl_is_cut_and_judged_again(fake_server, run, tmp_path):
    """A verdict half written when the judge was killed is dropped and asked again."""
    scripted = Scripted()
    server = await fake_server(reply=scripted)
    store = tmp_path / "judge.jsonl"
    await judge(server, run, store, n=3)
    lines = store.read_bytes().splitlines(keepends=True)
    store.write_bytes(b"".join(lines[:2]) + lines[2][:20])
    section = await judge(server, run, store, n=3)
    assert len(scripted.bodies) == 4 and section.judged == 3
    assert all(json.loads(line) for line in store.read_text().splitlines())


def verdict(**fields: Any) -> str:
    base = {"persona_consistency": 4, "naturalness": 3, "topic_adherence": 3, "pacing": 3}
    return json.dumps({**base, "reason": "x", **fields})


MISSING = json.dumps({"naturalness": 3, "topic_adherence": 3, "pacing": 3, "reason": "x"})


@pytest.mark.parametrize(
    "bad",
    [
        verdict(persona_consistency=7),
        verdict(persona_consistency=4.5),
        MISSING,
        verdict(reason="a\nb"),
        "four out of five",
    ],
    ids=["out_of_range", "not_an_integer", "missing_criterion", "two_line_reason", "not_json"],
)
async def test_a_malformed_score_is_refused_not_stored(fake_server, run, tmp_path, bad):
    """A reply off the schema is asked again with what was wrong; when it stays wrong the
    conversation is refused: not in judge.jsonl, not counted, named in the figure, and
    asked again by the next run."""
    scripted = Scripted(bad={C[1]: bad})
    server = await fake_server(reply=scripted)
    store = tmp_path / "judge.jsonl"
    section = await judge(server, run, store, n=3)
    asked = [scripted.which(b) for b in scripted.bodies]
    assert asked.count(C[1]) == 3  # the first try and two corrections
    retry = [b for b in scripted.bodies if scripted.which(b) == C[1]][-1]
    assert "not valid" in retry["messages"][-1]["content"]
    assert section.judged == 2 and set(section.refused) == {C[1]}
    assert section.refused[C[1]].startswith("malformed score")
    assert C[1] not in store.read_text()
    assert all(w.chat_id != C[1] for w in section.worst)
    again = await judge(server, run, store, n=3)
    assert [scripted.which(b) for b in scripted.bodies].count(C[1]) == 6
    assert set(again.refused) == {C[1]}


def test_parse_verdict_reads_exactly_the_schema() -> None:
    """A valid verdict is read with its reason stripped; extra keys, a bool, a 0 and an
    empty reason are malformed."""
    ok = parse_verdict(
        ' {"persona_consistency": 1, "naturalness": 5, "topic_adherence": 3, "pacing": 2,'
        ' "reason": " too polite "} '
    )
    assert (ok.persona_consistency, ok.naturalness, ok.reason) == (1, 5, "too polite")
    base = {"persona_consistency": 3, "naturalness": 3, "topic_adherence": 3, "pacing": 3}
    for bad in (
        {**base, "reason": "x", "extra": 1},
        {**base, "pacing": True, "reason": "x"},
        {**base, "pacing": 0, "reason": "x"},
        {**base, "reason": "  "},
    ):
        with pytest.raises(MalformedScore):
            parse_verdict(json.dumps(bad))


def test_the_sample_does_not_depend_on_order() -> None:
    """The same seed picks the same ids from any order; another seed picks others."""
    ids = [f"c-{i:07d}-x" for i in range(200)]
    assert sample_ids(ids, 10, 3) == sample_ids(reversed(ids), 10, 3)
    assert sample_ids(ids, 10, 3) != sample_ids(ids, 10, 4)
    assert len(sample_ids(ids, 500, 3)) == 200 and sample_ids(ids, 0, 3) == []
