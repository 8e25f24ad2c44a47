"""The rows of a compare grid: a variant trained with one user-tower backbone (an "arm").

An arm's key names it in report.json (aggregate, significance) and under REPORT/runs/{split}/:
- `variant` for the scratch tower, and for the variants with no tower to choose (pop, content-knn: trained
  once whatever the backbones): the keys and Run directories of every report written before backbones became
  an axis, so their finished cells are reused as they are;
- `variant/backbone` for any other tower (e.g. `fused-id/smollm2-2L-lora`): a Run directory one level deeper.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clip4rec.evaluate.significance import SIG_METRICS, paired_test, pooled_pairs
from clip4rec.model.backbone import SCRATCH
from clip4rec.model.build import TRAINING_FREE


@dataclass(frozen=True)
class Arm:
    variant: str
    backbone: str | None  # a backbone name (model.backbone); None: a training-free variant (no tower to choose)

    @property
    def key(self) -> str:
        return self.variant if self.backbone in (None, SCRATCH) else f"{self.variant}/{self.backbone}"

    @classmethod
    def from_key(cls, key: str) -> Arm:
        variant, _, backbone = key.partition("/")
        return cls(variant, backbone or (None if variant in TRAINING_FREE else SCRATCH))


def grid_arms(variants: Sequence[str], backbones: Sequence[str]) -> list[Arm]:
    """Variant-major, so a variant's towers sit side by side; a training-free variant gets one arm."""
    return [Arm(v, None) if v in TRAINING_FREE else Arm(v, b) for v in variants
            for b in ([None] if v in TRAINING_FREE else backbones)]


def arm_keys(report: dict[str, Any]) -> list[str]:
    """A report's rows, in order: its arms (reports written before backbones: its variants, which are the same)."""
    return report["grid"].get("arms") or report["grid"]["variants"]


def cell_dir(out: Path, split: str, key: str, seed: int) -> Path:
    """The Run directory of one (split, arm, seed) cell; `key` is an arm's key (a bare variant for scratch)."""
    return out / "runs" / split / key / f"seed{seed}"


def paired_tests(out: Path, split: str, key_a: str, key_b: str, seeds: Sequence[int]) -> dict[str, Any]:
    """{metric: paired test of arm a against arm b}: per user, seeds pooled by averaging each user's values."""
    pairs = [(cell_dir(out, split, key_a, s), cell_dir(out, split, key_b, s)) for s in seeds]
    return {metric: paired_test(*pooled_pairs(pairs, metric)[:2]) for metric in SIG_METRICS}
