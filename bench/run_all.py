"""`make bench`: every benchmark in turn; JSON results land in bench/out/, summaries in bench/RESULTS.md by hand."""

from __future__ import annotations

import subprocess
import sys

SUITES = [
    ["bench.throughput"],
    ["bench.latency"],
    ["bench.operator_stats"],
    ["bench.thumbnails"],  # needs node + npm: runs `npm ci` in bench/sharp by itself
    ["bench.presign"],
]


def main() -> int:
    for suite in SUITES:
        print(f"== python -m {' '.join(suite)}", flush=True)
        code = subprocess.call([sys.executable, "-m", *suite])
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
