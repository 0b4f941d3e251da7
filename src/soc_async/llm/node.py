"""Facts of this node for the layout: its GPUs (nvidia-smi) and the model's shape
(config.json and the size of its weights, from a checkpoint directory or the Hugging
Face cache). I/O only; the decisions are :mod:`soc_async.llm.layout`'s.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from soc_async import logs
from soc_async.errors import InputError
from soc_async.llm.layout import GpuSet, ModelShape

__all__ = ["find_model_dir", "hf_hub_cache", "model_shape", "visible_gpus"]

log = logs.get("node")

# Configs of multimodal models keep the language model's numbers in a nested section.
_TEXT_SECTIONS = ("text_config", "llm_config", "language_config")
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float8_e4m3fn": 1}


def visible_gpus(
    ids: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    memory_gib: float | None = None,
) -> GpuSet:
    """The GPUs this process may use: ``ids`` ("0,1,2"), else CUDA_VISIBLE_DEVICES, else
    every GPU nvidia-smi lists; with the smallest one's memory (``memory_gib`` overrides
    what nvidia-smi says) and name. No nvidia-smi and no ids: no GPUs."""
    env = os.environ if env is None else env
    table = _nvidia_smi(env)
    given = ids if ids is not None else env.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        chosen = tuple(d.strip() for d in given.split(",") if d.strip())
    else:
        chosen = tuple(table)
    rows = [table[d] for d in chosen if d in table] or list(table.values())
    memory = int(memory_gib * 1024**3) if memory_gib else None
    if memory is None and rows:
        memory = min(mib for _, mib in rows) * 1024**2
    if memory is None and chosen:
        log.warning("GPU memory unknown (no nvidia-smi answer): the layout cannot check fits")
    name = rows[0][0] if rows else ""
    return GpuSet(ids=chosen, memory_bytes=memory, name=name)


def _nvidia_smi(env: Mapping[str, str]) -> dict[str, tuple[str, int]]:
    """index -> (name, memory MiB) of every GPU nvidia-smi lists; {} without it."""
    exe = shutil.which("nvidia-smi", path=env.get("PATH"))
    if exe is None:
        return {}
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
            env=dict(env),
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvidia-smi failed", error=str(exc))
        return {}
    table: dict[str, tuple[str, int]] = {}
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[2].isdigit():
            table[parts[0]] = (parts[1], int(parts[2]))
    return table


def hf_hub_cache(env: Mapping[str, str] | None = None) -> Path:
    """Where the Hugging Face cache keeps models: HF_HUB_CACHE, else HF_HOME/hub, else
    ~/.cache/huggingface/hub (as huggingface_hub resolves it)."""
    env = os.environ if env is None else env
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    home = env.get("HF_HOME") or os.path.join(
        env.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def find_model_dir(model: str, env: Mapping[str, str] | None = None) -> Path | None:
    """The directory holding ``model``'s config.json: the model itself when it is a
    checkpoint directory, else its snapshot in the Hugging Face cache; None if neither."""
    path = Path(model).expanduser()
    if (path / "config.json").is_file():
        return path
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", model):
        return None
    repo = hf_hub_cache(env) / ("models--" + model.replace("/", "--"))
    snapshots = repo / "snapshots"
    ref = repo / "refs" / "main"
    if ref.is_file():
        pinned = snapshots / ref.read_text().strip()
        if (pinned / "config.json").is_file():
            return pinned
    candidates = sorted(
        (d for d in snapshots.glob("*") if (d / "config.json").is_file()),
        key=lambda d: d.stat().st_mtime,
    )
    return candidates[-1] if candidates else None


def model_shape(model: str, env: Mapping[str, str] | None = None) -> ModelShape | None:
    """The heads and weight size of ``model`` from its files; None when they are not on
    this machine. Raises InputError for a config.json without attention heads."""
    directory = find_model_dir(model, env)
    if directory is None:
        return None
    config_path = directory / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{config_path}: not a readable model config ({exc})") from exc
    text = _text_config(config)
    heads = text.get("num_attention_heads") or text.get("n_head")
    if not isinstance(heads, int) or heads < 1:
        raise InputError(f"{config_path}: no num_attention_heads, so no layout can be planned")
    kv = text.get("num_key_value_heads") or text.get("num_kv_heads") or heads
    return ModelShape(
        name=model,
        attention_heads=heads,
        kv_heads=int(kv),
        weight_bytes=_weight_bytes(directory) or _estimate_bytes(text, config),
    )


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    if "num_attention_heads" in config:
        return config
    for key in _TEXT_SECTIONS:
        inner = config.get(key)
        if isinstance(inner, dict) and "num_attention_heads" in inner:
            return inner
    return config


def _weight_bytes(directory: Path) -> int | None:
    """The checkpoint's size: the safetensors index's total, else its weight files'."""
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            total = json.loads(index.read_text()).get("metadata", {}).get("total_size")
        except (OSError, ValueError):
            total = None
        if isinstance(total, int) and total > 0:
            return total
    for pattern in ("*.safetensors", "*.bin", "*.pt"):
        files = list(directory.glob(pattern))
        if files:
            return sum(f.stat().st_size for f in files)  # stat follows the cache's links
    return None


def _estimate_bytes(text: dict[str, Any], config: dict[str, Any]) -> int | None:
    """A dense transformer's parameters from its dimensions, when no weights are there."""
    try:
        hidden = int(text["hidden_size"])
        layers = int(text["num_hidden_layers"])
        vocab = int(text["vocab_size"])
        inter = int(text.get("intermediate_size") or 4 * hidden)
        heads = int(text["num_attention_heads"])
        kv = int(text.get("num_key_value_heads") or heads)
    except (KeyError, TypeError, ValueError):
        return None
    head_dim = int(text.get("head_dim") or hidden // heads)
    attention = hidden * head_dim * (2 * heads + 2 * kv)
    mlp = 3 * hidden * inter
    embeddings = vocab * hidden * (1 if text.get("tie_word_embeddings") else 2)
    params = layers * (attention + mlp) + embeddings
    dtype = str(text.get("torch_dtype") or config.get("torch_dtype") or "bfloat16")
    return params * _DTYPE_BYTES.get(dtype, 2)
