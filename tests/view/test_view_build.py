"""The viewer's data files: every record lands in a chunk, sorted, escaped; the server."""

from __future__ import annotations

import json
import re
import threading
import urllib.request
from pathlib import Path

import pytest

from soc_async import cli
from soc_async.bench.cast import seed_personas
from soc_async.errors import EXIT_OK, EXIT_USAGE
from soc_async.stages.experiences import seed_experiences
from soc_async.store.rundata import RunData
from soc_async.testing.synthetic import write_run
from soc_async.view import build
from soc_async.view.render import card_html, experience_html
from soc_async.view.serve import make_server

_CALL = re.compile(r'^SOC_DATA\("(\w+)",(\d+),(.*)\);\n$', re.DOTALL)


def read_js(path: Path) -> tuple[str, int, object]:
    """(kind, number, payload) of one data script."""
    m = _CALL.match(path.read_text(encoding="utf-8"))
    assert m, path
    return m.group(1), int(m.group(2)), json.loads(m.group(3))


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of a few items, so a small run spreads over many files."""
    monkeypatch.setattr(build, "INDEX_CHUNK", 7)
    monkeypatch.setattr(build, "CONV_CHUNK", 4)
    monkeypatch.setattr(build, "PERSONA_CHUNK", 3)
    monkeypatch.setattr(build, "FAILURE_CHUNK", 2)


def test_every_record_lands_in_its_chunk(tmp_path, small_chunks):
    """Each conversation sits at the (chunk, slot) its index row names with every turn and
    message in order; index rows are sorted by chat index; persona pointers resolve;
    failed chats are listed with their reason and experience."""
    run = tmp_path / "run"
    write_run(run, personas=9, conversations=40, seed=1)
    summary = build.build_site(run, tmp_path / "site")
    data = tmp_path / "site" / "data"
    _, _, meta = read_js(data / "meta.js")
    assert meta["counts"]["conversations"] == summary.conversations == 36
    assert meta["counts"]["failed_chats"] == 4 and meta["rows"] == 40
    fields = {f: i for i, f in enumerate(meta["fields"])}
    rows = [r for k in range(meta["index_chunks"]) for r in read_js(data / f"i/{k:05d}.js")[2]]
    keys = [r[fields["key"]] for r in rows]
    assert keys == sorted(keys) == list(range(40))
    assert meta["index_first"] == keys[::7]
    chunks = {k: read_js(data / f"c/{k:05d}.js")[2] for k in range(meta["conv_chunks"])}
    personas = {}
    for k in range((9 + 2) // 3):
        personas.update(read_js(data / f"p/{k:05d}.js")[2])
    records = {c.chat_id: c for c in RunData(run).conversations()}
    for row in rows:
        entry = chunks[row[fields["chunk"]]]["convs"][row[fields["slot"]]]
        assert entry["id"] == row[fields["id"]]
        for pid, pc in entry["p"]:
            assert pid in read_js(data / f"p/{pc:05d}.js")[2]
        if row[fields["failed"]]:
            assert entry["fail"]["reason"] == "retries_exhausted:clock_backwards"
            assert meta["values"]["reason"][row[fields["reason"]]] == entry["fail"]["reason"]
            assert entry["exp"] in chunks[row[fields["chunk"]]]["exps"]
            continue
        c = records[entry["id"]]
        assert [[m[0], m[1], m[2], m[3]] for t in entry["turns"] for m in t[3]] == [
            [m.t, m.d, m.type, m.text] for t in c.turns for m in t.messages
        ]
        assert [entry["p"][t[0]][0] for t in entry["turns"]] == [t.sender for t in c.turns]
        assert entry["exp"] in chunks[row[fields["chunk"]]]["exps"]
        assert row[fields["name_a"]] == personas[c.persona_ids[0]]["name"]
    failures = [
        f for k in range(meta["failure_chunks"]) for f in read_js(data / f"f/{k:05d}.js")[2]
    ]
    assert sorted(f[1] for f in failures) == ["chats"] * 4 + ["experiences", "personas"]


def test_rebuild_replaces_old_chunks(tmp_path):
    """Building again into the same directory leaves no chunk of the earlier build behind."""
    big, small = tmp_path / "big", tmp_path / "small"
    write_run(big, personas=6, conversations=120, seed=1)
    write_run(small, personas=6, conversations=5, seed=1, fail_every=0)
    build.build_site(big, tmp_path / "site")
    build.build_site(small, tmp_path / "site")
    assert sorted(p.name for p in (tmp_path / "site/data/c").iterdir()) == ["00000.js"]


def test_cards_render_as_html_with_markup_escaped():
    """A card gives one heading per section; markup a model wrote is shown, never run."""
    card = seed_personas()[0].persona_text
    html = card_html(card)
    assert html.count("<h4>") == 12
    assert "<strong>Name:</strong> Juliana Ferreira" in html
    hostile = card.replace("**Values**\n", "**Values**\n<script>alert(1)</script> <b>x</b>\n")
    out = card_html(hostile)
    assert "<script>" not in out and "&lt;script&gt;" in out and "<b>" not in out


def test_experience_renders_labels_and_lists():
    """An experience's labelled lines are bold labels, its topics and events lists."""
    html = experience_html(seed_experiences()[0])
    assert "<strong>Conversation style:</strong> structured" in html
    assert "<h5>Possible instant events</h5>" in html
    assert html.count("<li>") == 6
    assert "&lt;experience&gt;" not in html


def test_serve_on_localhost(tmp_path):
    """--serve's server answers on 127.0.0.1 with the page and its data scripts."""
    write_run(tmp_path / "run", personas=4, conversations=3, seed=0)
    build.build_site(tmp_path / "run", tmp_path / "site")
    server = make_server(tmp_path / "site", port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"
        for path in ("index.html", "data/meta.js"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=5) as r:
                assert r.status == 200
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_command_line(tmp_path, capsys):
    """`soc-async view DIR --out OUT` writes the site; a missing run is exit code 2."""
    write_run(tmp_path / "run", personas=4, conversations=10, seed=0)
    with pytest.raises(SystemExit) as exc:
        cli.main(["view", str(tmp_path / "run"), "--out", str(tmp_path / "site")])
    assert exc.value.code == EXIT_OK
    assert "index.html: 9 conversations, 1 failed chats" in capsys.readouterr().out
    assert (tmp_path / "site/index.html").exists()
    with pytest.raises(SystemExit) as exc:
        cli.main(["view", str(tmp_path / "nothing")])
    assert exc.value.code == EXIT_USAGE
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exc:
        cli.main(["view", str(tmp_path / "empty")])
    assert exc.value.code == EXIT_USAGE
