"""The wheel carries the viewer's page, the export's template and the annotate page and
default rubric (package data files)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "soc_async"


def test_the_wheel_holds_the_page_and_the_template(tmp_path: Path) -> None:
    """Every file of view/static/ and export/templates/ is in the built wheel, so an
    installed soc-async writes a viewer and a messages export, and serves the annotate
    page, without the checkout."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path), str(ROOT)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("soc_async-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    dirs = ("view/static", "export/templates", "annotate/static")
    files = [p for d in dirs for p in (PACKAGE / d).iterdir()]
    files.append(PACKAGE / "annotate" / "default_rubric.toml")
    assert len(files) == 8
    for path in files:
        assert f"soc_async/{path.relative_to(PACKAGE)}" in names, path
