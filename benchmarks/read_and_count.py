"""Time and memory to read a 1M-row DIALS reflection file and count every row's Foreground
pixels, as ratios to plainly reading the file's bytes, measured in the same run.

    python benchmarks/read_and_count.py [COPIES]      (default 5000 x 208 rows = 1.04M rows)

Targets (issue #2): time <= 1.0 x the plain read; peak memory <= 1.2 x the file size. Each
measurement runs in a fresh process with the file in the page cache (one warm-up read
first), best of 3. Memory is the process's peak resident set size above what it used
after its imports, i.e. what reading and counting added.
"""

from __future__ import annotations

import sys

from _common import PLAIN_READ, READ_AND_COUNT, best, replicated


def main() -> None:
    copies = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    path = replicated(copies)
    small = replicated(1)
    size = path.stat().st_size
    print(
        f"input: {path.name}: {size / 1e6:.0f} MB, {copies * 208:,} reflections (real DIALS rows x {copies})"
    )
    with open(path, "rb") as handle:  # warm the page cache
        while handle.read(1 << 24):
            pass
    plain = best(3, PLAIN_READ, str(path))
    print(
        f"plain read of the bytes:        {plain['seconds']:.3f} s, memory added {(plain['peak_rss'] - plain['baseline_rss']) / size:.2f} x file size"
    )
    ours = best(3, READ_AND_COUNT, str(path), str(small))
    added = ours["peak_rss"] - ours["baseline_rss"]
    print(
        f"read + count Foreground: {ours['seconds']:.3f} s = {ours['seconds'] / plain['seconds']:.2f} x the plain read "
        f"(target <= 1.0); memory added {added / size:.2f} x file size (target <= 1.2); "
        f"peak RSS {ours['peak_rss'] / 1e6:.0f} MB in all; {ours['foreground_pixels']:,} Foreground pixels"
    )


if __name__ == "__main__":
    main()
