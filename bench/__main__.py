"""`python -m bench [NAME...] [--quick]`: run benchmarks, print one table, keep the JSON.

Each benchmark is a module `bench/<name>.py` with `run(quick, out) -> figures` (it starts
and stops what it needs; `out` is where it may put a chart) and `checks(figures) ->
list[Check]`. This prints figure, baseline, ratio, target and pass/fail for all of them and
writes `bench/results/<name>.json` and `bench/results/summary.json` (and `summary.md`).

The exit status is 0 when every benchmark ran, whatever the figures: a timing is judged in
the table, never by failing the command (CI runs `--quick` as a smoke test). `--strict`
exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

from bench.report import Check, markdown, table

RESULTS = Path(__file__).resolve().parent / "results"
#: In the order they run and are reported; B7 is `pacing`, B8 `batch`, B9 `accounts`,
#: B10 `headtohead`, B11 `coldstart`.
BENCHMARKS = (
    "intake",
    "e2e",
    "scaleout",
    "images",
    "tokens",
    "autofit",
    "pacing",
    "batch",
    "accounts",
    "headtohead",
    "coldstart",
    "soak",
)
#: The full soak takes about 30 minutes: it runs when named, its --quick with the others.
_ONLY_WHEN_NAMED = ("soak",)


def _machine() -> dict[str, object]:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(memory / 1024**3, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"any of {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="smaller runs: a smoke test")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    unknown = set(args.names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {BENCHMARKS}")
    if shutil.which("wrk") is None:
        parser.error("the benchmarks need wrk, the HTTP load generator: apt-get install wrk")
    RESULTS.mkdir(exist_ok=True)
    checks: list[Check] = []
    started_all = time.monotonic()
    default = [n for n in BENCHMARKS if args.quick or n not in _ONLY_WHEN_NAMED]
    for name in [n for n in BENCHMARKS if n in args.names] or default:
        module = importlib.import_module(f"bench.{name}")
        print(f"== {name}", file=sys.stderr, flush=True)
        started = time.monotonic()
        figures = module.run(args.quick, RESULTS)
        figures["seconds"] = round(time.monotonic() - started, 1)
        figures["quick"] = args.quick
        (RESULTS / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n")
        checks += module.checks(figures)
    summary = {
        "machine": _machine(),
        "quick": args.quick,
        "seconds": round(time.monotonic() - started_all, 1),
        "checks": [c.as_dict() for c in checks],
    }
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (RESULTS / "summary.md").write_text(markdown(checks) + "\n")
    machine = summary["machine"]
    print(f"{machine['cores']} cores, {machine['memory_gib']} GiB, {summary['seconds']} s")
    print(table(checks))
    missed = [c.figure for c in checks if not c.passed]
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
