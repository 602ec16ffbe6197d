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


@pytest.fixture(scope="session")
def wordnet():
    """nltk's reader over WordNet 3.0 (the text filter's), opened once; a skip saying why without it."""
    from transforms.metadata.sources import SourceError, locate_wordnet, open_wordnet

    try:
        location = locate_wordnet()
    except SourceError as error:
        pytest.skip(f"needs WordNet 3.0 (Debian's wordnet-base, installed by make setup): {error}")
    with open_wordnet(location) as reader:
        yield reader


TIERS = ("unit", "pipeline", "e2e", "integration")


def pytest_addoption(parser):
    parser.addoption(
        "--integration",
        action="store_true",
        help="run tests/integration (the real clients, in their own environment: make test-integration)",
    )


def pytest_collection_modifyitems(config, items):
    """Mark each test with its tier, the folder it is in (tests/unit, pipeline, e2e, integration).

    The integration tier needs its own environment; without --integration its tests are skipped.
    """
    skip = pytest.mark.skip(reason="the integration tier runs with `make test-integration` (--integration)")
    for item in items:
        tier = item.path.parent.name
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.path}: every test file belongs in one of tests/{{{','.join(TIERS)}}}/")
        item.add_marker(getattr(pytest.mark, tier))
        if tier == "integration" and not config.getoption("--integration"):
            item.add_marker(skip)
