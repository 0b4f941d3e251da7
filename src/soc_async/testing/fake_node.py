"""A fake GPU node: ``nvidia-smi`` and ``vllm`` commands for tests, no GPU needed.

``python -m soc_async.testing.fake_node nvidia-smi ...`` answers the queries soc-async
makes (``-L``, ``--query-gpu=...``) for ``FAKE_GPUS`` GPUs (default 8) of
``FAKE_GPU_MIB`` MiB (default 81559, an H100) named ``FAKE_GPU_NAME``.

``python -m soc_async.testing.fake_node hf download REPO`` puts a config.json for REPO
into the Hugging Face cache (HF_HOME), shaped like the real model's (:data:`CONFIGS`;
others get a 28-head 7B shape), and no weights: the layout then estimates their size.

``python -m soc_async.testing.fake_node vllm serve MODEL [vLLM flags]`` (or the old
module style, ``--model MODEL``) serves the fake OpenAI server
(:mod:`soc_async.testing.fake_server`) in place of vLLM, after enforcing what vLLM
enforces, with vLLM's wording where it matters:

- flags vLLM 0.32 does not know are refused (argparse, exit 2);
- the API port is bound first; one already in use fails (``Address already in use``);
- the model must be on this machine (a checkpoint directory or the Hugging Face cache of
  HF_HOME): a fake cannot download;
- the tensor-parallel size must divide the attention heads of its config.json, and
  divide or be a multiple of its KV heads; tp x dp must not exceed the visible GPUs
  (CUDA_VISIBLE_DEVICES, else FAKE_GPUS);
- while loading, the engine holds its compile cache (``VLLM_CACHE_ROOT``); a second
  engine loading from the same cache at the same time fails, as a race on a shared cache
  would;
- readiness only after ``FAKE_VLLM_LOAD_S`` seconds of loading (the port accepts
  connections but nothing answers, as vLLM's socket before its engine is up);
- a ``priority`` field is refused unless ``--scheduling-policy priority``.

``python -m soc_async.testing.fake_node apptainer exec [--nv] [--bind SRC[:DST],...]
IMAGE CMD...`` stands in for Apptainer's ``exec`` and keeps its rules: the image must
exist; a bind whose source does not exist is refused with Apptainer's "mount source ...
doesn't exist" and exit 255 before anything runs; ``APPTAINERENV_X`` becomes ``X``
inside (``--cleanenv`` drops the rest); without ``--nv`` the driver is not inside, so
``nvidia-smi`` and vLLM find no GPU. CMD then runs on this machine.

Test knobs (environment): ``FAKE_VLLM_REPLY`` (module:function writing replies, default
the scripted model), ``FAKE_VLLM_ARGS`` (more fake-server flags, e.g. ``--ttft-s 0.05``),
``FAKE_VLLM_RECORD`` (a file each start appends its devices, pid and arguments to),
``FAKE_VLLM_DIE_AFTER=N`` (exit abruptly on the N-th chat request, as a crashed engine;
only the engine whose CUDA_VISIBLE_DEVICES is ``FAKE_VLLM_DIE_DEVICES`` when that is set,
and only once per ``FAKE_VLLM_DIE_ONCE`` directory when that is set).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import fcntl
import importlib
import inspect
import os
import shlex
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from soc_async.testing.fake_server import FakeServer, ReplyError, _parse_args

__all__ = ["CONFIGS", "apptainer", "hf", "main", "nvidia_smi", "vllm", "write_model"]

VERSION = "0.32.0"
DEFAULT_GPUS = 8
DEFAULT_MIB = 81559
DEFAULT_NAME = "NVIDIA H100 80GB HBM3"


# The dimensions of a few real models' config.json (what the layout reads).
CONFIGS: dict[str, dict[str, Any]] = {
    "Qwen/Qwen2.5-7B-Instruct": {
        "num_attention_heads": 28, "num_key_value_heads": 4, "hidden_size": 3584,
        "num_hidden_layers": 28, "intermediate_size": 18944, "vocab_size": 152064,
    },
    "Qwen/Qwen3-8B": {
        "num_attention_heads": 32, "num_key_value_heads": 8, "hidden_size": 4096,
        "num_hidden_layers": 36, "intermediate_size": 12288, "vocab_size": 151936,
        "head_dim": 128,
    },
    "meta-llama/Llama-3.3-70B-Instruct": {
        "num_attention_heads": 64, "num_key_value_heads": 8, "hidden_size": 8192,
        "num_hidden_layers": 80, "intermediate_size": 28672, "vocab_size": 128256,
    },
}  # fmt: skip


def write_model(hub: Path, repo: str, config: dict[str, Any] | None = None) -> Path:
    """``repo``'s snapshot in the Hugging Face cache at ``hub`` (HF_HOME/hub) holding only
    a config.json; returns the snapshot directory."""
    shape = config or CONFIGS.get(repo, CONFIGS["Qwen/Qwen2.5-7B-Instruct"])
    root = hub / ("models--" + repo.replace("/", "--"))
    snapshot = root / "snapshots" / "0123456789abcdef"
    snapshot.mkdir(parents=True, exist_ok=True)
    body = {"architectures": ["FakeForCausalLM"], "torch_dtype": "bfloat16", **shape}
    (snapshot / "config.json").write_bytes(msgspec.json.encode(body))
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(snapshot.name)
    return snapshot


def hf(argv: list[str]) -> int:
    """The fake ``hf``: ``download REPO`` fills the cache with REPO's config.json."""
    if len(argv) < 2 or argv[0] != "download":
        return _fail("usage: hf download REPO", 2)
    from soc_async.llm.node import hf_hub_cache

    path = write_model(hf_hub_cache(), argv[1])
    print(path)
    return 0


