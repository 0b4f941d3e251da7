"""`soc-async view` and `soc-async export` on a run of 100,000 conversations: time, memory, size.

The run directory is synthesized from records (soc_async/testing/synthetic.py: cards,
experiences and chats shaped and sized like a fake-server run, 2% of the chats failed),
which takes a minute instead of the hours a fake-server run of that size would. Then,
each in its own child process (so its peak RSS is its own, read from ``wait4``):

- ``soc-async view DIR --out SITE``: wall and CPU seconds, peak RSS, files and bytes of the site;
- ``soc-async export DIR --format F --out OUT --split validation=0.05 --parquet`` for
  every format: wall and CPU seconds, peak RSS, JSONL and Parquet bytes, rows, conversations the
  grouped split left out;
- with `datasets` installed, ``load_dataset(OUT)`` (the card's Parquet config): seconds;
- with playwright and Chromium, the site opened from file:// in headless Chromium: time
  to the first page of the list, to the whole list loaded, to filter it, to open a
  conversation by its link, and the page's JS heap.

    python benchmarks/view_export_scale.py [--conversations 100000] [--personas 10000]
        [--work /tmp/soc-scale] [--keep] [--no-browser] [--no-datasets] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from soc_async.testing.synthetic import write_run

CHROMIUM = os.environ.get("SOC_ASYNC_CHROMIUM", "/usr/bin/chromium")
FORMATS = ("soc-2602", "soc-2508", "spb", "messages")


def child(*args: str) -> dict[str, Any]:
    """Run ``python -m soc_async.cli ARGS``; its wall time, peak RSS and last output line."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "soc_async.cli", *args], stdout=out, stderr=err, env=env
        )
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            raise SystemExit(f"soc-async {' '.join(args)} failed:\n{err.read().decode()[-2000:]}")
        line = out.read().decode().strip()
    return {
        "seconds": round(seconds, 2),
        # CPU time is the figure to compare on a shared machine; wall time waits for others.
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),  # ru_maxrss is in KiB on Linux
        "line": line,
    }


def size(path: Path, suffix: str = "") -> int:
    return sum(p.stat().st_size for p in path.rglob(f"*{suffix}") if p.is_file())


def browser_figures(site: Path, chat_id: str) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    url = (site / "index.html").as_uri()
    out: dict[str, Any] = {}
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = b.new_page(viewport={"width": 1500, "height": 950})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        t0 = time.perf_counter()
        page.goto(url)
        page.wait_for_selector("#list li")
        out["first_page_s"] = round(time.perf_counter() - t0, 2)
        page.wait_for_function(
            "() => !document.getElementById('list-info').textContent.includes('loading')",
            timeout=300_000,
        )
        out["whole_list_s"] = round(time.perf_counter() - t0, 2)
        before = page.inner_text("#page-info")
        t1 = time.perf_counter()
        page.select_option("#f-style", label="structured")
        page.wait_for_function(
            "b => document.getElementById('page-info').textContent !== b", arg=before
        )
        out["filter_s"] = round(time.perf_counter() - t1, 3)
        t2 = time.perf_counter()
        page.fill("#q", "leila")
        page.wait_for_timeout(150)  # the search box waits 120 ms for more typing
        page.wait_for_selector("#list li")
        out["search_s"] = round(time.perf_counter() - t2 - 0.15, 3)
        out["js_heap_mb"] = round(page.evaluate("performance.memory.usedJSHeapSize") / 2**20)
        page2 = b.new_page(viewport={"width": 1500, "height": 950})
        t3 = time.perf_counter()
        page2.goto(f"{url}#/c/{chat_id}")
        page2.wait_for_selector("#conv .msg")
        page2.wait_for_selector("#context-pane details.persona")
        out["open_by_link_s"] = round(time.perf_counter() - t3, 2)
        t4 = time.perf_counter()
        page2.keyboard.press("j")
        page2.wait_for_function("id => location.hash !== '#/c/' + id", arg=chat_id)
        page2.wait_for_selector("#conv .msg")
        out["next_by_key_s"] = round(time.perf_counter() - t4, 2)
        out["page_errors"] = len(errors)
        b.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--conversations", type=int, default=100_000)
    ap.add_argument("--personas", type=int, default=10_000)
    ap.add_argument("--work", default="/tmp/soc-scale", help="scratch directory (replaced)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--no-datasets", action="store_true")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    run = work / "run"
    figures: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
    }
    t = time.perf_counter()
    counts = write_run(
        run, personas=args.personas, conversations=args.conversations, seed=1, fail_every=50
    )
    figures["synthesize_s"] = round(time.perf_counter() - t, 1)
    figures["run"] = {
        "conversations": counts.conversations,
        "failed_chats": counts.failures["chats"],
        "personas": counts.personas,
        "experiences": counts.experiences,
        "bytes": size(run, ".jsonl"),
    }
    print(f"run: {figures['run']} in {figures['synthesize_s']} s", flush=True)

    site = work / "site"
    view = child("view", str(run), "--out", str(site))
    view |= {"files": sum(1 for p in site.rglob("*") if p.is_file()), "bytes": size(site)}
    view["largest_file_bytes"] = max(p.stat().st_size for p in site.rglob("*") if p.is_file())
    figures["view"] = view
    print(f"view: {view}", flush=True)

    figures["export"] = {}
    for fmt in FORMATS:
        out = work / f"export-{fmt}"
        result = child(
            "export", str(run), "--format", fmt, "--out", str(out),
            "--split", "validation=0.05", "--parquet",
        )  # fmt: skip
        result |= {"jsonl_bytes": size(out, ".jsonl"), "parquet_bytes": size(out, ".parquet")}
        if not args.no_datasets:
            result["load_dataset_s"] = load_seconds(out, work / "hf-cache")
        figures["export"][fmt] = result
        print(f"export {fmt}: {result}", flush=True)

    if not args.no_browser and Path(CHROMIUM).exists():
        first = json.loads((run / "conversations.jsonl").open().readline())["chat_id"]
        figures["browser"] = browser_figures(site, first)
        print(f"browser: {figures['browser']}", flush=True)

    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


def load_seconds(out: Path, cache: Path) -> float | None:
    """Seconds ``datasets.load_dataset(OUT)`` takes in a child process; None without datasets."""
    code = (
        "import os, sys, time; os.environ['HF_HUB_OFFLINE'] = '1'\n"
        "try:\n    import datasets\nexcept ImportError:\n    sys.exit(3)\n"
        "datasets.disable_progress_bars(); t = time.perf_counter()\n"
        f"ds = datasets.load_dataset({str(out)!r}, cache_dir={str(cache)!r})\n"
        "print(round(time.perf_counter() - t, 1), sum(d.num_rows for d in ds.values()))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode == 3:
        return None
    if proc.returncode:
        raise SystemExit(f"load_dataset({out}) failed:\n{proc.stderr[-2000:]}")
    shutil.rmtree(cache, ignore_errors=True)
    return float(proc.stdout.split()[0])


if __name__ == "__main__":
    main()
