"""Shared fixtures: the catalog index, built once per session from the real clips."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis.configuration import set_hypothesis_home_dir

from audio_tools import CATALOG, catalog_sources
from simsearch.build import build
from simsearch.engine import Engine

# Hypothesis keeps its files outside the repository (the property tests are
# derandomised and use no example database).
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "simsearch-tests-hypothesis")


@pytest.fixture(scope="session")
def catalog_dir(tmp_path_factory) -> Path:
    """The catalog index (the four catalog clips).  Read-only: tests that
    write use `index_copy`."""
    index_dir = tmp_path_factory.mktemp("catalog") / "index"
    report = build(index_dir, catalog_sources(), jobs=1, progress=False)
    assert report.tracks == len(CATALOG) and report.failures == []
    return index_dir


@pytest.fixture(scope="session")
def engine(catalog_dir) -> Engine:
    """An Engine on the catalog index; never written to."""
    return Engine(catalog_dir)


@pytest.fixture
def index_copy(catalog_dir, tmp_path) -> Path:
    """A private copy of the catalog index, for tests that add, remove or damage."""
    dst = tmp_path / "index"
    shutil.copytree(catalog_dir, dst)
    return dst
