"""The bench run: for each concurrency value the pipeline, then the ceiling; then adaptive.

With ``--reference`` vLLM's own benchmark follows each ceiling (bench/reference.py);
with ``--breakdown`` the phases that switch one thing off follow (bench/breakdown.py).
Phases run one after another against the same server(s), each with its own
:class:`~soc_async.run.gateway.ModelGateway` (so its own limits, fixed or adaptive) and a
/metrics reading before and after, whose difference is that phase's share of the
server's counters. Each phase itself is :class:`~soc_async.bench.sweep.Sweep`'s; the
pure arithmetic lives in :mod:`soc_async.bench.metrics` and
:mod:`soc_async.bench.results`; this module does the order.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from typing import Any

import aiohttp
import msgspec

from soc_async import config as config_mod
from soc_async.bench import calibrate, load, reference, sizing
from soc_async.bench.breakdown import loss_steps
from soc_async.bench.live import BenchView
from soc_async.bench.results import BenchResult, BenchSettings, PhaseResult, summarize
from soc_async.bench.sweep import (
    SETTLE_DECISIONS,
    ServerReading,
    Sweep,
    bench_endpoints,
    read_servers,
)
from soc_async.config import RunConfig, RunFacts
from soc_async.errors import ServerError
from soc_async.llm.http import open_session
from soc_async.llm.readiness import wait_until_ready
from soc_async.run.gateway import ModelGateway
from soc_async.run.progress import RunCounters
from soc_async.timestamps import utc_now

__all__ = ["ServerReading", "read_servers", "run_bench"]


async def check_reachable(
    session: aiohttp.ClientSession, endpoints: list[str], timeout_s: float = 0.0
) -> None:
    """Waits up to ``timeout_s`` for every endpoint's /health and model list; ServerError
    naming the ones that never answered.

    Checked before anything else, so an unreachable server is one clear line rather than
    a failure half-way into the first phase; a bench measures every endpoint it is
    given, so one not ready is an error too.
    """
    not_ready = await wait_until_ready(session, endpoints, timeout_s)
    if not_ready:
        raise ServerError(
            f"not ready after {timeout_s:g} s: {', '.join(not_ready)}; start the server or "
            "check --endpoint (--ready-timeout)"
        )


async def _server_version(session: aiohttp.ClientSession, url: str) -> str | None:
    """vLLM's version from GET /version, None when the server does not say."""
    try:
        async with session.get(url.rstrip("/") + "/version", timeout=aiohttp.ClientTimeout(5)) as r:
            if r.status != 200:
                return None
            data = await r.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    version = data.get("version") if isinstance(data, dict) else None
    return str(version) if version is not None else None


