"""Instant events go to the person they name: attribution of event lines, and the filter
the chat's 5% draw picks from."""

from __future__ import annotations

import pytest

from soc_async.formats.events import attribute_event, attribute_events, events_for

LUKAS, AGNIESZKA = ("p-lukas", "Lukas Brandt"), ("p-aga", "Agnieszka Wójcik")
DUC, HARUKA = ("p-duc", "Phạm Minh Đức"), ("p-haruka", "Haruka Sato")
WILL, ROSE = ("p-will", "Will Turner"), ("p-rose", "Rose Park")
NGUYEN_A, NGUYEN_B = ("p-na", "Nguyễn Thị Lan"), ("p-nb", "Nguyễn Văn Hùng")

# (event, people, expected owner id or None)
CORPUS = [
    # first name, possessive forms
    ("A forklift alarm goes off near Lukas", (LUKAS, AGNIESZKA), "p-lukas"),
    ("Lukas's phone rings with a call from the depot", (LUKAS, AGNIESZKA), "p-lukas"),
    ("Lukas' shift lead calls him over", (LUKAS, AGNIESZKA), "p-lukas"),
    ("Lukas’s sister sends a photo", (LUKAS, AGNIESZKA), "p-lukas"),
    ("Agnieszka's manager asks her to recheck the overtime", (LUKAS, AGNIESZKA), "p-aga"),
    # full name, family name, accents dropped or kept
    ("A parcel for Agnieszka Wójcik needs a signature", (LUKAS, AGNIESZKA), "p-aga"),
    ("A parcel for Agnieszka Wojcik needs a signature", (LUKAS, AGNIESZKA), "p-aga"),
    ("Mr Brandt is called to the loading dock", (LUKAS, AGNIESZKA), "p-lukas"),
    # family-first names: the given name comes last
    ("Đức's grandmother calls about the weekend", (DUC, HARUKA), "p-duc"),
    ("Duc's grandmother calls about the weekend", (DUC, HARUKA), "p-duc"),
    ("A tour group arrives early at Minh Đức's hotel", (DUC, HARUKA), "p-duc"),
    ("Haruka's shift manager asks her to restock", (DUC, HARUKA), "p-haruka"),
    # no name: either
    ("The wifi drops for a minute", (LUKAS, AGNIESZKA), None),
    ("A thunderstorm knocks the power out on the street", (DUC, HARUKA), None),
    ("Her phone battery dies", (LUKAS, AGNIESZKA), None),
    # both names: either
    ("Lukas and Agnieszka both get the group reminder", (LUKAS, AGNIESZKA), None),
    ("Haruka's brother sends Đức a meme by mistake", (DUC, HARUKA), None),
    # words that only look like names
    ("Someone will knock on the door", (WILL, ROSE), None),
    ("The rose bush outside gets trimmed loudly", (WILL, ROSE), None),
    ("Will's cat knocks a glass over", (WILL, ROSE), "p-will"),
    ("A car park alarm starts wailing", (WILL, ROSE), None),
    ("Ms Park's neighbour rings the bell", (WILL, ROSE), "p-rose"),
    # a name inside a longer word is not the name
    ("Lukasz from accounting sends a spreadsheet", (LUKAS, AGNIESZKA), None),
    # a family name both share counts for neither; the given names still tell them apart
    ("A Nguyễn family group chat explodes with photos", (NGUYEN_A, NGUYEN_B), None),
    ("Lan's landlord comes to read the meter", (NGUYEN_A, NGUYEN_B), "p-na"),
    ("Hùng's bike gets a flat tyre outside", (NGUYEN_A, NGUYEN_B), "p-nb"),
]


@pytest.mark.parametrize(("event", "people", "owner"), CORPUS)
def test_event_is_attributed_to_the_person_it_names(event, people, owner) -> None:
    """First names, full and family names, possessives (', 's, ’s) and accent-free
    spellings name a person; none or both names, lower-case words and shared family
    names name nobody, so the event may go to either."""
    assert attribute_event(event, people) == owner


def test_attribution_keeps_the_order_of_the_events() -> None:
    """attribute_events answers one owner per event, in order."""
    events = [e for e, people, _ in CORPUS if people == (LUKAS, AGNIESZKA)]
    owners = [o for _, people, o in CORPUS if people == (LUKAS, AGNIESZKA)]
    assert attribute_events(events, [LUKAS, AGNIESZKA]) == owners


def test_speaker_gets_only_own_and_unattributed_events() -> None:
    """events_for leaves out what happens to the other person; a list of owners that does
    not match the events (an old record) leaves every event in."""
    events = ["a", "b", "c"]
    owners = ["p-lukas", None, "p-aga"]
    assert events_for("p-lukas", events, owners) == ["a", "b"]
    assert events_for("p-aga", events, owners) == ["b", "c"]
    assert events_for("p-lukas", events, []) == events