# -- apptainer --------------------------------------------------------------------------

# Options of `apptainer exec` that take a value; others given to the stand-in are refused,
# as Apptainer's own parser refuses an unknown flag.
_APPTAINER_VALUED = {"--bind", "-B", "--env", "--pwd", "--home", "-H"}
_APPTAINER_FLAGS = {"--nv", "--cleanenv", "-e", "--containall", "-c", "--writable-tmpfs"}


def apptainer(argv: list[str]) -> int:
    """The stand-in ``apptainer exec``: checks the image and the bind sources, then runs
    the command with the environment Apptainer would give it."""
    if argv[:1] != ["exec"]:
        return _fail("usage: apptainer exec [options] IMAGE COMMAND...", 255)
    options: list[tuple[str, str]] = []
    rest = argv[1:]
    while rest and rest[0].startswith("-"):
        flag, _, value = rest[0].partition("=")
        if flag in _APPTAINER_VALUED:
            if not value:
                if len(rest) < 2:
                    return _fail(f'Error: flag needs an argument: "{flag}"', 255)
                value, rest = rest[1], rest[1:]
            options.append((flag, value))
        elif flag in _APPTAINER_FLAGS and not value:
            options.append((flag, ""))
        else:
            return _fail(f"Error: unknown flag: {flag}", 255)
        rest = rest[1:]
    if len(rest) < 2:
        return _fail("Error: requires at least 2 arg(s), only received " + str(len(rest)), 255)
    image, command = rest[0], rest[1:]
    if not os.path.exists(image):
        return _fail(
            f"FATAL:   could not open image {os.path.abspath(image)}: failed to retrieve "
            f"path for {image}: lstat {image}: no such file or directory",
            255,
        )
    flags = {flag for flag, _ in options}
    env = dict(os.environ)
    if flags & {"--cleanenv", "-e", "--containall", "-c"}:
        env = {k: v for k, v in env.items() if k in ("PATH", "HOME", "TERM", "LANG")}
        # What the node's own python needs to find soc_async outside a real image.
        env.update({k: os.environ[k] for k in ("PYTHONPATH",) if k in os.environ})
    for bind in (v for flag, v in options if flag in ("--bind", "-B")):
        for spec in bind.split(","):
            source = spec.split(":")[0]
            dest = spec.split(":")[1] if ":" in spec else source
            if not os.path.exists(source):
                return _fail(
                    "FATAL:   container creation failed: mount hook function failure: "
                    f"mount {source}->{dest} error: while mounting {source}: mount source "
                    f"{source} doesn't exist",
                    255,
                )
    for key, value in os.environ.items():
        for prefix in ("APPTAINERENV_", "SINGULARITYENV_"):
            if key.startswith(prefix) and len(key) > len(prefix):
                env[key.removeprefix(prefix)] = value
    for value in (v for flag, v in options if flag == "--env"):
        key, _, val = value.partition("=")
        env[key] = val
    if "--nv" not in flags:
        env["FAKE_GPUS"] = "0"  # no driver inside: nvidia-smi and CUDA see no device
    sys.stdout.flush()
    try:
        os.execvpe(command[0], command, env)
    except OSError as exc:
        return _fail(f"FATAL:   {command[0]}: {exc.strerror}", 255)


# -- nvidia-smi --------------------------------------------------------------------------


