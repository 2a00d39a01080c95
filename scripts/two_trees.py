"""What the scripts that time two source trees side by side share (`bench_separate.py`, `bench_model_call.py`):
their first arguments, and the environment that runs a tree.

    git archive <commit> src | tar -x -C /tmp/before
    python scripts/bench_separate.py clip.mp4 --before /tmp/before/src
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def parser(doc: str) -> argparse.ArgumentParser:
    """A parser with the clip, the two trees (``--before``; ``--after``, by default this checkout's ``src``) and
    ``--rounds``, described by ``doc``'s first line."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("clip", type=Path)
    p.add_argument("--before", type=Path, required=True, help="the other tree's src folder")
    p.add_argument("--after", type=Path, default=Path(__file__).resolve().parents[1] / "src")
    p.add_argument("--rounds", type=int, default=3)
    return p


def tree_env(tree: Path) -> dict[str, str]:
    """This process's environment, with ``tree`` as the package's source."""
    return {**os.environ, "PYTHONPATH": str(tree)}
