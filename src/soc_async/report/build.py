"""One pass over each file of a run directory, every figure fed as the records stream.

Personas first (the checks of the later files need their ids and names, the pairing
figure their regions), then experiences, conversations and failures. Nothing holds a
whole file: what is kept grows with the number of personas (ids, names, regions), with
the experiences that set their own start date, and by about 320 bytes per item for the
near-duplicate signatures; everything else is counts.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from soc_async.errors import RunDirError
from soc_async.records import Conversation, Experience, Failure, Persona
from soc_async.report.adherence import RulesFigure
from soc_async.report.ages import AgesFigure
from soc_async.report.archetype_judge import ArchetypeJudged
from soc_async.report.archetype_mix import ArchetypeFigure
from soc_async.report.counts import CountsFigure
from soc_async.report.demographics import DemographicsFigure
from soc_async.report.drift import DriftFigure
from soc_async.report.duplicates import DuplicatesFigure
from soc_async.report.experience_mix import ExperienceMixFigure
from soc_async.report.glance import glance
from soc_async.report.model import JudgeSection, Meta, Report
from soc_async.report.naturalness import NaturalnessFigure
from soc_async.report.pacing import PacingFigure
from soc_async.report.shape import ShapeFigure
from soc_async.store import CONVERSATIONS, EXPERIENCES, FAILURES, PERSONAS, RUN
from soc_async.store.rundata import RunData
from soc_async.timestamps import utc_now

__all__ = ["build_report", "soc_async_version"]


def soc_async_version() -> str:
    try:
        return importlib.metadata.version("soc-async")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - source checkout
        return "unknown"


def build_report(
    path: str | Path,
    *,
    judge: JudgeSection | None = None,
    archetype_judge: ArchetypeJudged | None = None,
) -> Report:
    """The report of the run directory at ``path`` (``judge``: a judged sample's
    section, made beforehand by :mod:`.judge`; ``archetype_judge``: the cards read by
    :mod:`.archetype_judging`)."""
    src = RunData(path)
    if src.identity is None:  # the report states which run it measured
        raise RunDirError(f"{src.path}: not a soc-async run directory (no {RUN})")
    cfg = src.config
    counts = CountsFigure()
    rules = RulesFigure(cfg)
    demo = DemographicsFigure(cfg.persona, cfg.experience)
    mix = ExperienceMixFigure()
    shape = ShapeFigure(cfg.chat)
    natural = NaturalnessFigure()
    dups = DuplicatesFigure()
    drift = DriftFigure()
    pacing = PacingFigure(cfg.chat)
    ages = AgesFigure(cfg.persona)
    archetypes = ArchetypeFigure(cfg.archetypes, archetype_judge)

    for p in src.records(PERSONAS, Persona):
        counts.persona(p)
        rules.persona(p)
        demo.persona(p)
        dups.persona(p)
        drift.persona(p)
        ages.persona(p)
        archetypes.persona(p)
    for e in src.records(EXPERIENCES, Experience):
        counts.experience(e)
        rules.experience(e)
        demo.experience(e)
        mix.experience(e)
        dups.experience(e)
    for c in src.records(CONVERSATIONS, Conversation):
        counts.conversation(c)
        rules.conversation(c)
        shape.conversation(c)
        natural.conversation(c)
        dups.conversation(c)
        pacing.conversation(c)
    for f in src.records(FAILURES, Failure):
        counts.failure(f)

    targets = {
        "personas": cfg.targets.personas,
        "experiences": cfg.targets.experiences,
        "chats": cfg.targets.chats,
    }
    meta = Meta(
        soc_async_version=soc_async_version(),
        generated=utc_now(),
        run_dir=str(src.path),
        seed=src.identity.seed,
        shard=src.identity.shard,
        run_key=src.identity.key,
        merged=src.merged,
        config_hash=src.config_hash,
        config_source=src.config_source,
        torn_lines=list(src.torn),
    )
    report = Report(
        meta=meta,
        glance=[],
        counts=counts.result(targets),
        rules=rules.result(),
        demographics=demo.result(),
        experiences=mix.result(),
        shape=shape.result(),
        naturalness=natural.result(),
        duplicates=dups.result(),
        drift=drift.result(),
        judge=judge,
        pacing=pacing.result(),
        ages=ages.result(),
        archetypes=archetypes.result(),
    )
    report.glance = glance(report)
    return report
