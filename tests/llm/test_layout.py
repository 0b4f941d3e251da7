"""The parallel layout: what vLLM accepts for a model's heads, what fits, what is chosen,
and what is refused before anything starts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from soc_async.llm.layout import (
    GIB,
    GpuSet,
    LayoutError,
    ModelShape,
    default_max_num_seqs,
    plan_layout,
    valid_tp_sizes,
)

QWEN_7B = ModelShape(
    name="Qwen/Qwen2.5-7B-Instruct", attention_heads=28, kv_heads=4, weight_bytes=int(15.2 * GIB)
)
LLAMA_70B = ModelShape(
    name="meta-llama/Llama-3.3-70B-Instruct", attention_heads=64, kv_heads=8, weight_bytes=141 * GIB
)


def h100(n: int = 8) -> GpuSet:
    return GpuSet(
        ids=tuple(str(i) for i in range(n)), memory_bytes=80 * GIB, name="NVIDIA H100 80GB HBM3"
    )


def test_a_model_that_fits_one_gpu_gets_one_engine_per_gpu() -> None:
    """A 7B model with 28 heads on 8 H100s: 8 engines of TP 1, every GPU used."""
    layout = plan_layout(QWEN_7B, h100())
    assert layout.tp == 1 and layout.engines == 8
    assert layout.groups == tuple((str(i),) for i in range(8)) and layout.idle == ()


def test_a_large_model_gets_the_smallest_tensor_parallel_size_that_fits() -> None:
    """70B on 8 H100s: TP 2 would put 70 GiB of weights on each GPU (more than 75% of
    the 72 GiB vLLM uses), so TP 4, and two engines over the rest."""
    layout = plan_layout(LLAMA_70B, h100())
    assert layout.tp == 4
    assert layout.groups == (("0", "1", "2", "3"), ("4", "5", "6", "7"))


def test_leftover_gpus_are_named_idle() -> None:
    """6 GPUs and TP 4: one engine, two GPUs idle."""
    layout = plan_layout(LLAMA_70B, h100(6))
    assert layout.engines == 1 and layout.idle == ("4", "5")


def test_tensor_parallel_size_must_divide_the_attention_heads() -> None:
    """TP 8 on a 28-head model is refused with the sizes that would work."""
    with pytest.raises(LayoutError) as caught:
        plan_layout(QWEN_7B, h100(), tp=8)
    message = str(caught.value)
    assert "\n" not in message
    assert "does not divide the 28 attention heads" in message
    assert "sizes that work on 8 GPUs: 1, 2, 4" in message


def test_tensor_parallel_size_must_suit_the_kv_heads() -> None:
    """TP 7 divides 28 attention heads but neither divides nor is a multiple of 4 KV heads."""
    with pytest.raises(LayoutError, match="KV heads"):
        plan_layout(QWEN_7B, h100(), tp=7)


def test_kv_heads_fewer_than_tp_are_replicated() -> None:
    """8 KV heads and TP 16 (a multiple): accepted, as vLLM replicates them."""
    shape = ModelShape(name="m", attention_heads=64, kv_heads=8)
    assert 16 in valid_tp_sizes(shape, 16)
    assert plan_layout(shape, h100(16), tp=16).engines == 1


def test_a_given_size_over_the_gpu_count_is_refused() -> None:
    with pytest.raises(LayoutError, match="needs 16 GPUs; 8 are visible"):
        plan_layout(QWEN_7B, h100(), tp=16)


def test_a_given_size_whose_weights_exceed_a_gpu_is_refused() -> None:
    """70B at TP 1: 141 GiB on one 80 GiB GPU cannot load; the message names sizes that fit."""
    with pytest.raises(LayoutError, match=r"sizes that fit: 4, 8"):
        plan_layout(LLAMA_70B, h100(), tp=1)


def test_a_given_size_that_fits_tightly_is_accepted() -> None:
    """TP 2 for 70B leaves little KV room, but the user may know better: accepted."""
    assert plan_layout(LLAMA_70B, h100(), tp=2).engines == 4


def test_engines_bound_the_count_and_too_many_are_refused() -> None:
    assert plan_layout(QWEN_7B, h100(), engines=3).engines == 3
    with pytest.raises(LayoutError, match="3 engines of tensor-parallel size 4 need 12 GPUs"):
        plan_layout(QWEN_7B, h100(), tp=4, engines=3)


def test_a_model_that_fits_nowhere_is_refused() -> None:
    """141 GiB on two 24 GiB GPUs: no size works; the message says so in one line."""
    small = GpuSet(ids=("0", "1"), memory_bytes=24 * GIB)
    with pytest.raises(LayoutError, match="does not fit 2 GPU"):
        plan_layout(LLAMA_70B, small)


def test_without_config_a_size_is_needed() -> None:
    """No config.json: the default cannot be chosen; a given size is taken as it is."""
    with pytest.raises(LayoutError, match="hf download"):
        plan_layout(None, h100())
    assert plan_layout(None, h100(), tp=2).engines == 4


def test_no_gpu_is_refused() -> None:
    with pytest.raises(LayoutError, match="no GPU"):
        plan_layout(QWEN_7B, GpuSet(ids=()))


def test_default_batch_size_follows_vllm() -> None:
    """1,024 sequences on 80 GB-class GPUs except A100s, 256 elsewhere."""
    assert default_max_num_seqs(h100()) == 1024
    assert (
        default_max_num_seqs(
            GpuSet(ids=("0",), memory_bytes=80 * GIB, name="NVIDIA A100-SXM4-80GB")
        )
        == 256
    )
    assert default_max_num_seqs(GpuSet(ids=("0",), memory_bytes=24 * GIB)) == 256


@given(
    heads=st.sampled_from([8, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 96]),
    kv_div=st.sampled_from([1, 2, 4, 8]),
    gpus=st.integers(1, 16),
    weight_gib=st.integers(1, 400),
)
def test_a_chosen_layout_is_always_one_vllm_accepts(
    heads: int, kv_div: int, gpus: int, weight_gib: int
) -> None:
    """Whatever the model and node, a default layout divides the heads, fits, and uses
    whole engines of its size; or it is refused, never half-valid."""
    kv = max(1, heads // kv_div)
    shape = ModelShape(name="m", attention_heads=heads, kv_heads=kv, weight_bytes=weight_gib * GIB)
    try:
        layout = plan_layout(shape, h100(gpus))
    except LayoutError:
        return
    assert heads % layout.tp == 0
    assert kv % layout.tp == 0 or layout.tp % kv == 0
    assert weight_gib * GIB / layout.tp <= 80 * GIB * 0.9 * 0.75
    assert layout.engines == gpus // layout.tp
    assert all(len(g) == layout.tp for g in layout.groups)
