"""Evaluation output: a table as CSV and Markdown, and the two plots of the sweeps."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

from facediff.viz.plotting import pyplot

_FLOAT_FMT = {"fid": "{:.2f}", "kid": "{:.5f}", "kid_std": "{:.5f}", "precision": "{:.3f}",
              "recall": "{:.3f}", "control_acc": "{:.3f}"}


def _columns(rows: Sequence[dict[str, object]]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    return cols


def _cell(key: str, value: object) -> str:
    if isinstance(value, float):
        fmt = _FLOAT_FMT.get(key, "{:.3f}" if key.startswith("acc/") else "{:g}")
        return fmt.format(value)
    return str(value)


def markdown_table(rows: Sequence[dict[str, object]]) -> str:
    cols = _columns(rows)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(c, r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def write_tables(rows: Sequence[dict[str, object]], out: Path, name: str = "results") -> None:
    """``out/NAME.csv``, ``out/NAME.md`` and ``out/NAME.json``."""
    out.mkdir(parents=True, exist_ok=True)
    cols = _columns(rows)
    with open(out / f"{name}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, cols)
        w.writeheader()
        w.writerows(rows)
    (out / f"{name}.md").write_text(markdown_table(rows) + "\n")
    (out / f"{name}.json").write_text(json.dumps(list(rows), indent=1) + "\n")



def plot_fid_vs_nfe(rows: Sequence[dict[str, object]], path: Path, title: str) -> Path:
    """One line per sampler: FID against network evaluations per image (log scale)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for sampler in dict.fromkeys(str(r["sampler"]) for r in rows):
        pts = sorted((float(r["nfe"]), float(r["fid"])) for r in rows if r["sampler"] == sampler)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=sampler)
    ax.set_xscale("log")
    ticks = sorted({float(r["nfe"]) for r in rows})
    ax.set_xticks(ticks, [f"{tick:g}" for tick in ticks])
    ax.minorticks_off()
    ax.set_xlabel("network evaluations per image (NFE)")
    ax.set_ylabel("FID (lower is better)")
    n = rows[0]["n"] if rows else "?"
    ax.set_title(f"{title}\n{n} samples per point", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_fid_vs_accuracy(rows: Sequence[dict[str, object]], path: Path, title: str) -> Path:
    """FID against attribute control accuracy, one point per guidance scale."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    xs = [float(r["control_acc"]) for r in rows]  # type: ignore[arg-type]
    ys = [float(r["fid"]) for r in rows]  # type: ignore[arg-type]
    ax.plot(xs, ys, marker="o")
    ax.margins(0.12)  # room for the labels
    for r, x, y in zip(rows, xs, ys, strict=True):
        ax.annotate(f"w={r['guidance']:g}", (x, y), textcoords="offset points", xytext=(5, 5))
    ax.set_xlabel("attribute control accuracy (classifier-judged, higher is better)")
    ax.set_ylabel("FID (lower is better)")
    n = rows[0]["n"] if rows else "?"
    ax.set_title(f"{title}\n{n} samples per point", fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