def environment(
    config: RunConfig,
    found: RunFacts,
    model: str,
    vllm_version: str | None,
    fit: load.TokenFit | None,
    **more: Any,
) -> dict[str, Any]:
    """Where the figures were measured, for bench.json."""
    try:
        version = importlib.metadata.version("soc-async")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return {
        "time_utc": utc_now(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "soc_async": version,
        "server_model": model,
        "server_urls": bench_endpoints(config, found),
        "vllm_version": vllm_version,
        "prompt_token_fit": msgspec.to_builtins(fit) if fit else None,
        **more,
    }


def ceiling_shape(
    pipeline: PhaseResult, concurrency: int, shared_prefix: bool, block: int | None = None
) -> load.LoadShape | None:
    """The synthetic load that imitates a pipeline phase; None when it had no turns.

    Its shared prefix is the pipeline's prefix-cached share of the mean prompt, placed on
    the server's cache blocks (``block`` tokens each, when known) so that each request
    computes as many new tokens as the pipeline's did on average (load.place_prefix).
    """
    if pipeline.mean_prompt_tokens is None or pipeline.mean_completion_tokens is None:
        return None
    share = pipeline.prefix_hit_rate
    if share is None:
        share = pipeline.cached_share
    prompt, shared = pipeline.mean_prompt_tokens, 0.0
    if shared_prefix:
        prompt, shared = load.place_prefix(prompt, (share or 0.0) * prompt, block)
    return load.LoadShape(
        requests=max(pipeline.requests, concurrency),
        prompt_tokens=prompt,
        output_tokens=max(1, round(pipeline.mean_completion_tokens)),
        shared_tokens=shared,
    )


async def run_bench(
    config: RunConfig,
    settings: BenchSettings,
    view: BenchView | None = None,
    found: RunFacts | None = None,
) -> BenchResult:
    """The whole sweep against the servers of ``found`` (an endpoints file's or managed
    engines', else ``config.endpoints``); see the module docstring.

    Raises ServerError when the server cannot be reached at all, SeedError when the
    seed files are unusable.
    """
    from soc_async.llm.preflight import require_open_files

    view = view or BenchView(enabled=False)
    found = found if found is not None else RunFacts.of(config)
    # The key, when the server wants one, guards /v1 (and /metrics on some deployments).
    async with open_session(config.api_key) as session:
        sweep = Sweep(config, settings, session, view, found)
        await check_reachable(session, sweep.endpoints, config.client.ready_timeout_s)
        facts = await sizing.read_server_facts(session, sweep.endpoints[0])
        # A simulated server runs faster than real time: so does its controller.
        interval = max(0.01, config.concurrency.interval_s / (facts.time_scale or 1.0))
        settings = msgspec.structs.replace(settings, settle_s=SETTLE_DECISIONS * interval)
        sweep.settings = settings
        if not settings.concurrency:
            # The batch soc-async serve started the engines with (its endpoints file, or
            # managed engines), where the server itself does not say it.
            started = found.per_engine_bound(config)
            if facts.max_num_seqs is None and started:
                facts = msgspec.structs.replace(facts, max_num_seqs=started)
            plan = sizing.plan_sweep(facts)
            source = plan.source
            if started and facts.max_num_seqs == started:
                source = f"up to {started}, concurrency.per_engine (the engines' batch)"
            values = plan.concurrency
            engines = len(sweep.endpoints)
            if engines > 1:
                # The limits are totals split over the engines (one limiter each): the
                # sweep reaches every engine's batch, read from the first engine.
                values = [c * engines for c in values]
                source = f"{source}, times {engines} engines"
            settings = msgspec.structs.replace(settings, concurrency=values, sweep_source=source)
            sweep.settings = settings
        view.note("sweep", concurrency=settings.concurrency, source=settings.sweep_source)
        # Each point holds its concurrency in sockets: refuse one the open-file limit,
        # raised as far as it goes, cannot hold, before the sweep reaches it.
        require_open_files(max(settings.concurrency, default=1))
        fixed = [
            config_mod.override(config, {"concurrency.fixed": c}) for c in settings.concurrency
        ]
        # Warm-up and calibration: model name, vLLM version, words -> tokens, cache blocks.
        async with ModelGateway(fixed[0], RunCounters(), found) as gateway:
            model = gateway.model
            fit = await _calibrate(sweep, gateway, model)
        block = facts.block_size  # vllm:cache_config_info, read by sizing
        if block is None and settings.shared_prefix:
            sweep.note(
                "the server reports no prefix-cache block size (vllm:cache_config_info): "
                "the ceiling's shared prefix is not placed on its blocks"
            )
        vllm_version = await _server_version(session, sweep.endpoints[0])
        view.note(
            "calibrated",
            model=model,
            tokens_per_word=round(fit.per_word, 3),
            exact=fit.exact,
            block_size=block,
        )
        benchmark = _reference_module(sweep) if settings.reference else None
        phases: list[PhaseResult] = []
        for c, cfg in zip(settings.concurrency, fixed, strict=True):
            result = await sweep.pipeline(c, cfg, f"pipeline C={c}")
            phases.append(result)
            shape = ceiling_shape(result, c, settings.shared_prefix, block)
            if shape is None:
                view.note("no turns answered: no ceiling to compare with", concurrency=c)
                continue
            phases.append(await sweep.ceiling(c, cfg, shape.items(), fit))
            if benchmark is not None:
                ref = await sweep.reference(benchmark, c, shape)
                phases += [ref] if ref is not None else []
            if settings.breakdown:
                phases += await sweep.breakdown(c, cfg, result, fit, block)
        if settings.adaptive:
            lo, hi = min(settings.concurrency), max(settings.concurrency)
            initial = min(hi, max(lo, config.concurrency.initial))
            limits = msgspec.structs.replace(
                config.concurrency,
                fixed=None,
                min=lo,
                max=hi,
                initial=initial,
                interval_s=interval,
            )
            adaptive = msgspec.structs.replace(config, concurrency=limits)
            phases.append(await sweep.pipeline(None, adaptive, "adaptive"))
            steady = phases[-1].steady_s
            if steady is not None and phases[-1].settled_s is None:
                sweep.note(
                    f"the adaptive phase's steady window ({steady:.1f} s) is no longer than "
                    f"the controller's search left out of a settled window "
                    f"({settings.settle_s:g} s): no settled comparison; more --conversations "
                    "or --max-turns lengthen it"
                )
    data = msgspec.to_builtins(config)
    data.pop("api_key", None)
    return BenchResult(
        settings=settings,
        config=data,
        environment={
            **environment(config, found, model, vllm_version, fit, load_nonce=sweep.nonce),
            "server_facts": msgspec.to_builtins(facts),
        },
        phases=phases,
        summary=summarize(phases, settings.tolerance),
        breakdown=loss_steps(phases, grammar=settings.grammar) if settings.breakdown else [],
        notes=sweep.notes,
    )


async def _calibrate(sweep: Sweep, gateway: ModelGateway, model: str) -> load.TokenFit:
    """Words to the server's tokens: exact by its /tokenize, else fitted from probes."""
    url = sweep.endpoints[0]
    tokenizer = await calibrate.read_tokenizer(sweep.session, url, model)
    words = tokenizer.words if isinstance(tokenizer, calibrate.Tokenizer) else load.WORDS
    try:
        fit = await load.probe_fit(gateway, sweep.config.seed, vocabulary=words)
    except ValueError as exc:
        raise ServerError(
            f"{url}: cannot size the synthetic load ({exc}); does the server report "
            "usage.prompt_tokens?"
        ) from exc
    if isinstance(tokenizer, str):
        sweep.note(f"synthetic prompt lengths are fitted, not exact ({tokenizer})")
        return fit
    return calibrate.exact_fit(fit, tokenizer)


def _reference_module(sweep: Sweep) -> Any:
    """vLLM's benchmark module for the reference phases, or None (and a note) without one.

    Imported here, before anything is measured: importing vLLM takes seconds of CPU.
    """
    if len(sweep.endpoints) > 1:
        sweep.note(
            "no reference phase: vLLM's benchmark measures one server, the bench uses several"
        )
        return None
    loaded = reference.load_benchmark()
    if isinstance(loaded, str):
        sweep.note(loaded)
        return None
    return loaded
