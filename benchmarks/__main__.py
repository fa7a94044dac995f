"""Run every benchmark in turn; each prints its own table."""

from __future__ import annotations

import importlib
import sys

SUITES = (
    "benchmarks.training",
    "benchmarks.serving",
    "benchmarks.wire_formats",
    "benchmarks.prediction_log",
)


def main(argv: list[str]) -> int:
    chosen = [s for s in SUITES if not argv or s.rsplit(".", 1)[-1] in argv]
    for name in chosen:
        print(f"\n=== {name}", flush=True)
        importlib.import_module(name).main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
