"""Every command line the planner produces, parsed by the installed vLLM's own parsers:
the one `vllm serve` builds (vllm/entrypoints/cli/serve.py, ServeSubcommand) for GPU
engines, the API server module's (make_arg_parser on FlexibleArgumentParser, as
``python -m vllm.entrypoints.openai.api_server`` builds it) for the CPU layout, each
followed by vLLM's own validate_parsed_serve_args. An unknown flag fails the parse (the
plan step once passed --dry-run to vLLM this way); the fake `vllm` is not involved.

vLLM (0.32, the CPU build in CI: the same Python argument code as the GPU build) is
imported in one child process: its imports are heavy and change global state."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from conftest import FakeNode

from soc_async.config import ServerConfig
from soc_async.llm import server
from soc_async.llm.layout import GpuSet
from soc_async.llm.plan import EngineSpec, plan_engines
from soc_async.llm.server import ManagedServer

pytestmark = pytest.mark.slow

_PARSE = textwrap.dedent(
    """\
    import contextlib, io, json, sys, warnings
    warnings.simplefilter("ignore")
    from vllm.entrypoints.cli.serve import ServeSubcommand
    try:  # 0.32; 0.33 moved them
        from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    except ImportError:
        from vllm.entrypoints.common.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    vllm = FlexibleArgumentParser(prog="vllm")
    serve = ServeSubcommand()
    serve.subparser_init(vllm.add_subparsers(dest="subparser"))
    module = make_arg_parser(FlexibleArgumentParser())
    keys = ("model_tag", "model", "host", "port", "disable_uvicorn_access_log",
            "enable_log_requests", "generation_config", "enable_prompt_tokens_details",
            "scheduling_policy", "max_num_seqs", "enforce_eager", "max_model_len",
            "tensor_parallel_size", "data_parallel_size", "served_model_name",
            "gpu_memory_utilization", "enable_chunked_prefill")
    out = []
    for style, argv in json.load(sys.stdin):
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                if style == "serve":
                    a = vllm.parse_args(argv)
                    serve.validate(a)
                else:
                    a = module.parse_args(argv)
                    validate_parsed_serve_args(a)
        except SystemExit:
            out.append({"error": err.getvalue().strip().splitlines()[-1]})
            continue
        out.append({k: getattr(a, k, None) for k in keys})
    json.dump(out, sys.stdout)
    """
)

USER_ARGS = ["--max-model-len", "8192", "--gpu-memory-utilization", "0.85"]


def _argv(engine: EngineSpec) -> tuple[str, list[str]]:
    """("serve", the words after `vllm`) or ("module", the words after the module)."""
    command = ManagedServer(engine.spec).command()
    if command[1] == "serve":
        return "serve", command[1:]
    assert command[1:3] == ["-m", server.VLLM_MODULE]
    return "module", command[3:]


def _parse(argvs: list[tuple[str, list[str]]]) -> list[dict[str, Any]]:
    result = subprocess.run(
        [sys.executable, "-c", _PARSE],
        input=json.dumps(argvs),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    parsed: list[dict[str, Any]] = json.loads(result.stdout)
    return parsed


def test_vllms_own_parsers_take_every_command_line_the_planner_produces(
    fake_node: FakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An 8B model one engine per GPU, a 70B model at TP 4, vLLM data parallelism, the
    embedded CPU default, another model on the CPU, and user VLLM_ARGS: every flag is
    known to vLLM and means what the planner meant; --dry-run is refused."""
    if not server.vllm_available():
        pytest.skip("vLLM is not installed: pip install 'soc-async[cpu]'")
    embedded = plan_engines(ServerConfig()).engines[0]  # before HOME moves to the fake node
    fake_node.apply(monkeypatch)
    fake_node.model("Qwen/Qwen2.5-7B-Instruct")
    fake_node.model("meta-llama/Llama-3.3-70B-Instruct")
    vllm_serve = ["vllm", "serve"]
    small = ServerConfig(model="Qwen/Qwen2.5-7B-Instruct", command=vllm_serve)
    large = ServerConfig(model="meta-llama/Llama-3.3-70B-Instruct", command=vllm_serve)
    user = ServerConfig(model="Qwen/Qwen2.5-7B-Instruct", command=vllm_serve, extra_args=USER_ARGS)
    on_cpu = ServerConfig(model="Qwen/Qwen2.5-7B-Instruct", extra_args=USER_ARGS)
    engines = {
        "8b": plan_engines(small).engines[0],
        "70b": plan_engines(large).engines[1],
        "dp": plan_engines(small, dp_mode="vllm").engines[0],
        "user": plan_engines(user).engines[0],
        "embedded": embedded,
        "cpu": plan_engines(on_cpu, gpus=GpuSet(ids=())).engines[0],
    }
    argvs = [_argv(e) for e in engines.values()]
    assert [style for style, _ in argvs] == ["serve"] * 4 + ["module"] * 2
    dry_run = ("serve", [*argvs[0][1], "--dry-run"])
    parsed = dict(zip([*engines, "dry-run"], _parse([*argvs, dry_run]), strict=True))

    for name in ("8b", "70b", "dp", "user"):
        p = parsed[name]
        assert "error" not in p, (name, p)
        spec = engines[name].spec
        assert p["model_tag"] == spec.model and p["port"] == spec.port
        assert p["disable_uvicorn_access_log"] and p["enable_log_requests"] is False
        assert p["generation_config"] == "vllm" and p["enable_prompt_tokens_details"]
        assert p["scheduling_policy"] == "priority" and p["max_num_seqs"] == 1024
    assert parsed["8b"]["tensor_parallel_size"] == 1
    assert parsed["70b"]["tensor_parallel_size"] == 4
    assert parsed["dp"]["data_parallel_size"] == 8
    assert parsed["user"]["max_model_len"] == 8192
    assert parsed["user"]["gpu_memory_utilization"] == 0.85

    for name in ("embedded", "cpu"):
        p = parsed[name]
        assert "error" not in p, (name, p)
        assert p["model"] == engines[name].spec.model
        assert p["scheduling_policy"] == "priority" and p["generation_config"] == "vllm"
    assert parsed["embedded"]["enforce_eager"] and parsed["embedded"]["max_model_len"] == 8192
    assert parsed["embedded"]["served_model_name"] == ["smollm2-135m-instruct"]
    assert parsed["cpu"]["max_model_len"] == 8192

    assert parsed["dry-run"] == {"error": "vllm: error: unrecognized arguments: --dry-run"}
