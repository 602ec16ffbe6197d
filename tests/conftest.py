"""Fixtures for every test (helpers to import are in tests/helpers.py)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _automaton_cache_in_a_temporary_directory(tmp_path_factory):
    """Runs of the command line (in-process and subprocesses) keep automata here, not in ~/.cache."""
    previous = os.environ.get("BALANCEBEAM_CACHE_DIR")
    os.environ["BALANCEBEAM_CACHE_DIR"] = str(tmp_path_factory.mktemp("automaton-cache"))
    yield
    if previous is None:
        os.environ.pop("BALANCEBEAM_CACHE_DIR", None)
    else:
        os.environ["BALANCEBEAM_CACHE_DIR"] = previous


TIERS = ("unit", "pipeline", "e2e")


def pytest_collection_modifyitems(config, items):
    """Mark each test with its tier, the folder it is in (tests/unit, tests/pipeline, tests/e2e)."""
    for item in items:
        tier = item.path.parent.name
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.path}: every test file belongs in one of tests/{{{','.join(TIERS)}}}/")
        item.add_marker(getattr(pytest.mark, tier))
