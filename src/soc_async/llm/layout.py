"""How a model is laid out over a node's GPUs: tensor-parallel size and engines (pure).

vLLM refuses a tensor-parallel size that does not divide the model's attention heads,
and one that neither divides its KV heads nor is a multiple of them (the KV heads are
then split or replicated evenly). Within those rules :func:`plan_layout` chooses:

- a model that fits one GPU: one engine per GPU (tensor parallelism would spend time in
  all-reduces on every layer; independent engines, with each conversation kept on one of
  them, use the prefix cache best);
- otherwise the smallest valid tensor-parallel size at which it fits, and as many
  engines of that size as the GPUs allow (data parallelism over the rest).

A model *fits* at size ``tp`` when its weights, split ``tp`` ways, take at most
:data:`WEIGHT_SHARE` of the memory vLLM may use on a GPU (``gpu_memory_utilization``
of it), so at least a quarter is left for the KV cache and activations; without a
weight size the fit is not checked. A size the user gives is checked against the
same rules and refused before anything starts with a one-line reason
(:class:`LayoutError`); only weights larger than a whole GPU share count as "cannot
fit" then, since the user may know better (quantized KV cache, a short context).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import msgspec

from soc_async.errors import InputError

__all__ = [
    "GIB",
    "WEIGHT_SHARE",
    "GpuSet",
    "Layout",
    "LayoutError",
    "ModelShape",
    "default_max_num_seqs",
    "plan_layout",
    "valid_tp_sizes",
]

GIB = 1024**3
GPU_MEMORY_UTILIZATION = 0.9  # vLLM's default share of a GPU's memory for itself
WEIGHT_SHARE = 0.75  # of that share, the most the weights may take for a default layout

DpMode = Literal["engines", "vllm"]


class LayoutError(InputError):
    """A parallel layout that cannot start; the message is one line saying why."""


class ModelShape(msgspec.Struct, kw_only=True, frozen=True):
    """What the layout needs to know of a model, read from its config.json."""

    name: str  # as the user named it, for messages
    attention_heads: int
    kv_heads: int
    weight_bytes: int | None = None  # None: unknown, the fit is not checked


class GpuSet(msgspec.Struct, kw_only=True, frozen=True):
    """The GPUs a job may use: device ids (as CUDA_VISIBLE_DEVICES names them), the
    smallest one's memory and its name."""

    ids: tuple[str, ...]
    memory_bytes: int | None = None  # None: unknown
    name: str = ""


class Layout(msgspec.Struct, kw_only=True, frozen=True):
    """The engines to start: each on ``tp`` GPUs of ``groups``."""

    tp: int  # tensor-parallel size of each engine
    groups: tuple[tuple[str, ...], ...]  # the devices of each engine, one tuple per engine
    idle: tuple[str, ...] = ()  # GPUs left unused (fewer than tp of them)
    dp_mode: DpMode = "engines"  # "vllm": one server, --data-parallel-size len(groups)
    reason: str = ""  # why this layout, for the log

    @property
    def engines(self) -> int:
        return len(self.groups)


def default_max_num_seqs(gpus: GpuSet) -> int:
    """vLLM's own default batch size for an API server on these GPUs (vLLM 0.32:
    1,024 from 70 GiB up, A100s excepted, else 256)."""
    memory = gpus.memory_bytes or 0
    if memory >= 70 * GIB and "a100" not in gpus.name.lower():
        return 1024
    return 256


def _divides_heads(shape: ModelShape, tp: int) -> bool:
    kv_ok = shape.kv_heads % tp == 0 or tp % shape.kv_heads == 0
    return shape.attention_heads % tp == 0 and kv_ok


def valid_tp_sizes(shape: ModelShape, gpus: int) -> list[int]:
    """Tensor-parallel sizes up to ``gpus`` that vLLM accepts for ``shape``."""
    return [tp for tp in range(1, gpus + 1) if _divides_heads(shape, tp)]


def _usable(gpus: GpuSet) -> float | None:
    if gpus.memory_bytes is None:
        return None
    return gpus.memory_bytes * GPU_MEMORY_UTILIZATION


def _fits(shape: ModelShape, gpus: GpuSet, tp: int, share: float = WEIGHT_SHARE) -> bool:
    usable = _usable(gpus)
    if shape.weight_bytes is None or usable is None:
        return True
    return shape.weight_bytes / tp <= usable * share


