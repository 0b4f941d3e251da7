"""From a [server] section to the engines to start, on a fake GPU node: layouts, ports,
devices, caches, flags; what cannot start is refused before anything runs."""

from __future__ import annotations

import socket

import pytest
from conftest import FakeNode

from soc_async import config as config_mod
from soc_async.config import ServerConfig
from soc_async.errors import ConfigError, InputError
from soc_async.llm import node
from soc_async.llm.layout import GIB, GpuSet, LayoutError
from soc_async.llm.plan import PORT_STEP, plan_engines
from soc_async.llm.server import QUIET_ARGS, flag_value


def test_default_layout_on_8_gpus_with_a_28_head_model(
    fake_node: FakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Qwen2.5-7B (28 heads) on 8 H100s: 8 engines of TP 1, one device each, ports 10
    apart with vLLM's internal ports just above, a compile cache each, vLLM's default
    batch for the GPU, the quiet flags, and the user's arguments last."""
    fake_node.apply(monkeypatch)
    fake_node.model()
    server = ServerConfig(
        model="Qwen/Qwen2.5-7B-Instruct", port=20000, extra_args=["--max-model-len", "8192"]
    )
    plan = plan_engines(server)
    assert plan.layout is not None and plan.layout.tp == 1
    assert [e.gpus for e in plan.engines] == [str(k) for k in range(8)]
    assert [e.spec.port for e in plan.engines] == [20000 + PORT_STEP * k for k in range(8)]
    envs = [e.spec.env for e in plan.engines]
    assert [env["VLLM_PORT"] for env in envs] == [str(20001 + PORT_STEP * k) for k in range(8)]
    assert len({env["VLLM_CACHE_ROOT"] for env in envs}) == 8
    args = plan.engines[0].spec.extra_args
    assert flag_value(args, "--tensor-parallel-size") == "1"
    assert flag_value(args, "--max-num-seqs") == "1024"
    assert all(flag in args for flag in QUIET_ARGS)
    assert args[-2:] == ["--max-model-len", "8192"]
    assert plan.engines[0].max_num_seqs == 1024 and plan.engines[0].priority
    assert "8 engine(s) of tensor-parallel size 1" in plan.describe()


def test_a_70b_model_gets_tensor_parallel_engines(
    fake_node: FakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Llama-3.3-70B (64 heads, ~141 GB) on 8 H100s: 2 engines of TP 4."""
    fake_node.apply(monkeypatch)
    fake_node.model("meta-llama/Llama-3.3-70B-Instruct")
    plan = plan_engines(ServerConfig(model="meta-llama/Llama-3.3-70B-Instruct", port=21000))
    assert [e.gpus for e in plan.engines] == ["0,1,2,3", "4,5,6,7"]
    assert flag_value(plan.engines[1].spec.extra_args, "--tensor-parallel-size") == "4"


def test_an_impossible_tensor_parallel_size_is_refused_up_front(
    fake_node: FakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TP 8 for 28 heads: a one-line LayoutError (exit 2) naming the sizes that work."""
    fake_node.apply(monkeypatch)
    fake_node.model()
    with pytest.raises(LayoutError, match=r"does not divide the 28 attention heads.*1, 2, 4"):
        plan_engines(ServerConfig(model="Qwen/Qwen2.5-7B-Instruct", tensor_parallel=8))


def test_a_busy_port_is_refused_before_any_engine_starts(
    fake_node: FakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_node.apply(monkeypatch)
    fake_node.model()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        with pytest.raises(InputError, match=f"port {taken}"):
            plan_engines(
                ServerConfig(model="Qwen/Qwen2.5-7B-Instruct", port=taken - PORT_STEP),
                gpus=GpuSet(ids=("0", "1"), memory_bytes=80 * GIB),
            )


def test_vllm_data_parallel_is_one_server_over_every_engine(
    fake_node: FakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dp_mode vllm: one port, --data-parallel-size 8, and an endpoint batch of 8 x 1,024."""
    fake_node.apply(monkeypatch)
    fake_node.model()
    plan = plan_engines(ServerConfig(model="Qwen/Qwen2.5-7B-Instruct", port=0), dp_mode="vllm")
    (only,) = plan.engines
    assert flag_value(only.spec.extra_args, "--data-parallel-size") == "8"
    assert only.gpus == "0,1,2,3,4,5,6,7" and only.max_num_seqs == 8192


def test_a_batch_size_given_to_vllm_is_the_one_reported(
    fake_node: FakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--max-num-seqs among the extra arguments: not added a second time, and the client
    is told that size."""
    fake_node.apply(monkeypatch)
    fake_node.model()
    plan = plan_engines(
        ServerConfig(model="Qwen/Qwen2.5-7B-Instruct", extra_args=["--max-num-seqs", "512"])
    )
    assert plan.engines[0].spec.extra_args.count("--max-num-seqs") == 1
    assert plan.engines[0].max_num_seqs == 512


def test_a_kv_cache_dtype_goes_to_every_engine_before_the_extra_arguments(
    fake_node: FakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kv_cache_dtype "fp8" is passed to each GPU engine and to the CPU server, before
    the extra arguments (a --kv-cache-dtype among those still wins: vLLM keeps the last);
    "auto" passes nothing; an unknown dtype is a config error naming the choices."""
    fake_node.apply(monkeypatch)
    fake_node.model()
    plan = plan_engines(ServerConfig(model="Qwen/Qwen2.5-7B-Instruct", kv_cache_dtype="fp8"))
    for engine in plan.engines:
        args = engine.spec.extra_args
        assert args[args.index("--kv-cache-dtype") + 1] == "fp8"
    assert len(plan.engines) == 8
    cpu = plan_engines(ServerConfig(kv_cache_dtype="fp8", extra_args=["--kv-cache-dtype", "auto"]))
    args = cpu.engines[0].spec.extra_args
    assert args[-2:] == ["--kv-cache-dtype", "auto"] and args.count("--kv-cache-dtype") == 2
    plain = plan_engines(ServerConfig(model="Qwen/Qwen2.5-7B-Instruct"))
    assert all("--kv-cache-dtype" not in e.spec.extra_args for e in plain.engines)
    with pytest.raises(ConfigError, match=r"server\.kv_cache_dtype"):
        config_mod.from_dict({"server": {"kv_cache_dtype": "fp4"}}, "test")


def test_smaller_gpus_get_vllms_smaller_default_batch(
    fake_node: FakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_node.apply(monkeypatch)
    monkeypatch.setenv("FAKE_GPU_MIB", str(24 * 1024))
    monkeypatch.setenv("FAKE_GPUS", "2")
    fake_node.model()
    plan = plan_engines(ServerConfig(model="Qwen/Qwen2.5-7B-Instruct"))
    assert [e.max_num_seqs for e in plan.engines] == [256, 256]


def test_visible_devices_follow_cuda_visible_devices(
    fake_node: FakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SLURM's CUDA_VISIBLE_DEVICES picks the devices; nvidia-smi gives their memory."""
    fake_node.apply(monkeypatch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    gpus = node.visible_gpus()
    assert gpus.ids == ("4", "5") and gpus.memory_bytes == 81559 * 1024**2
    assert node.visible_gpus("6").ids == ("6",)


def test_without_nvidia_smi_the_memory_is_what_the_user_says(
    fake_node: FakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A login node has no nvidia-smi: the devices come from --gpus, the memory from
    --gpu-memory-gib, so a dry run there plans what the GPU node will run (70B: TP 4)."""
    fake_node.apply(monkeypatch)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert node.visible_gpus("0,1").memory_bytes is None
    gpus = node.visible_gpus("0,1,2,3,4,5,6,7", memory_gib=80)
    assert gpus.memory_bytes == 80 * GIB
    fake_node.model("meta-llama/Llama-3.3-70B-Instruct")
    plan = plan_engines(
        ServerConfig(model="meta-llama/Llama-3.3-70B-Instruct", command=["vllm", "serve"]),
        gpus=gpus,
    )
    assert plan.layout is not None and plan.layout.tp == 4


def test_the_model_shape_comes_from_the_cache_or_a_directory(
    fake_node: FakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hub name is read from HF_HOME's cache, a directory directly; the weight size is
    the safetensors index's total when there is one."""
    fake_node.apply(monkeypatch)
    snapshot = fake_node.model("Qwen/Qwen3-8B")
    shape = node.model_shape("Qwen/Qwen3-8B")
    assert shape is not None and (shape.attention_heads, shape.kv_heads) == (32, 8)
    assert shape.weight_bytes is not None and 14 * GIB < shape.weight_bytes < 18 * GIB
    (snapshot / "model.safetensors.index.json").write_text(
        '{"metadata": {"total_size": 16384000000}}'
    )
    by_path = node.model_shape(str(snapshot))
    assert by_path is not None and by_path.weight_bytes == 16384000000
    assert node.model_shape("org/not-downloaded") is None


def test_without_gpus_the_model_is_served_on_the_cpu(
    fake_node: FakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_node.apply(monkeypatch)
    plan = plan_engines(ServerConfig(model="some/model", port=0), gpus=GpuSet(ids=()))
    (only,) = plan.engines
    assert only.spec.cpu and plan.layout is None