def nvidia_smi(argv: list[str]) -> int:
    """The fake ``nvidia-smi``: ``-L`` and ``--query-gpu=F,... --format=csv,...``."""
    count = int(os.environ.get("FAKE_GPUS", DEFAULT_GPUS))
    mib = int(os.environ.get("FAKE_GPU_MIB", DEFAULT_MIB))
    name = os.environ.get("FAKE_GPU_NAME", DEFAULT_NAME)
    if count <= 0:
        print("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.")
        return 9
    fields = {"index": None, "name": name, "memory.total": mib, "uuid": None}
    query = next((a.split("=", 1)[1] for a in argv if a.startswith("--query-gpu=")), None)
    if query is not None:
        units = "nounits" in " ".join(argv)
        for i in range(count):
            row = []
            for field in query.split(","):
                field = field.strip()
                if field not in fields:
                    print(f'Field "{field}" is not a valid field to query.', file=sys.stderr)
                    return 2
                if field == "index":
                    row.append(str(i))
                elif field == "uuid":
                    row.append(f"GPU-fake-{i}")
                elif field == "memory.total":
                    row.append(f"{mib}" if units else f"{mib} MiB")
                else:
                    row.append(str(fields[field]))
            print(", ".join(row))
        return 0
    for i in range(count):
        print(f"GPU {i}: {name} (UUID: GPU-fake-{i})")
    return 0


# -- vllm --------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vllm serve", allow_abbrev=False)
    p.add_argument("model_tag", nargs="?", default=None)
    p.add_argument("--model", default=None)
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    p.add_argument("--data-parallel-size", "-dp", type=int, default=1)
    p.add_argument("--max-num-seqs", type=int, default=None)
    p.add_argument("--max-num-batched-tokens", type=int, default=None)
    p.add_argument("--max-model-len", default=None)
    p.add_argument("--served-model-name", nargs="+", default=None)
    p.add_argument("--generation-config", default="auto")
    p.add_argument("--scheduling-policy", choices=["fcfs", "priority"], default="fcfs")
    p.add_argument("--enable-prompt-tokens-details", action="store_true")
    p.add_argument("--disable-uvicorn-access-log", action="store_true")
    p.add_argument("--enable-log-requests", action=argparse.BooleanOptionalAction)
    p.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.92)
    p.add_argument("--enforce-eager", action="store_true")
    p.add_argument("--api-key", default=None)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--kv-cache-dtype", default="auto")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--download-dir", default=None)
    return p


def _say(text: str) -> None:
    stamp = time.strftime("%m-%d %H:%M:%S")
    print(f"INFO {stamp} [fake vllm] {text}", flush=True)


def _fail(text: str, code: int = 1) -> int:
    print(text, file=sys.stderr, flush=True)
    return code


def _visible_gpus() -> int:
    # FAKE_GPUS=0 is a node (or a container without --nv) with no driver: CUDA sees no
    # device whatever CUDA_VISIBLE_DEVICES names.
    if os.environ.get("FAKE_GPUS") == "0":
        return 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip()])
    return int(os.environ.get("FAKE_GPUS", DEFAULT_GPUS))


def _check_heads(model: str, tp: int) -> str:
    """ "" when vLLM would accept ``tp`` for the model on disk, else its error."""
    from soc_async.llm.node import find_model_dir

    directory = find_model_dir(model)
    if directory is None:
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            return (
                f"OSError: We couldn't connect to 'https://huggingface.co' to load the files, "
                f"and couldn't find them in the cached files (offline mode) for {model}."
            )
        return f"OSError: {model} is not on this machine (the fake vllm cannot download)"
    config = msgspec.json.decode((directory / "config.json").read_bytes())
    text = config.get("text_config", config) if "num_attention_heads" not in config else config
    heads = int(text["num_attention_heads"])
    kv = int(text.get("num_key_value_heads") or heads)
    if heads % tp:
        return (
            f"ValueError: Total number of attention heads ({heads}) must be divisible by "
            f"tensor parallel size ({tp})."
        )
    if kv % tp and tp % kv:
        return (
            f"ValueError: Total number of KV heads ({kv}) must be divisible by tensor "
            f"parallel size ({tp}), or the size by the heads."
        )
    return ""


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    return sock


@contextlib.contextmanager
def _compile_cache_held() -> Any:
    root = Path(os.environ.get("VLLM_CACHE_ROOT") or Path.home() / ".cache" / "vllm")
    lock_dir = root / "torch_compile_cache"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with (lock_dir / ".fake-vllm-lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise RuntimeError(
                f"RuntimeError: the compile cache {lock_dir} is being written by another "
                "engine (engines starting together need their own VLLM_CACHE_ROOT)"
            ) from exc
        yield