def _gib(n: float) -> str:
    return f"{n / GIB:.0f} GiB"


def _sizes(sizes: Sequence[int]) -> str:
    return ", ".join(str(s) for s in sizes) if sizes else "none"


def plan_layout(
    shape: ModelShape | None,
    gpus: GpuSet,
    *,
    tp: int | None = None,
    engines: int | None = None,
    dp_mode: DpMode = "engines",
) -> Layout:
    """The engines for ``shape`` on ``gpus``; see the module docstring.

    ``tp`` and ``engines`` are the user's, when given (``engines`` is an upper bound).
    ``shape`` None (no config.json to read) requires ``tp``. Raises LayoutError.
    """
    n = len(gpus.ids)
    if n == 0:
        raise LayoutError("no GPU is visible (CUDA_VISIBLE_DEVICES, nvidia-smi)")
    if engines is not None and engines < 1:
        raise LayoutError(f"the number of engines must be at least 1, got {engines}")
    if tp is not None:
        _check_tp(shape, gpus, tp)
        reason = f"tensor-parallel size {tp} as given"
    elif shape is None:
        raise LayoutError(
            "the model's config.json cannot be read, so no layout can be chosen: download "
            "the model first (hf download MODEL) or give the tensor-parallel size"
        )
    else:
        tp, reason = _choose_tp(shape, gpus)
    count = n // tp
    if engines is not None:
        if engines > count:
            raise LayoutError(
                f"{engines} engines of tensor-parallel size {tp} need {engines * tp} GPUs; "
                f"{n} are visible"
            )
        count = engines
    groups = tuple(tuple(gpus.ids[k * tp : (k + 1) * tp]) for k in range(count))
    idle = tuple(gpus.ids[count * tp :])
    return Layout(tp=tp, groups=groups, idle=idle, dp_mode=dp_mode, reason=reason)


def _check_tp(shape: ModelShape | None, gpus: GpuSet, tp: int) -> None:
    n = len(gpus.ids)
    if tp < 1:
        raise LayoutError(f"tensor-parallel size must be at least 1, got {tp}")
    if tp > n:
        raise LayoutError(f"tensor-parallel size {tp} needs {tp} GPUs; {n} are visible")
    if shape is None:
        return
    valid = valid_tp_sizes(shape, n)
    if shape.attention_heads % tp:
        raise LayoutError(
            f"tensor-parallel size {tp} does not divide the {shape.attention_heads} attention "
            f"heads of {shape.name} (vLLM refuses it); sizes that work on {n} GPUs: "
            f"{_sizes(valid)}"
        )
    if not _divides_heads(shape, tp):
        raise LayoutError(
            f"tensor-parallel size {tp} neither divides nor is a multiple of the "
            f"{shape.kv_heads} KV heads of {shape.name} (vLLM refuses it); sizes that work "
            f"on {n} GPUs: {_sizes(valid)}"
        )
    usable = _usable(gpus)
    if not _fits(shape, gpus, tp, share=1.0):
        assert shape.weight_bytes is not None and usable is not None
        bigger = [s for s in valid if _fits(shape, gpus, s)]
        weights = shape.weight_bytes
        raise LayoutError(
            f"{shape.name} has {_gib(weights)} of weights: {_gib(weights / tp)} per GPU at "
            f"tensor-parallel size {tp}, more than the {_gib(usable)} vLLM may use of each "
            f"GPU; sizes that fit: {_sizes(bigger)}"
        )


def _choose_tp(shape: ModelShape, gpus: GpuSet) -> tuple[int, str]:
    n = len(gpus.ids)
    valid = valid_tp_sizes(shape, n)
    for tp in valid:
        if _fits(shape, gpus, tp):
            if tp == 1:
                return 1, "the model fits one GPU: one engine per GPU"
            return tp, (
                f"the smallest tensor-parallel size that divides the heads "
                f"({shape.attention_heads} attention, {shape.kv_heads} KV) and fits"
            )
    weights = _gib(shape.weight_bytes or 0)
    usable = _usable(gpus) or 0
    raise LayoutError(
        f"{shape.name} ({weights} of weights) does not fit {n} GPU(s) of {_gib(usable)} usable "
        f"memory at any tensor-parallel size vLLM accepts for its {shape.attention_heads} "
        f"attention and {shape.kv_heads} KV heads ({_sizes(valid)}); use a node with more or "
        "larger GPUs, or a quantized model"
    )
