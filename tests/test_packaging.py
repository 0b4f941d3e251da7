"""The wheel carries the top-level prompts/ and seeds/: an installed soc-async, away from
the checkout, finds its templates and seed files."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from fakeproc import FakeProcess

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), str(ROOT)],
        check=True, capture_output=True,
    )  # fmt: skip
    (built,) = out.glob("soc_async-*.whl")
    return built


def test_the_wheel_holds_every_template_and_seed_file(wheel: Path) -> None:
    """Each file of prompts/ and seeds/ is in the wheel under soc_async/_data/."""
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("prompts", "seeds"):
        files = [p for p in (ROOT / folder).rglob("*") if p.is_file()]
        assert files
        for path in files:
            assert f"soc_async/_data/{path.relative_to(ROOT)}" in names, path


def test_the_wheel_holds_the_config_profiles(wheel: Path) -> None:
    """Every profile of src/soc_async/profiles/ is in the wheel, where config.py reads it."""
    names = set(zipfile.ZipFile(wheel).namelist())
    profiles = sorted((ROOT / "src" / "soc_async" / "profiles").glob("*.toml"))
    assert {p.stem for p in profiles} >= {"default", "embedded-cpu"}
    for path in profiles:
        assert f"soc_async/profiles/{path.name}" in names, path


@pytest.mark.slow
def test_a_non_editable_install_writes_personas_from_outside_the_checkout(
    wheel: Path, tmp_path: Path
) -> None:
    """A fresh venv with the wheel installed (not editable; its dependencies borrowed from
    this environment by a plain path entry) runs `soc-async personas -n 2` against the fake
    server from a directory outside the checkout: templates and seeds are found."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    fresh = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
         "--target", str(fresh), str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    # A plain path line: this environment's packages serve as dependencies, but its .pth
    # files (the editable install of the checkout) are not processed from there.
    deps = Path(sysconfig.get_path("purelib"))
    (fresh / "zz-deps.pth").write_text(f"{deps}\n")
    python = venv / "bin" / "python"
    where = subprocess.run(
        [str(python), "-c", "import soc_async, sys; print(soc_async.__file__)"],
        check=True, capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert where.stdout.strip().startswith(str(fresh)), where.stdout
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with FakeProcess("--reply", "soc_async.testing.scripted:reply") as fake:
        done = subprocess.run(
            [str(python), "-m", "soc_async.cli", "personas", "-n", "2", "--endpoint", fake.url,
             "--out", "run"],
            capture_output=True, text=True, cwd=work, env=env, timeout=300,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    lines = (work / "run" / "personas.jsonl").read_text().splitlines()
    assert len(lines) == 2
