"""The dataset-wide near-duplicate index at 100,000 items: time per item and memory.

Feeds seed-length scripted cards (``ScriptedWriter(rich=True)``, about 3,000 characters
each) through what the persona stage does for every accepted card: its MinHash signature
(``NearDuplicateIndex.signature``, :mod:`soc_async.neardup`), a lookup against
everything indexed so far, and the insert. Every ``--every`` items it reports the mean
time of each step over the last block and the process's peak RSS, so the cost per item
can be read at 1,000, 10,000 and 100,000 items. Text generation is timed apart and left
out of the per-item figures.
Also reported: items refused as near-duplicates (the scripted cards are all different,
so any refusal is a false positive of the index at its threshold).

    python benchmarks/dedup_index.py [--items 100000] [--every 10000] [--threshold 0.5]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import time

from soc_async.neardup import NearDuplicateIndex
from soc_async.testing.scripted import ScriptedWriter


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--every", type=int, default=10_000)
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--json", default=None)
    args = p.parse_args()

    writer = ScriptedWriter(seed=1, rich=True)
    index = NearDuplicateIndex(args.threshold)
    base_rss = rss_mib()
    rows = []
    sig_s = find_s = add_s = gen_s = 0.0
    refused = block_refused = 0
    chars = 0
    for i in range(1, args.items + 1):
        t0 = time.perf_counter()
        name = f"Person {i}"
        card = writer.persona(
            f"Name: {name}\nAge: 30\nLocation: Somewhere, Country\nWrite the <character> card",
            False,
        )
        t1 = time.perf_counter()
        minhash = index.signature(card, [name])
        t2 = time.perf_counter()
        found = index.find(minhash)
        t3 = time.perf_counter()
        if found is None:
            index.add(f"p-{i}", minhash)
        else:
            refused += 1
            block_refused += 1
        t4 = time.perf_counter()
        gen_s += t1 - t0
        sig_s += t2 - t1
        find_s += t3 - t2
        add_s += t4 - t3
        chars += len(card)
        if i % args.every == 0 or i == args.items:
            n = args.every if i % args.every == 0 else i % args.every
            row = {
                "items": i,
                "signature_ms": round(sig_s / n * 1000, 3),
                "lookup_ms": round(find_s / n * 1000, 3),
                "insert_ms": round(add_s / n * 1000, 3),
                "per_item_ms": round((sig_s + find_s + add_s) / n * 1000, 3),
                "card_chars": round(chars / n),
                "refused_in_block": block_refused,
                "peak_rss_mib": round(rss_mib(), 1),
                "rss_growth_mib": round(rss_mib() - base_rss, 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            sig_s = find_s = add_s = gen_s = 0.0
            chars = block_refused = 0
    summary = {"threshold": args.threshold, "items": args.items, "refused": refused, "rows": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
