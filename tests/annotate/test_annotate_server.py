"""The annotate server over real HTTP: two raters at once, answers checked, the token.

Every answer the server acknowledges is one whole line of annotations.jsonl, fsynced
before the acknowledgement; two raters answering at full speed at the same time never
lose or tear a line, and neither do two writers in one file from different handles.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import aiohttp
import msgspec
from aiohttp.test_utils import TestClient, TestServer

from soc_async.annotate.records import Annotation, Preference, Rating
from soc_async.annotate.rubric import default_rubric
from soc_async.annotate.server import make_app, open_session
from soc_async.store.appendlog import AppendLog, read_log
from soc_async.testing.synthetic import write_run

KEYS = [c.key for c in default_rubric().criteria]
COMMENT = "a long comment that makes each line bigger than a pipe buffer. " * 55


async def rate_all(session: aiohttp.ClientSession, api: str, rater: str) -> list[str]:
    """Answer the rater's whole queue, every answer in flight at once."""
    async with session.get(api + "start", params={"rater": rater}) as r:
        start = await r.json()

    async def one(k: int, item: str) -> str:
        body = {
            "rater": rater,
            "item": item,
            "scores": {key: 1 + (k + j) % 5 for j, key in enumerate(KEYS)},
            "flags": ["repetition"] if k % 3 == 0 else [],
            "comment": f"{rater} {k} {COMMENT}",
        }
        async with session.post(api + "answer", json=body) as r:
            assert r.status == 200, await r.text()
            return (await r.json())["saved"]

    return list(await asyncio.gather(*(one(k, i) for k, i in enumerate(start["queue"]))))


async def test_two_raters_at_once_lose_no_line_and_tear_none(
    tmp_path: Path, annotate_server
) -> None:
    write_run(tmp_path / "run", conversations=60, seed=3)
    server = annotate_server(tmp_path / "run", "--sample", "40", "--overlap", "0.5").start()
    async with aiohttp.ClientSession() as s:
        ana, ben = await asyncio.gather(
            rate_all(s, server.api, "ana"), rate_all(s, server.api, "ben")
        )
    lines = (tmp_path / "run" / "annotations.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b""  # ends on a whole line
    decode = msgspec.json.Decoder(Annotation).decode
    records = [decode(line) for line in lines[:-1]]  # each line decodes whole
    assert len(records) == len(ana) + len(ben)
    assert sorted((r.rater, r.item) for r in records) == sorted(
        [("ana", i) for i in ana] + [("ben", i) for i in ben]
    )
    assert all(isinstance(r, Rating) and r.comment.endswith(COMMENT.strip()) for r in records)
    # The 20 shared conversations were rated by both; at start both queues held all 40
    # items (nothing was rated yet), so each rater rated every unshared item too.
    assert len(set(ana) & set(ben)) >= 20


def test_two_writers_on_one_file_interleave_whole_lines(tmp_path: Path) -> None:
    """Two handles (as two servers on one run directory would hold), two threads each."""
    path = tmp_path / "annotations.jsonl"
    logs = [AppendLog(path), AppendLog(path)]

    def write(log: AppendLog, who: str) -> None:
        for k in range(150):
            log.append(
                {
                    "kind": "rating",
                    "rater": who,
                    "item": str(k),
                    "rubric": "r",
                    "scores": {"x": 1},
                    "comment": COMMENT,
                    "at": "t",
                }
            )

    threads = [threading.Thread(target=write, args=(logs[n % 2], f"w{n}")) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for log in logs:
        log.close()
    records = list(read_log(path, Annotation))
    assert len(records) == 600
    assert Counter_of(records) == {f"w{n}": 150 for n in range(4)}


def Counter_of(records: list[Annotation]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in records:
        out[r.rater] = out.get(r.rater, 0) + 1
    return out


def test_a_torn_last_line_is_cut_off_when_the_log_opens_again(tmp_path: Path) -> None:
    path = tmp_path / "annotations.jsonl"
    log = AppendLog(path)
    log.append(
        {"kind": "rating", "rater": "a", "item": "1", "rubric": "r", "scores": {}, "at": "t"}
    )
    log.close()
    with path.open("ab") as f:
        f.write(b'{"kind": "rating", "rater": "b", "it')  # a crash in the middle of a write
    assert [r.rater for r in read_log(path, Annotation)] == ["a"]
    AppendLog(path).close()
    assert path.read_bytes().endswith(b'"t"}\n')


async def test_answers_are_checked_and_a_token_guards_the_data(tmp_path: Path) -> None:
    write_run(tmp_path / "run", conversations=12, seed=1)
    write_run(tmp_path / "other", conversations=12, seed=2)
    session = open_session(
        tmp_path / "run", rubric=default_rubric(), compare=tmp_path / "other", sample=5
    )
    client = TestClient(TestServer(make_app(session, token="s3cret")))
    await client.start_server()
    try:
        assert (await client.get("/")).status == 200  # the page holds no data
        assert (await client.get("/static/app.js")).status == 200
        assert (await client.get("/static/../server.py")).status == 404
        assert (await client.get("/api/start", params={"rater": "ana"})).status == 403
        bad = await client.get("/api/start", params={"rater": "ana", "token": "guess"})
        assert bad.status == 403
        ok = await client.get("/api/start", params={"rater": "ana", "token": "s3cret"})
        start = await ok.json()
        assert start["mode"] == "ab" and len(start["queue"]) == 5
        item = start["queue"][0]
        answer = {"rater": "ana", "item": item, "choices": dict.fromkeys(KEYS, "left")}
        for broken, words in [
            (
                {**answer, "choices": {KEYS[0]: "left"}},
                "choices: expected left, right or tie for each",
            ),
            ({**answer, "choices": dict.fromkeys(KEYS, "up")}, "expected left, right or tie"),
            ({**answer, "item": "pair-9999"}, "not in this session's sample"),
            ({**answer, "rater": " "}, "rater: expected your name"),
        ]:
            r = await client.post("/api/answer", params={"token": "s3cret"}, json=broken)
            assert r.status == 400 and words in (await r.json())["error"]
        r = await client.post("/api/answer", params={"token": "s3cret"}, json=answer)
        assert r.status == 200
    finally:
        await client.close()
        session.log.close()
    (record,) = list(read_log(tmp_path / "run" / "annotations.jsonl", Annotation))
    assert isinstance(record, Preference)
    plan_item = session.plan.item(item)
    assert plan_item is not None and record.left == plan_item.left
    assert record.winners == dict.fromkeys(KEYS, plan_item.left)  # left unblinded to its run
