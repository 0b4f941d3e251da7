"""EncodedPrefix: a text whose first part is kept encoded as JSON reaches the server as
the very string it stands for."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from soc_async.llm.client import _body, _encode
from soc_async.llm.types import ChatRequest, EncodedPrefix, text_of

# Any text msgspec can encode: everything but lone surrogates.
TEXT = st.text(st.characters(blacklist_categories=("Cs",)))


@given(head=TEXT, rest=TEXT)
def test_the_body_is_the_one_of_the_whole_text(head: str, rest: str) -> None:
    """Byte for byte the body the joined str would give, and it decodes back to it."""
    spliced = ChatRequest(
        messages=[{"role": "user", "content": EncodedPrefix(EncodedPrefix.encode_head(head), rest)}]
    )
    plain = ChatRequest(messages=[{"role": "user", "content": head + rest}])
    body = _encode(_body(spliced))
    assert body == _encode(_body(plain))
    assert msgspec.json.decode(body)["messages"][0]["content"] == head + rest


def test_text_of_reads_either_kind() -> None:
    prefix = EncodedPrefix(EncodedPrefix.encode_head('Mia 😀 said "hi"\n'), "then\tleft")
    assert text_of(prefix) == 'Mia 😀 said "hi"\nthen\tleft'
    assert text_of("plain") == "plain"
    assert prefix == 'Mia 😀 said "hi"\nthen\tleft'
    request = ChatRequest(messages=[{"role": "user", "content": prefix}])
    plain = msgspec.to_builtins(request, enc_hook=text_of)
    assert plain["messages"][0]["content"] == str(prefix)
