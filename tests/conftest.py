"""Shared fixtures: the real DIALS-written files in ../shared/data and their ground truth.

Those files are never copied into the repository; tests that need them skip, saying why,
where the folder is absent. Set DIALS_SPOT_SIZE_ANALYSIS_DATA to point elsewhere.
"""

from __future__ import annotations

# The cctbx-base wheel segfaults if matplotlib or scipy load before its compiled modules
# (doc/dials_facts.md §7); the tests compare against the real flex.histogram, so load it first.
try:
    from scitbx.array_family import flex  # noqa: F401
except ImportError:  # cctbx-base without compiled modules: those comparisons skip
    flex = None

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(
    os.environ.get(
        "DIALS_SPOT_SIZE_ANALYSIS_DATA", REPOSITORY.parent / "shared" / "data"
    )
)

# .refl files recorded in ground_truth.json, with the experiment list that goes with each.
REFLECTION_FILES = {
    "centroid_test_data/indexed.refl": "centroid_test_data/indexed.expt",
    "centroid_test_data/integrated.refl": "centroid_test_data/indexed.expt",
    "I23_P12M_thau/indexed.refl": "I23_P12M_thau/indexed.expt",
    "I23_P12M_thau/strong.refl": "I23_P12M_thau/imported.expt",
    "eiger_therm/strong.refl": "eiger_therm/imported.expt",
}
SHOEBOX_CODES = ("0", "1", "2", "4", "5", "6", "8", "16", "19", "32")

# The installed console script, as a user runs it.
PROGRAM = "dials.spot_size_analysis"
SCRIPT = shutil.which(PROGRAM) or os.path.join(os.path.dirname(sys.executable), PROGRAM)


def console(*args, cwd, timeout: float = 120, **options) -> subprocess.CompletedProcess:
    """Run the console script with ``args`` in ``cwd``, its output captured as text."""
    return subprocess.run(
        [SCRIPT, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        **options,
    )


def _repository_names() -> set[str]:
    """What the repository's folder holds, less what tools make in passing (caches,
    hidden folders)."""
    return {
        name
        for name in os.listdir(REPOSITORY)
        if not name.startswith(".") and name != "__pycache__"
    }


@pytest.fixture(autouse=True)
def _nothing_left_in_the_repository():
    """A test that runs the program must write its outputs elsewhere (tmp_path): an
    output left in the repository would be shipped, or mistaken for a real one."""
    before = _repository_names()
    yield
    left = sorted(_repository_names() - before)
    assert not left, f"the test left {left} in the repository"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "ground_truth.json").is_file():
        pytest.skip(
            f"real DIALS test files not found at {SHARED_DATA} (set DIALS_SPOT_SIZE_ANALYSIS_DATA)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def ground_truth(shared_data) -> dict[str, dict]:
    entries = json.loads((shared_data / "ground_truth.json").read_text())
    return {entry["file"]: entry for entry in entries}
