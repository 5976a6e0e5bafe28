"""Regenerate the generated parts of README.md (and any page with the same markers).

    python doc/update_docs.py          rewrite the files in place
    python doc/update_docs.py --check  exit 1 if any file is out of date (used by the tests)

A generated section sits between ``<!-- BEGIN name -->`` and ``<!-- END name -->``; its
content is made by the function of that name below, by running the real program on the
example data shipped in ``examples/data``, so what the pages show is what the program does.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
PAGES = [REPOSITORY / "README.md"]
EXAMPLE_ARGS = ["examples/data/indexed.expt", "examples/data/indexed.refl"]
_VARIABLE_LINES = re.compile(r"^(Total time: .*)$", re.MULTILINE)


def _run_example(extra_args=()) -> tuple[str, dict]:
    from dials_spot_size_analysis.command_line.spot_size_analysis import run

    with tempfile.TemporaryDirectory() as folder:
        # Run as a user would, in a fresh folder holding a copy of the example data.
        shutil.copytree(REPOSITORY / "examples" / "data", Path(folder) / "examples" / "data")
        out = io.StringIO()
        cwd = os.getcwd()
        os.chdir(folder)
        try:
            with contextlib.redirect_stdout(out):
                run([*EXAMPLE_ARGS, *extra_args])
            document = json.loads(Path(folder, "dials.spot_size_analysis.json").read_text())
        finally:
            os.chdir(cwd)
    return _VARIABLE_LINES.sub("Total time: (varies)", out.getvalue()).rstrip() + "\n", document


def example_log() -> str:
    log, _ = _run_example()
    return "```\n$ dials.spot_size_analysis " + " ".join(EXAMPLE_ARGS) + "\n" + log + "```\n"


def parameters() -> str:
    from dials_spot_size_analysis.phil import phil_scope

    out = io.StringIO()
    phil_scope.show(out=out, attributes_level=1)
    return "```\n" + out.getvalue().rstrip() + "\n```\n"


def json_excerpt() -> str:
    _, document = _run_example()
    excerpt = {key: document[key] for key in ("program", "version", "schema_version", "mask_code", "selection", "statistics")}
    excerpt["selection"] = {k: v for k, v in excerpt["selection"].items() if k != "datasets"}
    histogram = dict(document["histogram"])
    histogram["bin_centers"] = histogram["bin_centers"][:3] + ["..."]
    histogram["counts"] = histogram["counts"][:3] + ["..."]
    excerpt["histogram"] = histogram
    excerpt["by_image"] = document["by_image"][:1] + ["..."]
    text = json.dumps(excerpt, indent=2)
    return "```json\n" + text.replace('"..."', "...") + "\n```\n"


GENERATORS = {"example-log": example_log, "parameters": parameters, "json-excerpt": json_excerpt}
_SECTION = re.compile(r"(<!-- BEGIN (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- END (?P=name) -->)", re.DOTALL)


def regenerate(text: str) -> str:
    cache: dict[str, str] = {}

    def replace(match: re.Match) -> str:
        name = match["name"]
        if name not in cache:
            cache[name] = GENERATORS[name]()
        return match.group(1) + cache[name] + match.group(4)

    return _SECTION.sub(replace, text)


def main(argv: list[str]) -> int:
    stale = []
    for page in PAGES:
        text = page.read_text()
        updated = regenerate(text)
        if updated != text:
            stale.append(page)
            if "--check" not in argv:
                page.write_text(updated)
    if stale and "--check" in argv:
        print("out of date: " + ", ".join(str(p.relative_to(REPOSITORY)) for p in stale) + " (run python doc/update_docs.py)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
