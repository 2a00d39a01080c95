"""The report files an experiment writes: ``results.csv``, ``results.md``, ``results.json``, ``pairs.csv``
and figures."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from ..output_set import OutputSet
from .context import Context


@dataclass
class Report:
    """What an experiment found: ``rows`` (``results.csv`` and the Markdown table), per-pair details
    (``pairs.csv``), ``notes`` computed from the rows, and ``figures`` (PNG name -> PIL image)."""

    title: str
    description: str
    columns: list[str]
    rows: list[dict[str, Any]]
    pair_rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    extra: str = ""  # Markdown after the table (e.g. the paper's layout of it)


def fmt(value: Any, digits: int = 4) -> str:
    """Numbers with ``digits`` decimals, None/NaN as ``-``, anything else as text."""
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def _cell(column: str, value: Any) -> str:
    if column.startswith("paper") and isinstance(value, (int, float)):
        return f"{value:g}"  # as printed in the paper
    return fmt(value, 2 if column.startswith("psnr") else 4)


def markdown_table(columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of ``rows`` (numbers to 4 decimals, PSNR to 2, the paper's as printed)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(c, r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _csv_text(columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in columns})
    return buf.getvalue()


#: The names a report's files have: the only files ``experiment`` refuses to replace unasked, replaces or removes.
REPORT_NAMES = re.compile(r"results\.(?:csv|md|json)|pairs\.csv|[\w-]+\.png")


def _listed(out: Path) -> list[str]:
    return json.loads((out / "results.json").read_text())["files"]


def open_report_folder(out: Path, overwrite: bool) -> OutputSet:
    """Hold ``out`` for the whole run and refuse, before any slow work, to replace an earlier report unasked
    (``centrifuge.output_set``: the report is staged and published with ``results.csv`` last)."""
    return OutputSet(out, "experiment", REPORT_NAMES, "results.csv", _listed, overwrite)


def write_report(ctx: Context, report: Report, out_set: OutputSet) -> dict[str, Path]:
    """Write ``results.csv``, ``pairs.csv``, ``results.md``, ``results.json`` and the figures into ``--out``:
    staged in ``out_set``, then published with ``results.csv`` last (its presence marks a finished report)."""
    out = ctx.out
    for name, image in report.figures.items():
        # 256 colours: a third of the size for frame strips, no visible change for charts
        small = image.quantize(256, method=Image.Quantize.MEDIANCUT) if image.mode == "RGB" else image
        small.save(out_set.path(name), format="PNG", optimize=True)
    pair_cols = list(dict.fromkeys(k for r in report.pair_rows for k in r))
    if report.pair_rows:
        out_set.path("pairs.csv").write_text(_csv_text(pair_cols, report.pair_rows))
    elapsed = time.time() - ctx.t0
    s = ctx.s
    md = [f"# {report.title}", "", report.description, "", markdown_table(report.columns, report.rows), ""]
    if report.extra:
        md += [report.extra, ""]
    if report.notes:
        md += ["Computed from the table:", ""] + [f"- {n}" for n in report.notes] + [""]
    md += [f"![{name}]({name})\n" for name in report.figures]
    md += ["## Settings", "",
           f"- command: `{s.command(ctx.name)}`",
           f"- data: {ctx.split_text}",
           f"- clips: {ctx.frames} frames x {ctx.size}x{ctx.size}, up to {s.windows} windows per video, "
           f"{len(ctx.clips)} clips from {len(ctx.clips.videos)} videos, alpha = 0.5, at most {s.pairs} pairs "
           f"per row (seed {s.seed})",
           f"- preset: {s.preset}; device: {ctx.device}; wall time: {elapsed:.0f} s", ""]
    if ctx.models:
        md += ["| model | source | iterations | training time (s) | n | corrector | width | endpoint | weights |",
               "|---|---|---|---|---|---|---|---|---|"]
        for m in ctx.models:
            c = m.config
            md.append(f"| {m.label} | {m.source} | {fmt(m.iterations)} | {fmt(m.train_seconds, 0)} | "
                      f"{c.get('n_layers')} | {c.get('corrector')} | {c.get('width')} | {c.get('final_endpoint')} | "
                      f"{_rel(m.path, out)} |")
        md.append("")
    md_text = "\n".join(md)
    csv_text = _csv_text(report.columns, report.rows)
    summary = {"experiment": ctx.name, "title": report.title, "settings": asdict(s), "frames": ctx.frames,
               "size": ctx.size, "split": ctx.split_text, "elapsed_s": elapsed, "rows": report.rows,
               "notes": report.notes, "models": [asdict(m) for m in ctx.models],
               "videos": [{"path": str(v.path), "held_out": v.held_out, "label": v.label} for v in ctx.videos],
               "train_videos": [str(p) for p in ctx.train_videos],
               "files": [*report.figures, *(["pairs.csv"] if report.pair_rows else []), "results.json",
                         "results.md", "results.csv"]}
    out_set.path("results.json").write_text(json.dumps(_no_nan(summary), indent=2, default=str))
    out_set.path("results.md").write_text(md_text)
    out_set.path("results.csv").write_text(csv_text)
    return out_set.commit()


def _no_nan(x: Any) -> Any:
    """NaN becomes null: JSON has no NaN."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _no_nan(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_no_nan(v) for v in x]
    return x


def _rel(path: str, root: Path) -> str:
    try:
        return os.path.relpath(path, root) if path != "-" else path
    except ValueError:
        return path
