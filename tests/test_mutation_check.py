"""``scripts/mutation_check.py`` still finds the code of each of its mutants (a snippet that a refactor moved is
still found; one that changed must be updated, or the check would report it "not applied")."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("mutation_check", ROOT / "scripts" / "mutation_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


SCRIPT = _script()


@pytest.mark.parametrize("mutant", [m for m in SCRIPT.MUTANTS if m.apply is None], ids=lambda m: m.name)
def test_each_mutant_finds_its_code_and_its_tests(mutant):
    assert SCRIPT._holder(ROOT, mutant.where, mutant.old) is not None, mutant.old
    assert mutant.new != mutant.old
    assert all((ROOT / t.split("::")[0]).is_file() for t in mutant.tests)
