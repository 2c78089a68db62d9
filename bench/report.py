"""What a benchmark reports: figures judged against a baseline measured in the same run.

These machines are shared and noisy, so a headline figure is a ratio to something this
machine did moments before (a bare Flask route, a Celery no-op, a plain decode script),
never a bare number against a fixed target. A figure with no baseline (a count of 429s,
a peak RSS against a byte budget) says so with `baseline=None`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Check:
    figure: str  # "B1 jobs/s, 10 connections"
    value: float
    baseline: float | None  # measured in the same run, in the figure's unit
    baseline_label: str  # what the baseline is: "bare Flask hello", "Celery no-op"
    target: str  # in words: "ratio >= 0.5", "<= 20 ms"
    passed: bool

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        return self.value / self.baseline

    def as_dict(self) -> dict[str, Any]:
        return {
            "figure": self.figure,
            "value": self.value,
            "baseline": self.baseline,
            "baseline_label": self.baseline_label,
            "ratio": None if self.ratio is None else round(self.ratio, 3),
            "target": self.target,
            "passed": self.passed,
        }


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.3e}"


def table(checks: list[Check]) -> str:
    """One plain-text table: figure, value, baseline, ratio, target, pass/fail."""
    rows = [("figure", "value", "baseline", "ratio", "target", "result")]
    for c in checks:
        baseline = f"{_number(c.baseline)} ({c.baseline_label})" if c.baseline_label else "-"
        ratio = "-" if c.ratio is None else f"{c.ratio:.2f}"
        rows.append(
            (c.figure, _number(c.value), baseline, ratio, c.target, "pass" if c.passed else "FAIL")
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def markdown(checks: list[Check]) -> str:
    """The same table in Markdown, for docs/benchmarks.md and the README."""
    lines = ["| figure | value | baseline (same run) | ratio | target | result |"]
    lines.append("|---|---|---|---|---|---|")
    for c in checks:
        baseline = f"{_number(c.baseline)} ({c.baseline_label})" if c.baseline_label else "-"
        ratio = "-" if c.ratio is None else f"{c.ratio:.2f}"
        verdict = "pass" if c.passed else "**FAIL**"
        lines.append(
            f"| {c.figure} | {_number(c.value)} | {baseline} | {ratio} | {c.target} | {verdict} |"
        )
    return "\n".join(lines)
