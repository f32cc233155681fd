"""Condition specs: what a dataset's labels mean, so a model knows what it can be asked for.

A spec is an ordered list of conditions. Each is either
  * binary: an attribute that is off or on (CelebA's ``Smiling``), values ``["0", "1"]``;
  * categorical: a group with named values (``race``: White, Black, ...; ``digit``: 0..9).
Labels are an int16 array of shape (N, len(spec)): the value's index, or -1 when unknown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from facediff.errors import DataError

MISSING = -1
BINARY_VALUES = ["0", "1"]


@dataclass
class Condition:
    name: str
    kind: Literal["binary", "categorical"] = "binary"
    values: list[str] = field(default_factory=lambda: list(BINARY_VALUES))

    def index_of(self, value: str) -> int:
        """The index of a value given by name (or, for binary, 0/1/true/false/yes/no/-1/+1)."""
        v = str(value).strip()
        if self.kind == "binary":
            key = v.lower()
            if key in ("1", "+1", "true", "yes", "on", "y", "t"):
                return 1
            if key in ("0", "-1", "false", "no", "off", "n", "f"):
                return 0
        elif v in self.values:
            return self.values.index(v)
        else:
            lowered = [x.lower() for x in self.values]
            if v.lower() in lowered:
                return lowered.index(v.lower())
        raise DataError(
            f"invalid value {value!r} for {self.name}; valid: {', '.join(self.values)}"
        )


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
        known = col[col != MISSING]
        counts = {v: int((known == i).sum()) for i, v in enumerate(c.values)}
        row = {"name": c.name, "kind": c.kind, "counts": counts,
               "unknown": int((col == MISSING).sum())}
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


def spec_from_entries(entries: Sequence[object]) -> ConditionSpec:
    """A spec from a config's ``conditions`` list (objects with name, kind, values)."""
    return ConditionSpec([Condition(e.name, e.kind, list(e.values))  # type: ignore[attr-defined]
                          for e in entries])


def parse_requests(spec: ConditionSpec, requests: Sequence[str]) -> list[int]:
    """``["Smiling=1", "race=Asian"]`` -> one value index per condition, -1 = unspecified.

    An unknown attribute or value is an error that lists the valid ones.
    """
    if requests and not len(spec):
        raise DataError("this model is unconditional: it was trained without conditions, "
                        "so --attr cannot be used")
    out = [MISSING] * len(spec)
    for req in requests:
        if "=" not in req:
            raise DataError(f"--attr {req!r} must look like NAME=VALUE (e.g. Smiling=1)")
        name, value = (p.strip() for p in req.split("=", 1))
        cond = spec.get(name)
        j = spec.conditions.index(cond)
        if value.lower() in ("any", "?", ""):
            out[j] = MISSING
            continue
        out[j] = cond.index_of(value)
    return out
