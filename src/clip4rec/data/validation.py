"""Validation report written by every importer: what was found, what was repaired, what was dropped.

Nothing leaves the data silently: each repair or drop is a finding with a count and a few examples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Finding:
    kind: str               # e.g. "duplicate_item_ids_merged", "unknown_item_interactions_dropped"
    count: int
    action: str             # what was done about it: "merged (first non-empty value per column)", "dropped", "kept"
    examples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "count": self.count, "action": self.action, "examples": self.examples}


@dataclass
class ValidationReport:
    source: str
    findings: list[Finding] = field(default_factory=list)

    def add(self, kind: str, count: int, action: str, examples: list[Any] | None = None) -> None:
        """Record a finding; zero counts are recorded too, so a report shows what was checked."""
        shown = [str(e) for e in (examples or [])[:10]]
        self.findings.append(Finding(kind, int(count), action, shown))

    def count(self, kind: str) -> int:
        return sum(f.count for f in self.findings if f.kind == kind)

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "findings": [f.as_dict() for f in self.findings]}

    def summary_lines(self) -> list[str]:
        lines = []
        for f in self.findings:
            if f.count:
                ex = f" e.g. {', '.join(f.examples[:3])}" if f.examples else ""
                lines.append(f"{f.kind}: {f.count} -> {f.action}{ex}")
        return lines or ["no problems found"]
