"""The synthetic load: fitting words to tokens and shaping requests like the pipeline's."""

from __future__ import annotations

import random

import pytest

from soc_async.bench.load import (
    LEAD,
    LoadShape,
    RequestShape,
    TokenFit,
    build_requests,
    fit_tokens,
    place_prefix,
    spread_items,
    synthetic_text,
    warm_request,
)


def words_of(request: object) -> list[str]:
    content = request.messages[-1]["content"]  # type: ignore[attr-defined]
    lead, *words = content.split()
    assert lead == LEAD
    return words


def test_fit_tokens_recovers_the_line() -> None:
    """Probes on tokens = 12 + 1.5 * words give back that line."""
    fit = fit_tokens([(40, 72), (400, 612)])
    assert fit.base == pytest.approx(12.0)
    assert fit.per_word == pytest.approx(1.5)
    assert fit.words_for(1512) == 1000
    assert fit.words_for(5) == 0  # the template alone is longer: no words


def test_fit_tokens_refuses_useless_probes() -> None:
    """One length only, or counts that do not grow, cannot be fitted."""
    with pytest.raises(ValueError):
        fit_tokens([(40, 72), (40, 75)])
    with pytest.raises(ValueError):
        fit_tokens([(40, 72), (400, 72)])


def test_prefix_words_count_from_the_template_head() -> None:
    """The shared tokens include the template's opening: the head when known, else the
    whole template constant."""
    exact = TokenFit(base=30.0, per_word=1.0, head=25.0, exact=True)
    assert exact.prefix_words(1856) == 1831
    assert TokenFit(base=30.0, per_word=1.0).prefix_words(1856) == 1826
    assert exact.prefix_words(10) == 0


def test_synthetic_text_has_the_words_asked_for() -> None:
    """Exactly ``words`` words of the vocabulary; none for zero."""
    rng = random.Random(0)
    assert len(synthetic_text(rng, 57).split()) == 57
    assert set(synthetic_text(rng, 50, ("a", "b")).split()) <= {"a", "b"}
    assert synthetic_text(rng, 0) == ""


def test_place_prefix_keeps_the_computed_tokens_and_lands_mid_block() -> None:
    """The cached share is rounded to whole blocks and the prompt moves with it, so each
    request computes what the pipeline's did; the prefix ends half a block past the
    boundary (the old prefix, cut at the mean share itself, cached a block less whenever
    the share fell just short of a boundary)."""
    prompt, shared = place_prefix(2590.0, 1787.0, 128)
    assert shared == 14 * 128 + 64  # 14 blocks cached
    assert prompt - 14 * 128 == pytest.approx(2590 - 1787)  # computed tokens unchanged
    assert place_prefix(2590.0, 1792.0, 128) == (2590.0, 14 * 128 + 64)
    assert place_prefix(2590.0, 1700.0, 128)[1] == 13 * 128 + 64
    assert place_prefix(2590.0, 40.0, 128) == (2550.0, 0.0)  # under half a block: none
    assert place_prefix(2590.0, 2580.0, 128) == (2570.0, 2569.0)  # never the whole prompt
    assert place_prefix(2590.0, 1787.0, None) == (2590.0, 1787.0)  # no block size
    assert place_prefix(2590.0, 0.0, 16) == (2590.0, 0.0)


def test_build_requests_shares_exactly_the_prefix() -> None:
    """Every request has the fitted length, ignore_eos and max_tokens fixed, and shares
    its first words (the cached share) with every other request, no more."""
    fit = TokenFit(base=10.0, per_word=2.0)
    shape = LoadShape(requests=6, prompt_tokens=410.0, output_tokens=33, shared_tokens=110.0)
    requests = build_requests(shape.items(), fit, seed=3)
    assert len(requests) == 6
    texts = [words_of(r) for r in requests]
    assert all(len(t) == 200 for t in texts)
    assert all(r.max_tokens == 33 and r.extra == {"ignore_eos": True} for r in requests)
    assert all(r.grammar is None for r in requests)
    assert len({tuple(t[:50]) for t in texts}) == 1
    assert len({tuple(t[:60]) for t in texts}) == 6


def test_build_requests_uses_the_fit_vocabulary() -> None:
    """An exact fit's one-token words are the only words drawn."""
    fit = TokenFit(base=5.0, per_word=1.0, head=4.0, words=("apple", "river"), exact=True)
    requests = build_requests(
        LoadShape(requests=3, prompt_tokens=105, output_tokens=2).items(), fit, 1
    )
    assert all(len(words_of(r)) == 100 for r in requests)
    assert {w for r in requests for w in words_of(r)} <= {"apple", "river"}


def test_build_requests_without_shared_prefix_are_all_different() -> None:
    """With no cached share, prompts differ from their first words on (at this length,
    a collision of ten random words is out of the question)."""
    fit = TokenFit(base=0.0, per_word=1.0)
    shape = LoadShape(requests=5, prompt_tokens=50, output_tokens=4)
    requests = build_requests(shape.items(), fit, 0)
    assert len({tuple(words_of(r)[:10]) for r in requests}) == 5


def test_build_requests_differ_between_seeds() -> None:
    """Two seeds, two sets of prompts, prefix included: a fresh seed per bench run keeps
    an earlier run's prompts out of the prefix cache."""
    fit = TokenFit(base=0.0, per_word=1.0)
    shape = LoadShape(requests=2, prompt_tokens=60, output_tokens=4, shared_tokens=40)
    a, b = (build_requests(shape.items(), fit, seed) for seed in (1, 2))
    assert words_of(a[0])[:30] != words_of(b[0])[:30]


def test_warm_request_is_the_prompt_sharing_most() -> None:
    """The warm-up is one request's whole prompt, one token long, no ignore_eos (as vLLM's
    benchmark sends its first prompt once); none when nothing is shared."""
    fit = TokenFit(base=0.0, per_word=1.0)
    items = [RequestShape(100, 20, 5), RequestShape(100, 60, 5), RequestShape(100, 60, 5)]
    requests = build_requests(items, fit, seed=5)
    warm = warm_request(items, requests)
    assert warm is not None and warm.max_tokens == 1 and warm.extra is None
    assert warm.messages == requests[1].messages
    assert words_of(requests[0])[:20] == words_of(requests[1])[:20]
    assert words_of(requests[0])[:21] != words_of(requests[1])[:21]
    uniform = LoadShape(requests=3, prompt_tokens=50, output_tokens=4).items()
    assert warm_request(uniform, build_requests(uniform, fit, 5)) is None


def test_spread_items_replay_the_pipeline_lengths() -> None:
    """Each item takes one real request's prompt, cached share (placed on the blocks) and
    output; the samples are cycled in a seeded order to the count asked."""
    samples = [(2000, 1792, 150), (2500, 256, 90), (900, 0, 40)]
    items = spread_items(samples, 7, 128, seed=0)
    assert len(items) == 7
    assert {(i.prompt, i.output) for i in items} == {(2000, 150), (2500, 90), (900, 40)}
    shared = {i.prompt: i.shared for i in items}
    assert shared == {2000: 1792 + 64, 2500: 256 + 64, 900: 0}
    assert items == spread_items(samples, 7, 128, seed=0)
    assert spread_items([], 5, 128, seed=0) == []
