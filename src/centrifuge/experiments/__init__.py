"""The paper's experiments (Sec. 4) as reproducible runs: each trains (or loads) the models it needs, evaluates
them on held-out blends and writes a report (``results.csv``, ``results.md``, ``results.json``, ``pairs.csv``
and figures) into its output folder. The data rules: :mod:`centrifuge.experiments.settings` (the held-out part)
and :mod:`centrifuge.experiments.clips` (clips and pairs).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from ..errors import CentrifugeError
from . import baselines, colors, depth, diversity, feature_distance, frozen, layers, same_source
from .context import Context
from .report import Report, open_report_folder, write_report
from .settings import Settings

__all__ = ["EXPERIMENTS", "Settings", "Report", "run_experiment"]

#: Experiment name -> module (with ``TITLE`` and ``run(ctx) -> Report``), in the paper's order.
EXPERIMENTS: dict[str, ModuleType] = {m.NAME: m for m in (baselines, layers, frozen, depth, colors, diversity,
                                                            same_source, feature_distance)}


def _validate(s: Settings) -> None:
    checks = [(s.pairs >= 1, "--pairs must be at least 1"), (s.windows >= 1, "--windows must be at least 1"),
              (s.max_videos >= 2, "--max-videos must be at least 2"),
              (s.iterations is None or s.iterations >= 1, "--iterations must be at least 1"),
              (s.frames is None or s.frames >= 1, "--frames must be at least 1"),
              (s.size is None or s.size >= 8, "--size must be at least 8"),
              (0.0 < s.val_fraction < 1.0, "--val-fraction must be between 0 and 1"),
              (s.batch_size >= 1, "--batch-size must be at least 1")]
    for ok, message in checks:
        if not ok:
            raise CentrifugeError(message)


def run_experiment(name: str, settings: Settings) -> tuple[Report, dict[str, Path]]:
    """Run experiment ``name`` and write its report into ``settings.out``; returns the report and the files."""
    if name not in EXPERIMENTS:
        raise CentrifugeError(f"unknown experiment {name!r} (choose from {', '.join(EXPERIMENTS)})")
    _validate(settings)
    out_set = open_report_folder(Path(settings.out), settings.overwrite)  # held until the report is published
    try:
        ctx = Context(settings, name)
        report = EXPERIMENTS[name].run(ctx)
        return report, write_report(ctx, report, out_set)
    except BaseException:
        out_set.abort()
        raise
