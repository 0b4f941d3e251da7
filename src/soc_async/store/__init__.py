"""The run directory on disk: crash-safe JSONL files, the journal, resume, the lock.

files.py     file names, torn-line repair, line reading, atomic and durable writes
lines.py     LineWriter / RecordWriter: one writer task per file, fsync on an interval
journal.py   Journal: steps of items still in progress
runinfo.py   run.json: RunIdentity and its one reader and writer
inputs.py    read_records: the one reader of record files given as input
rundir.py    RunDir, the public face: create/open (locked), read, write, resume
rundata.py   RunData: the one reader of a run directory for the commands that read one
             (report, view, export, merge, the judge); imported as store.rundata
"""

from soc_async.store.files import (
    CONFIG,
    CONVERSATIONS,
    DATA_FILES,
    EXPERIENCES,
    FAILURES,
    JOURNAL,
    METRICS,
    PERSONAS,
    RUN,
    STAGE_FILES,
)
from soc_async.store.inputs import RecordHeader, TornLine, check_stage_inputs, read_records
from soc_async.store.journal import Journal
from soc_async.store.lines import RecordWriter
from soc_async.store.rundir import LOCK, RunDir, Writers
from soc_async.store.runinfo import RunIdentity, read_identity, run_identity, run_key

__all__ = [
    "CONFIG",
    "CONVERSATIONS",
    "DATA_FILES",
    "EXPERIENCES",
    "FAILURES",
    "JOURNAL",
    "LOCK",
    "METRICS",
    "PERSONAS",
    "RUN",
    "STAGE_FILES",
    "Journal",
    "RecordHeader",
    "RecordWriter",
    "RunDir",
    "RunIdentity",
    "TornLine",
    "Writers",
    "check_stage_inputs",
    "read_identity",
    "read_records",
    "run_identity",
    "run_key",
]
