"""Imported by a managed vLLM engine's Python at start (soc-async puts this directory first
on the engine's PYTHONPATH; llm/plan.py ``grammar_env``).

vLLM sizes its structured-output thread pools from ``multiprocessing.cpu_count()``, the
node's CPU count, not the job's share. With ``SOC_ASYNC_ENGINE_CPUS`` set, that one call
answers the share; ``os.cpu_count()`` is left alone. Then the ``sitecustomize`` this
file shadows, if the installation has one, is imported as it would have been.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import sys


def _bound() -> None:
    given = os.environ.get("SOC_ASYNC_ENGINE_CPUS", "")
    if not given.isdigit() or int(given) < 1:
        return
    cpus = int(given)

    def cpu_count() -> int:
        return cpus

    multiprocessing.cpu_count = cpu_count


def _chain() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or ".") != here]
    if rest == sys.path:
        return
    saved, sys.path[:] = list(sys.path), rest
    ours = sys.modules.pop(__name__, None)
    try:
        importlib.import_module("sitecustomize")
    except ImportError:
        pass
    finally:
        sys.path[:] = saved
        if ours is not None:
            sys.modules.setdefault(__name__, ours)


_bound()
_chain()
