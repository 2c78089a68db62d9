"""`python -m bench [NAME...] [--quick]`: run benchmarks, print one table, keep the JSON.

Each benchmark starts and stops its own stack (bench/stack.py) and returns its figures;
this prints figure, baseline, ratio, target and pass/fail, and writes the figures to
`bench/results/<name>.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import pacing

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Check:
    figure: str
    value: float
    baseline: str
    target: str
    passed: bool


def _pacing_checks(r: dict[str, Any]) -> list[Check]:
    return [
        Check(
            "B7 upstream RPM achieved",
            r["achieved_rpm"],
            f"budget {r['budget_rpm']} RPM",
            "98-100 % of budget",
            0.98 <= r["budget_used"] <= 1.0,
        ),
        Check("B7 upstream 429s", r["upstream_429"], "-", "0", r["upstream_429"] == 0),
        Check(
            "B7 small tenant's slowest job, s",
            r["small_wait_max_s"],
            f"two windows {r['two_windows_s']} s",
            "within two windows",
            r["small_wait_max_s"] <= r["two_windows_s"],
        ),
    ]


BENCHMARKS: dict[str, tuple[Callable[[bool], dict[str, Any]], Callable[..., list[Check]]]] = {
    "pacing": (pacing.run, _pacing_checks),
}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("names", nargs="*", choices=[[], *BENCHMARKS], default=[])
    parser.add_argument("--quick", action="store_true", help="smaller runs, for a smoke test")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    checks: list[Check] = []
    for name in args.names or list(BENCHMARKS):
        run, judge = BENCHMARKS[name]
        started = time.monotonic()
        figures = run(args.quick)
        figures["seconds"] = round(time.monotonic() - started, 1)
        figures["quick"] = args.quick
        (RESULTS / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n")
        print(f"{name}: {json.dumps(figures)}", file=sys.stderr)
        checks += judge(figures)
    width = max(len(c.figure) for c in checks)
    print(f"{'figure':<{width}}  {'value':>10}  {'baseline':<22}  {'target':<22}  result")
    for c in checks:
        verdict = "pass" if c.passed else "FAIL"
        print(f"{c.figure:<{width}}  {c.value:>10g}  {c.baseline:<22}  {c.target:<22}  {verdict}")
    return 0 if all(c.passed for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
