"""The one parameter scope of dials.spot_size_analysis, loaded once from its .phil file."""

from __future__ import annotations

from pathlib import Path

import libtbx.phil  # pure Python: safe to import in any order (doc/dials_facts.md §7)

PHIL_FILE = Path(__file__).with_name("spot_size_analysis.phil")
phil_scope = libtbx.phil.parse(PHIL_FILE.read_text(), process_includes=False)
