"""The chat: one conversation as a state machine, its per-turn grammar, and its rollout.

state.py     THE chat state machine (pure): topic tracker, clock, events, endings, folds
grammar.py   the per-turn xgrammar EBNF derived from the state
rollout.py   ChatStage: drives the state machine through model calls, journal, summaries
"""
