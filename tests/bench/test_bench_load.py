"""The synthetic load: fitting words to tokens and shaping requests like the pipeline's."""

from __future__ import annotations

import random

import pytest

from soc_async.bench.load import (
    LoadShape,
    TokenFit,
    build_requests,
    fit_tokens,
    prefix_request,
    synthetic_text,
)


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


def test_synthetic_text_has_the_words_asked_for() -> None:
    """Exactly ``words`` words; none for zero."""
    rng = random.Random(0)
    assert len(synthetic_text(rng, 57).split()) == 57
    assert synthetic_text(rng, 0) == ""


def test_build_requests_shares_exactly_the_prefix() -> None:
    """Every request has the fitted length, ignore_eos and max_tokens fixed, and shares
    its first words (the cached share) with every other request, no more."""
    fit = TokenFit(base=10.0, per_word=2.0)
    shape = LoadShape(requests=6, prompt_tokens=410.0, output_tokens=33, shared_tokens=100.0)
    requests = build_requests(shape, fit, seed=3)
    assert len(requests) == 6
    texts = [r.messages[-1]["content"].split() for r in requests]
    assert all(len(t) == 200 for t in texts)
    assert all(r.max_tokens == 33 and r.extra == {"ignore_eos": True} for r in requests)
    assert all(r.grammar is None for r in requests)
    assert len({tuple(t[:50]) for t in texts}) == 1
    assert len({tuple(t[:60]) for t in texts}) == 6


def test_build_requests_without_shared_prefix_are_all_different() -> None:
    """With no cached share, prompts differ from their first words on (at this length,
    a collision of ten random words is out of the question)."""
    fit = TokenFit(base=0.0, per_word=1.0)
    requests = build_requests(LoadShape(requests=5, prompt_tokens=50, output_tokens=4), fit, 0)
    assert len({tuple(r.messages[-1]["content"].split()[:10]) for r in requests}) == 5


def test_prefix_request_caches_exactly_the_shared_prefix() -> None:
    """The warm-up request is the load's shared prefix, one token long; none without one."""
    fit = TokenFit(base=10.0, per_word=2.0)
    shape = LoadShape(requests=3, prompt_tokens=410.0, output_tokens=33, shared_tokens=100.0)
    warm = prefix_request(shape, fit, seed=5)
    assert warm is not None and warm.max_tokens == 1
    words = warm.messages[-1]["content"].split()
    assert len(words) == 50
    for request in build_requests(shape, fit, seed=5):
        assert request.messages[-1]["content"].split()[:50] == words
    assert prefix_request(LoadShape(requests=3, prompt_tokens=50, output_tokens=4), fit, 5) is None
