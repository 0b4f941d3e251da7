"""What a simulated engine is: a model on some GPUs, and vLLM's settings for it.

A :class:`SimProfile` holds the few physical figures the step-time model needs (bytes of
weights and of KV cache per token, memory bandwidth, peak FLOP/s and how much of each a
real engine achieves) and the engine settings that shape continuous batching (KV blocks,
``max_num_seqs``, ``max_num_batched_tokens``). :func:`step_time` is the model itself,
a roofline:

    step = overhead + max(memory, compute)
    memory  = (weight bytes + KV bytes per token * context tokens read) / (bandwidth * bw_eff)
    compute = 2 * parameters * tokens in the step / (peak FLOP/s * mfu)

Decode is memory-bound (every step reads all weights and every running request's KV
cache) until the batch holds enough tokens for the matrix products to become
compute-bound: the knee. docs/simulator.md gives the source of every figure below.
"""

from __future__ import annotations

import msgspec

__all__ = ["KV_DTYPE_BYTES", "PROFILES", "SimProfile", "profile", "step_time", "with_kv_levers"]

GB = 1e9
TB = 1e12


class SimProfile(msgspec.Struct, kw_only=True, frozen=True):
    """One engine: model, hardware, vLLM settings. All hardware figures are totals over
    the engine's GPUs (a tensor-parallel group counts as one engine)."""

    name: str
    description: str
    model: str  # the served model name the simulator reports
    gpus: int  # GPUs behind one engine (tensor parallel)
    params: float  # parameters used per token (dense: all of them)
    weight_bytes: float  # bytes read from memory per step for the weights
    kv_bytes_per_token: float  # K and V of all layers for one token
    bandwidth: float  # bytes/s of HBM, all GPUs of the engine
    peak_flops: float  # dense BF16 FLOP/s, all GPUs of the engine
    bw_efficiency: float = 0.75  # share of the bandwidth a decode step achieves
    mfu: float = 0.55  # share of the peak FLOP/s a step with many tokens achieves
    step_overhead_s: float = 0.0015  # per step: scheduling, launches, sampling, all-reduce
    # vLLM's settings for this engine
    num_gpu_blocks: int  # KV-cache blocks (vllm:cache_config_info num_gpu_blocks)
    block_size: int = 16  # tokens per KV block (vLLM's default on CUDA)
    max_num_seqs: int = 1024  # vLLM's default on an H100/H200 (>= 70 GiB, not an A100)
    max_num_batched_tokens: int = 8192  # per step; chunked prefill splits longer prompts
    max_model_len: int = 32768
    # For the KV levers (:func:`with_kv_levers`): the memory of the engine's GPUs as the
    # driver reports it (bytes; 0: unknown), the share vLLM was given
    # (gpu_memory_utilization) when num_gpu_blocks was sized, and the KV cache's dtype.
    gpu_memory_bytes: float = 0.0
    gpu_memory_utilization: float = 0.9
    kv_cache_dtype: str = "auto"  # "auto": the model's dtype (BF16 here)

    def __post_init__(self) -> None:
        if self.max_num_batched_tokens < self.max_num_seqs:
            # vLLM refuses this too: every running request must be able to decode at once.
            raise ValueError(
                f"profile {self.name}: max_num_batched_tokens ({self.max_num_batched_tokens}) "
                f"must be >= max_num_seqs ({self.max_num_seqs})"
            )
        if self.num_gpu_blocks < 1 or self.block_size < 1:
            raise ValueError(f"profile {self.name}: needs num_gpu_blocks and block_size >= 1")

    @property
    def kv_tokens(self) -> int:
        """Tokens the KV cache holds (what vLLM logs as "GPU KV cache size")."""
        return self.num_gpu_blocks * self.block_size


# Bytes per element of the KV cache by vLLM's --kv-cache-dtype; "auto" is the model's
# dtype, BF16 for every profile here.
KV_DTYPE_BYTES: dict[str, float] = {"auto": 2.0, "bfloat16": 2.0, "fp8": 1.0, "fp8_e4m3": 1.0,
                                    "fp8_e5m2": 1.0}  # fmt: skip


