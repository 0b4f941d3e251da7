"""The documented rules that pull SOC-2508 / SPB-2508 fields out of cards and experiences."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from soc_async.bench.cast import seed_personas
from soc_async.export.extract import (
    BACKGROUND_MAX,
    CHATTING_STYLE_MAX,
    MAX_TRAITS,
    card_sections,
    clip,
    experience_fields,
    persona_fields,
    unwrap,
)
from soc_async.formats.character import SECTIONS
from soc_async.records import Experience, ExperienceMeta, Persona, TopicSlot
from soc_async.stages.experiences import seed_experiences


def _experience(text: str, topics: list[TopicSlot] | None = None) -> Experience:
    return Experience(
        id="e-0000000-x",
        persona_ids=["p-a", "p-b"],
        experience_text=text,
        style="structured",
        cadence="delayed",
        topics=topics or [],
        initial_state="Opening; 2; end",
        instant_events=[],
        opener="p-a",
        meta=ExperienceMeta(iteration=0, model="m", time_taken=0.0),
    )


def test_seed_cards_give_every_section_and_short_fields():
    """Every hand-written card splits into the twelve sections, and its extracted fields
    keep the SPB-2508 bounds: 1-5 traits, background <= 300 and style <= 120 characters."""
    for p in seed_personas():
        assert list(card_sections(p.persona_text)) == list(SECTIONS)
        f = persona_fields(p)
        assert f.name == p.meta.name and f.age == p.meta.age
        assert 1 <= len(f.traits) <= MAX_TRAITS
        assert 0 < len(f.background) <= BACKGROUND_MAX
        assert 0 < len(f.chatting_style) <= CHATTING_STYLE_MAX
        assert f.occupation


def test_traits_are_bullet_labels():
    """A bullet 'Label: explanation' gives its label; a bullet without one is kept whole."""
    f = persona_fields(seed_personas()[0])  # Juliana Ferreira
    assert f.traits[0] == "Organised"
    assert f.traits[1] == "Quick to help, slow to ask for help"


def test_recorded_occupation_wins_over_the_card():
    """A later run's meta.occupation is used when the record has it; the card's otherwise."""

    p = seed_personas()[0]
    newer = Persona(
        id=p.id,
        persona_text=p.persona_text,
        meta=msgspec.structs.replace(p.meta, occupation="nurse", band="low income"),
    )
    assert persona_fields(newer).occupation == "nurse"
    assert persona_fields(p).occupation.startswith("Pharmacy technician")


def test_username_from_a_handle_field():
    """A Username: or Handle: line of Basic Information becomes the username; none is null."""
    p = seed_personas()[0]
    text = p.persona_text.replace("**Age:**", "**Handle:** juli_bh\n**Age:**")
    assert persona_fields(Persona(id="p-x", persona_text=text, meta=p.meta)).username == "juli_bh"
    assert persona_fields(p).username is None


def test_seed_experience_relationship_situation_topic():
    """Paragraph one is the relationship, the next the situation, the topic the PRIMARY slot."""
    text = seed_experiences()[0]
    exp = _experience(
        text,
        [
            TopicSlot(title="The late arrival", turns=3, primary=True, description="who collects"),
            TopicSlot(title="Kuba's allergy", turns=2),
        ],
    )
    relationship, situation, topic = experience_fields(exp)
    assert relationship.startswith("Agnieszka Wójcik and Lukas Brandt have never met.")
    assert situation.startswith("It is Wednesday, mid-morning.")
    assert "Conversation style" not in situation
    assert topic == "The late arrival: who collects"


def test_single_paragraph_splits_at_its_first_sentence():
    """With one prose paragraph the first sentence is the relationship, the rest the
    situation; with no primary slot the first one is the topic."""
    exp = _experience(
        "<experience>\nA and B are cousins. They talk about rent. It is late.\n\n"
        "Conversation style: freeform\n</experience>",
        [TopicSlot(title="Rent", turns=2), TopicSlot(title="Music", turns=1)],
    )
    assert experience_fields(exp) == (
        "A and B are cousins.",
        "They talk about rent. It is late.",
        "Rent",
    )


def test_no_prose_and_no_topics():
    """An experience of labels only gives empty prose fields and the initial state's topic."""
    exp = _experience("<experience>\nConversation style: structured\n</experience>")
    assert experience_fields(exp) == ("", "", "Opening")


def test_unwrap_tolerates_a_missing_close():
    """The element's content is taken up to its close, or to the end when it is unclosed."""
    assert unwrap("x <character>\nabc\n</character> y", "character") == "abc"
    assert unwrap("<character>\nabc", "character") == "abc"
    assert unwrap("no element", "character") == "no element"


@given(st.text(alphabet=st.sampled_from("ab .!?\n"), max_size=400), st.integers(10, 300))
def test_clip_is_a_bounded_prefix(text, limit):
    """clip() never exceeds its limit and returns the start of the text (whitespace
    collapsed), ending in an ellipsis only when it had to cut inside a sentence."""
    flat = " ".join(text.split())
    out = clip(text, limit)
    assert len(out) <= limit
    if out.endswith("…") and len(flat) > limit:
        assert flat.startswith(out[:-1].rstrip(" ,;:"))
    else:
        assert flat.startswith(out)