def _reply_function(policy: str) -> Any:
    spec = os.environ.get("FAKE_VLLM_REPLY", "soc_async.testing.scripted:reply")
    module, _, name = spec.partition(":")
    inner = getattr(importlib.import_module(module), name)
    if spec == "soc_async.testing.scripted:reply":
        # Each engine process samples its own words, as real engines do: the module's
        # one writer would give every engine the same sequence, and a run spread over
        # eight engines would get the same card eight times (refused as duplicates).
        from soc_async.testing.scripted import ScriptedWriter

        inner = ScriptedWriter(seed=os.getpid())
    die_after = int(os.environ.get("FAKE_VLLM_DIE_AFTER", "0") or 0)
    devices = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if os.environ.get("FAKE_VLLM_DIE_DEVICES") not in (None, "", devices):
        die_after = 0
    once = os.environ.get("FAKE_VLLM_DIE_ONCE")
    marker = Path(once) / f"died-{devices or 'cpu'}" if once else None
    if marker is not None and marker.exists():
        die_after = 0
    served = 0

    async def reply(body: dict[str, Any]) -> str:
        nonlocal served
        if body.get("priority") and policy != "priority":
            raise ReplyError(
                400, "Priority scheduling is not enabled: start vLLM with --scheduling-policy"
            )
        served += 1
        if die_after and served >= die_after:
            if marker is not None:
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.write_text(str(os.getpid()))
            print(
                f"ERROR [fake vllm] EngineCore died unexpectedly after {served} requests",
                flush=True,
            )
            os._exit(17)
        text = inner(body)
        return await text if inspect.isawaitable(text) else text

    return reply


def vllm(argv: list[str]) -> int:
    """The fake ``vllm``: ``serve MODEL [flags]`` or module style ``--model MODEL``."""
    args_in = argv[1:] if argv[:1] == ["serve"] else list(argv)
    args = _parser().parse_args(args_in)
    model = args.model_tag or args.model
    if not model:
        return _fail("vllm serve: no model given", 2)
    host = args.host or "0.0.0.0"
    _say(f"vLLM API server version {VERSION} (fake)")
    _say(f"non-default args: {shlex.join(args_in)}")
    record = os.environ.get("FAKE_VLLM_RECORD")
    if record:
        with open(record, "a") as f:
            devices = os.environ.get("CUDA_VISIBLE_DEVICES", "")
            f.write(f"CUDA_VISIBLE_DEVICES={devices} pid={os.getpid()} {shlex.join(argv)}\n")
    try:
        sock = _bind(host, args.port)
    except OSError as exc:
        return _fail(f"OSError: [Errno {exc.errno}] {exc.strerror}: port {args.port}")
    world = args.tensor_parallel_size * args.data_parallel_size
    visible = _visible_gpus()
    if visible == 0:
        return _fail("RuntimeError: Found no NVIDIA driver on your system.")
    if world > visible:
        return _fail(
            f"ValueError: the world size {world} (tensor {args.tensor_parallel_size} x data "
            f"{args.data_parallel_size}) is more than the {visible} GPUs available"
        )
    problem = _check_heads(model, args.tensor_parallel_size)
    if problem:
        return _fail(problem)
    try:
        with _compile_cache_held():
            load_s = float(os.environ.get("FAKE_VLLM_LOAD_S", "0") or 0)
            _say(f"loading {model} ({load_s:g} s)")
            time.sleep(load_s)
    except RuntimeError as exc:
        return _fail(str(exc))
    config, _, _ = _parse_args(shlex.split(os.environ.get("FAKE_VLLM_ARGS", "")))
    served_name = args.served_model_name[0] if args.served_model_name else model
    batch = args.max_num_seqs or 256
    config = msgspec.structs.replace(
        config,
        host=host,
        port=args.port,
        model=served_name,
        max_num_seqs=batch * args.data_parallel_size,
        api_key=args.api_key or os.environ.get("VLLM_API_KEY") or None,
    )
    reply = _reply_function(args.scheduling_policy)
    return asyncio.run(_serve(config, reply, sock))


async def _serve(config: Any, reply: Any, sock: socket.socket) -> int:
    server = FakeServer(config, reply=reply)
    await server.start(sock)
    _say(f"Starting vLLM API server on http://{config.host}:{config.port}")
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    try:
        await done.wait()
    finally:
        await server.stop()
    print(f"stopped after {server.stats.received} requests", file=sys.stderr, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``fake_node nvidia-smi ...`` or ``fake_node vllm ...``."""
    argv = sys.argv[1:] if argv is None else argv
    commands = {"nvidia-smi": nvidia_smi, "vllm": vllm, "hf": hf, "apptainer": apptainer}
    if not argv or argv[0] not in commands:
        print(
            "usage: python -m soc_async.testing.fake_node {nvidia-smi,vllm,hf,apptainer} ...",
            file=sys.stderr,
        )
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
