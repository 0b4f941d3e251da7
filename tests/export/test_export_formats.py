"""Records into rows: the turn text reads back, SOC-2508 parts, messages options, schemas."""

from __future__ import annotations

import msgspec
import msgspec.inspect as mi
import pytest

from soc_async.errors import InputError
from soc_async.export import ROW_TYPES
from soc_async.export.formats import chat_parts, render_turns, soc2508_row, soc2602_row, spb_row
from soc_async.export.messages import MessagesOptions, conversation_samples, render_message
from soc_async.export.schema import arrow_schema, hf_features
from soc_async.formats.turn import parse_turn
from soc_async.records import Message, Turn
from soc_async.store.rundata import RunData
from soc_async.testing.synthetic import write_run


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> RunData:
    path = tmp_path_factory.mktemp("run")
    write_run(path, personas=10, conversations=24, seed=5)
    return RunData(path)


def _turn(sender: str, *messages: tuple[str, str, str, str], event: str | None = None) -> Turn:
    return Turn(
        sender=sender,
        state="Plans; 0 turns remaining; end",
        messages=[Message(t=t, d=d, type=k, text=x) for t, d, k, x in messages],  # type: ignore[arg-type]
        instant_event=event,
    )


def test_turn_text_reads_back_through_the_turn_parser(run):
    """Each <turn> of the soc-2602 text parses (formats/turn.py) back into the turn's own
    state line and messages, the ending tag exactly on the last turn of an exhausted chat."""
    for c in run.conversations():
        text = render_turns(c.turns, c.ended_by)
        blocks = [b + "</turn>" for b in text.split("</turn>")[:-1]]
        assert len(blocks) == len(c.turns)
        for k, (block, turn) in enumerate(zip(blocks, c.turns, strict=True)):
            parsed = parse_turn(block)
            assert parsed.state_line == turn.state, parsed
            got = [(m.t, m.d, m.type, m.text) for m in parsed.messages]
            assert got == [(m.t, m.d, m.type, m.text) for m in turn.messages]
            last = k == len(c.turns) - 1
            assert parsed.ended == (last and c.ended_by == "exhausted")


def test_soc2602_rows_are_self_contained(run):
    """A soc-2602 row carries its experience and both personas (opener first) by value."""
    c = next(run.conversations())
    row = soc2602_row(c, run)
    assert [p.id for p in row.personas] == c.persona_ids
    assert row.experience.id == c.experience_id
    assert row.personas[0].persona_text == run.personas[c.persona_ids[0]].persona_text
    assert [t.sender_name for t in row.turns][:2] == [p.meta.name for p in row.personas[:2]]


def test_chat_parts_delays_media_and_end():
    """SOC-2508 parts: media as <type>..</type>, a gap of 5 minutes or more before a turn
    as a leading <delay minutes="N"/> (across midnight too), <end/> after an exhausted chat."""
    turns = [
        _turn("a", ("23:50", "15.03", "text", "hi"), ("23:52", "15.03", "image", "[cat]")),
        _turn("b", ("23:55", "15.03", "text", "nice")),
        _turn("a", ("00:40", "16.03", "text", "sorry, fell asleep")),
    ]
    parts = chat_parts(turns, "exhausted")
    assert [p.sender for p in parts] == ["a", "b", "a"]
    assert parts[0].messages == ["hi", "<image>[cat]</image>"]
    assert parts[1].messages == ["nice"]  # 3 minutes: no delay
    assert parts[2].messages == ['<delay minutes="45"/>', "sorry, fell asleep", "<end/>"]
    assert chat_parts(turns, "max_turns")[-1].messages[-1] == "sorry, fell asleep"


def test_soc2508_persona_order_follows_the_experience(run):
    """persona1 and persona2 are the experience's pair as paired; chat parts name the
    sender of every turn by persona id."""
    c = next(run.conversations())
    row = soc2508_row(c, run)
    exp = run.experiences[c.experience_id]
    assert [row.experience.persona1.id, row.experience.persona2.id] == exp.persona_ids
    assert [p.sender for p in row.chat_parts] == [t.sender for t in c.turns]


