"""Condition specs: what a dataset's labels mean, so a model knows what it can be asked for.

A spec is an ordered list of conditions (facediff.config.Condition: binary or categorical).
Labels are an int16 array of shape (N, len(spec)): the value's index, or ``UNSPECIFIED`` (-1)
where the value is unknown or not asked for. A model sees an unspecified condition as its
own state, so any subset of conditions can be fixed at sampling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from facediff.config import BINARY_VALUES, Condition
from facediff.errors import DataError

UNSPECIFIED = -1  # a label's value index when the value is unknown or not requested


@dataclass
class ConditionSpec:
    conditions: list[Condition] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.conditions)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.conditions]

    def get(self, name: str) -> Condition:
        for c in self.conditions:
            if c.name == name:
                return c
        lowered = {c.name.lower(): c for c in self.conditions}
        if name.lower() in lowered:
            return lowered[name.lower()]
        import difflib

        close = difflib.get_close_matches(name, self.names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DataError(f"unknown condition {name!r}{hint}; valid: {', '.join(self.names)}")

    def select(self, names: Sequence[str], labels: np.ndarray) -> tuple[ConditionSpec,
                                                                        np.ndarray]:
        """Keep only ``names`` (in that order); an unknown name is an error listing the valid."""
        idx = [self.conditions.index(self.get(n)) for n in names]
        return ConditionSpec([self.conditions[i] for i in idx]), labels[:, idx]

    def to_list(self) -> list[dict]:
        return [{"name": c.name, "kind": c.kind, "values": list(c.values)}
                for c in self.conditions]

    @classmethod
    def from_list(cls, items: Sequence[dict]) -> ConditionSpec:
        return cls([Condition(d["name"], d.get("kind", "binary"),
                              list(d.get("values", BINARY_VALUES))) for d in items])


def label_stats(spec: ConditionSpec, labels: np.ndarray) -> list[dict]:
    """Per condition: counts per value, the number unknown, and (binary) the positive rate."""
    out = []
    for j, c in enumerate(spec.conditions):
        col = labels[:, j]
        known = col[col != UNSPECIFIED]
        counts = {v: int((known == i).sum()) for i, v in enumerate(c.values)}
        row = {"name": c.name, "kind": c.kind, "counts": counts,
               "unknown": int((col == UNSPECIFIED).sum())}
        if c.kind == "binary":
            row["positive_rate"] = float(counts["1"] / len(known)) if len(known) else None
        out.append(row)
    return out


def format_stats(stats: list[dict]) -> str:
    lines = []
    for s in stats:
        if s["kind"] == "binary":
            rate = "n/a" if s["positive_rate"] is None else f"{100 * s['positive_rate']:.1f}%"
            lines.append(f"  {s['name']:<22} binary       positive {rate:>6}  "
                         f"(on {s['counts']['1']}, off {s['counts']['0']}, "
                         f"unknown {s['unknown']})")
        else:
            vals = ", ".join(f"{k} {v}" for k, v in s["counts"].items())
            lines.append(f"  {s['name']:<22} categorical  {vals}; unknown {s['unknown']}")
    return "\n".join(lines)


def spec_from_conditions(conditions: Sequence[Condition]) -> ConditionSpec:
    """A spec from a config's ``conditions`` list (copies, so the spec never edits the
    config)."""
    return ConditionSpec([Condition(c.name, c.kind, list(c.values)) for c in conditions])


def parse_requests(spec: ConditionSpec, requests: Sequence[str]) -> list[int]:
    """``["Smiling=1", "race=Asian"]`` -> one value index per condition (UNSPECIFIED where
    not requested).

    An unknown attribute or value is an error that lists the valid ones.
    """
    if requests and not len(spec):
        raise DataError("this model is unconditional: it was trained without conditions, "
                        "so --attr cannot be used")
    out = [UNSPECIFIED] * len(spec)
    for req in requests:
        if "=" not in req:
            raise DataError(f"--attr {req!r} must look like NAME=VALUE (e.g. Smiling=1)")
        name, value = (p.strip() for p in req.split("=", 1))
        cond = spec.get(name)
        j = spec.conditions.index(cond)
        if value.lower() in ("any", "?", ""):
            out[j] = UNSPECIFIED
            continue
        out[j] = cond.index_of(value)
    return out
