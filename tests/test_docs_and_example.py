"""What the repository shows is what the program does: the README's generated sections
and the shipped example data are reproducible from the scripts beside them."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPOSITORY


def test_readme_generated_sections_are_up_to_date():
    result = subprocess.run(
        [sys.executable, str(REPOSITORY / "doc" / "update_docs.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_starts_with_the_two_commands():
    head = (REPOSITORY / "README.md").read_text().split("## ", 1)[0]
    assert (
        ".venv/bin/pip install . && .venv/bin/dials.spot_size_analysis examples/data/indexed.expt examples/data/indexed.refl"
        in head
    )
    assert '.venv/bin/pip install ".[test]" && .venv/bin/python -m pytest' in head
    assert (
        '.venv/bin/pip install ".[test]" && .venv/bin/python -m pytest'
        in (REPOSITORY / ".ci" / "run").read_text()
    )


def test_example_data_is_regenerated_byte_for_byte(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(REPOSITORY / "examples" / "generate_example.py"),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for name in ("indexed.expt", "indexed.refl"):
        assert (tmp_path / name).read_bytes() == (
            REPOSITORY / "examples" / "data" / name
        ).read_bytes(), name
