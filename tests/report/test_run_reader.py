"""The one run-directory reader (store/rundata.RunData) on a handmade run: typed records,
the identity and config through their one readers, torn last lines left out and named,
a merged directory's config found through merge.json, and what is not a run refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from handmade_run import CONFIG, SEED, C, E, P, write_run

from soc_async.errors import ConfigError, RunDirError
from soc_async.records import Conversation, Experience, Failure, Persona, experience_start
from soc_async.store import CONVERSATIONS, EXPERIENCES, PERSONAS
from soc_async.store.rundata import MERGE_SUMMARY, RunData


def test_records_identity_and_config_are_typed(tmp_path: Path) -> None:
    """Every file comes back as its record type; run.json as a RunIdentity, config.toml
    as a RunConfig with the run's own settings; joins by id work."""
    data = RunData(write_run(tmp_path / "run"))
    assert list(data.personas) == P and all(isinstance(p, Persona) for p in data.personas.values())
    assert list(data.experiences) == E and isinstance(data.experiences[E[0]], Experience)
    chats = list(data.conversations())
    assert [c.chat_id for c in chats] == C and all(isinstance(c, Conversation) for c in chats)
    assert all(isinstance(f, Failure) for f in data.failures) and len(data.chat_failures()) == 1
    assert data.identity is not None and data.identity.seed == SEED == data.seed
    assert data.config.targets.chats == CONFIG["targets"]["chats"]
    assert data.config.chat.max_turns == CONFIG["chat"]["max_turns"]
    assert data.config_source.endswith("config.toml") and data.config_hash
    assert "api_key" not in data.config_data() and data.config_data()["seed"] == SEED
    assert set(data.conversations_by_id({C[1]})) == {C[1]}
    assert data.torn == []


def test_torn_last_lines_are_left_out_and_named(tmp_path: Path) -> None:
    """A run still appending: the torn last line of each file is left out, named
    file:line, and nothing on disk is changed."""
    run = write_run(tmp_path / "run")
    for name in (PERSONAS, CONVERSATIONS):
        with (run / name).open("ab") as f:
            f.write(b'{"kind": "persona", "id": "p-00')
    before = (run / PERSONAS).read_bytes()
    data = RunData(run)
    assert list(data.personas) == P
    assert [c.chat_id for c in data.conversations()] == C
    assert data.torn == [f"{PERSONAS}:{len(P) + 1}", f"{CONVERSATIONS}:{len(C) + 1}"]
    assert (run / PERSONAS).read_bytes() == before


def test_the_start_column_reads_the_fields_records_have(tmp_path: Path) -> None:
    """An experience's start is its start_date and start_time: the ISO date-time with a
    time, the date alone without one, None when the record set neither."""
    data = RunData(write_run(tmp_path / "run"))
    for e in (data.experiences[i] for i in E):
        start = experience_start(e)
        if e.start_date is None:
            assert start is None
        elif e.start_time:
            assert start == f"{e.start_date}T{e.start_time}"
        else:
            assert start == e.start_date


def test_a_merged_directory_reads_its_first_shards_config(tmp_path: Path) -> None:
    """No config.toml of its own: the one merge.json names is read, else the defaults,
    and config_source says which."""
    shard = write_run(tmp_path / "shard")
    merged = tmp_path / "merged"
    shutil.copytree(shard, merged)
    (merged / "config.toml").unlink()
    (merged / MERGE_SUMMARY).write_text(json.dumps({"inputs": {"0/1": str(shard)}}))
    data = RunData(merged)
    assert data.merged and data.config_source == str(shard / "config.toml")
    assert data.config.targets.chats == CONFIG["targets"]["chats"]
    (merged / MERGE_SUMMARY).write_text(json.dumps({"inputs": {"0/1": str(tmp_path / "gone")}}))
    fallback = RunData(merged)
    assert fallback.config_source == "defaults" and fallback.config_hash is None
    assert fallback.config_data() == {} and fallback.seed == SEED  # from run.json


def test_what_is_not_a_run_is_refused_in_one_line(tmp_path: Path) -> None:
    """Not a directory, an empty directory, an unreadable run.json: RunDirError; a bad
    config.toml: ConfigError naming the key."""
    with pytest.raises(RunDirError, match="not a directory"):
        RunData(tmp_path / "absent")
    with pytest.raises(RunDirError, match="not a soc-async run directory"):
        RunData(tmp_path)
    run = write_run(tmp_path / "run")
    (run / "run.json").write_text("{")
    with pytest.raises(RunDirError, match=r"run\.json"):
        RunData(run)
    run = write_run(tmp_path / "again")
    (run / "config.toml").write_text("[targets]\nchats = -1\n")
    with pytest.raises(ConfigError, match=r"targets\.chats"):
        RunData(run)


def test_a_directory_of_data_files_alone_is_read_without_a_seed(tmp_path: Path) -> None:
    """Records copied without run.json or config.toml are still read; there is no seed
    to join failed chats to experiences by."""
    run = write_run(tmp_path / "run")
    (run / "run.json").unlink()
    (run / "config.toml").unlink()
    data = RunData(run)
    assert data.identity is None and data.seed is None
    assert data.experience_of_chat(C[0]) is None and len(data.personas) == len(P)
    assert (run / EXPERIENCES).is_file() and len(data.experiences) == len(E)