def test_render_message_options():
    """Timestamps none/prefix/xml and media tag/label/text render as docs/export.md says."""
    m = Message(t="16:39", d="15.03", type="image", text="[cat photo]")
    t = Message(t="16:40", d="15.03", type="text", text="lol")

    def r(msg: Message, **kw: str) -> str:
        return render_message(msg, MessagesOptions(**kw))  # type: ignore[arg-type]

    assert r(m) == "[15.03 16:39] <image>[cat photo]</image>"
    assert r(t) == "[15.03 16:40] lol"
    assert r(m, timestamps="none", media="label") == "[image] [cat photo]"
    assert r(m, timestamps="none", media="text") == "[cat photo]"
    assert (
        r(m, timestamps="xml") == '<message t="16:39" d="15.03" type="image">[cat photo]</message>'
    )


def test_messages_samples_one_per_side(run):
    """Two samples per conversation: in each, the side's persona is the assistant on its
    own turns, the other the user, after one system message holding the side's card."""
    render = conversation_samples(MessagesOptions(events=True))
    c = next(run.conversations())
    exp = run.experiences[c.experience_id]
    personas = [run.personas[p] for p in c.persona_ids]
    rows = render(c, exp, personas)
    assert [r.side for r in rows] == ["opener", "other"]
    for row, me in zip(rows, personas, strict=True):
        assert row.persona_id == me.id
        assert row.messages[0].role == "system"
        assert me.persona_text in row.messages[0].content
        roles = [m.role for m in row.messages[1:]]
        assert roles == ["assistant" if t.sender == me.id else "user" for t in c.turns]
        for turn, msg in zip(c.turns, row.messages[1:], strict=True):
            assert msg.content.count("\n") + 1 == len(turn.messages) + (
                1 if turn.instant_event and turn.sender == me.id else 0
            )


def test_system_template_from_a_file(run, tmp_path):
    """--system-template renders the user's Jinja2 file; a broken one is an InputError."""
    good = tmp_path / "sys.j2"
    good.write_text(
        "You are {{ persona.name }}; {{ other.name }} writes to you. {{ experience.topic }}"
    )
    c = next(run.conversations())
    exp = run.experiences[c.experience_id]
    personas = [run.personas[p] for p in c.persona_ids]
    rows = conversation_samples(MessagesOptions(system_template=str(good)))(c, exp, personas)
    assert rows[0].messages[0].content.startswith(f"You are {personas[0].meta.name}; ")
    bad = tmp_path / "bad.j2"
    bad.write_text("{% if %}")
    with pytest.raises(InputError, match=r"bad\.j2"):
        conversation_samples(MessagesOptions(system_template=str(bad)))
    missing = tmp_path / "missing.j2"
    missing.write_text("{{ nothing.here }}")
    with pytest.raises(InputError, match=r"missing\.j2"):
        conversation_samples(MessagesOptions(system_template=str(missing)))(c, exp, personas)


def _types(t: mi.Type) -> list[mi.Type]:
    out = [t]
    if isinstance(t, mi.StructType):
        for f in t.fields:
            out += _types(f.type)
    elif isinstance(t, mi.ListType):
        out += _types(t.item_type)
    elif isinstance(t, mi.UnionType):
        for x in t.types:
            out += _types(x)
    return out


@pytest.mark.parametrize("fmt", sorted(ROW_TYPES))
def test_row_schema_has_no_free_key_dicts(fmt):
    """No row type holds a dict or an untyped value anywhere, so every row of a file has
    the same keys; its card features and its Parquet schema describe the same columns."""
    from datasets import Features

    row = ROW_TYPES[fmt]
    for t in _types(mi.type_info(row)):
        assert not isinstance(t, mi.DictType | mi.AnyType), (fmt, t)
    features = Features._from_yaml_list(hf_features(row))
    assert features.arrow_schema.remove_metadata() == arrow_schema(row)


def test_spb_rows_for_every_persona(run):
    """Each persona gives one spb row with its card, its sample and the short fields."""
    for p in run.personas.values():
        row = spb_row(p)
        assert row.id == p.id and row.persona_text == p.persona_text
        assert row.meta.name == p.meta.name and row.occupation
        msgspec.json.encode(row)