def with_kv_levers(
    base: SimProfile, *, kv_cache_dtype: str = "auto", gpu_memory_utilization: float = 0.9
) -> SimProfile:
    """``base`` as vLLM would size it with another KV-cache dtype and memory share.

    The KV cache gets the memory it had (num_gpu_blocks x block x bytes per token) plus
    (new share - old share) x the GPUs' memory; weights and activations stay as they
    were. An fp8 cache holds each token in half the bytes of BF16, so the same memory
    holds twice the tokens, and a decode step reads half the bytes per token of context
    (the roofline's memory term). ValueError for an unknown dtype, a share outside
    (0, 1], or a profile without its GPUs' memory.
    """
    if kv_cache_dtype not in KV_DTYPE_BYTES:
        known = ", ".join(KV_DTYPE_BYTES)
        raise ValueError(f"kv_cache_dtype: expected one of {known}, got {kv_cache_dtype!r}")
    if not 0.0 < gpu_memory_utilization <= 1.0:
        raise ValueError(f"gpu_memory_utilization: expected (0, 1], got {gpu_memory_utilization}")
    same_dtype = KV_DTYPE_BYTES[kv_cache_dtype] == KV_DTYPE_BYTES[base.kv_cache_dtype]
    if same_dtype and gpu_memory_utilization == base.gpu_memory_utilization:
        return base
    if base.gpu_memory_bytes <= 0:
        raise ValueError(f"profile {base.name}: its GPUs' memory is not known")
    kv_bytes = base.num_gpu_blocks * base.block_size * base.kv_bytes_per_token
    kv_bytes += (gpu_memory_utilization - base.gpu_memory_utilization) * base.gpu_memory_bytes
    per_token = (
        base.kv_bytes_per_token
        * KV_DTYPE_BYTES[kv_cache_dtype]
        / KV_DTYPE_BYTES[base.kv_cache_dtype]
    )
    blocks = int(kv_bytes // (per_token * base.block_size))
    name = base.name
    if kv_cache_dtype != base.kv_cache_dtype:
        name += f"-kv-{kv_cache_dtype}"
    if gpu_memory_utilization != base.gpu_memory_utilization:
        name += f"-mem{gpu_memory_utilization:g}"
    return msgspec.structs.replace(
        base,
        name=name,
        description=(
            f"{base.description}; KV cache {kv_cache_dtype}, "
            f"gpu_memory_utilization {gpu_memory_utilization:g}"
        ),
        kv_bytes_per_token=per_token,
        num_gpu_blocks=blocks,
        gpu_memory_utilization=gpu_memory_utilization,
        kv_cache_dtype=kv_cache_dtype,
    )


def step_time(
    profile: SimProfile, tokens: int, context_tokens: int, *, slowdown: float = 1.0
) -> float:
    """Seconds one engine step takes: ``tokens`` computed (decode and prefill together)
    while reading ``context_tokens`` tokens of KV cache; ``slowdown`` scales the result
    (a slower or noisy engine)."""
    memory = (profile.weight_bytes + profile.kv_bytes_per_token * context_tokens) / (
        profile.bandwidth * profile.bw_efficiency
    )
    compute = 2.0 * profile.params * tokens / (profile.peak_flops * profile.mfu)
    return (profile.step_overhead_s + max(memory, compute)) * slowdown


# H100 SXM 80 GB: 3.35 TB/s HBM3, 989 TFLOP/s dense BF16. H200: 141 GB, 4.8 TB/s, same
# compute. Qwen3-8B: 8.2 B parameters, 36 layers, 8 KV heads of 128 -> 147,456 bytes of
# KV per token in BF16. Llama-3.3-70B: 70.6 B, 80 layers, 8 KV heads of 128 -> 327,680.
_QWEN3_8B = {"params": 8.19e9, "weight_bytes": 16.4 * GB, "kv_bytes_per_token": 147_456.0}
# Memory as nvidia-smi reports it: 81,559 MiB (H100 SXM 80 GB), 143,771 MiB (H200).
H100_MEMORY = 81_559 * 2**20
H200_MEMORY = 143_771 * 2**20
_LLAMA_70B = {"params": 70.6e9, "weight_bytes": 141.2 * GB, "kv_bytes_per_token": 327_680.0}

PROFILES: dict[str, SimProfile] = {
    p.name: p
    for p in (
        SimProfile(
            name="h100-8b",
            description="Qwen3-8B (BF16) on one H100 SXM 80 GB, vLLM defaults",
            model="Qwen/Qwen3-8B",
            gpus=1,
            bandwidth=3.35 * TB,
            peak_flops=989e12,
            num_gpu_blocks=24_000,  # 384k tokens: 0.9 x 80 GB - weights - activations
            gpu_memory_bytes=H100_MEMORY,
            **_QWEN3_8B,
        ),
        SimProfile(
            name="h200-8b",
            description="Qwen3-8B (BF16) on one H200 141 GB, vLLM defaults",
            model="Qwen/Qwen3-8B",
            gpus=1,
            bandwidth=4.8 * TB,
            peak_flops=989e12,
            num_gpu_blocks=45_000,  # 720k tokens
            gpu_memory_bytes=H200_MEMORY,
            **_QWEN3_8B,
        ),
        SimProfile(
            name="4xh100-70b",
            description="Llama-3.3-70B-Instruct (BF16) on 4 H100 SXM, tensor parallel 4",
            model="meta-llama/Llama-3.3-70B-Instruct",
            gpus=4,
            bandwidth=4 * 3.35 * TB,
            peak_flops=4 * 989e12,
            step_overhead_s=0.004,  # two all-reduces per layer over NVLink
            num_gpu_blocks=28_000,  # 448k tokens
            gpu_memory_bytes=4 * H100_MEMORY,
            **_LLAMA_70B,
        ),
        # A small engine for tests and the bench's end-to-end test: the same model of an
        # 8B on an H100, with a KV cache 20x smaller so its knee sits at a few requests.
        SimProfile(
            name="tiny",
            description="test profile: 8B/H100 arithmetic, 1,200 KV blocks, 64 sequences",
            model="sim-tiny",
            gpus=1,
            bandwidth=3.35 * TB,
            peak_flops=989e12,
            num_gpu_blocks=1_200,
            max_num_seqs=64,
            max_num_batched_tokens=4096,
            **_QWEN3_8B,
        ),
    )
}


def profile(name: str) -> SimProfile:
    """The named profile; ValueError listing the known names otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(sorted(PROFILES))
        raise ValueError(f"unknown simulator profile {name!r}; known: {known}") from None
