"""Do two versions of the program write the same outputs? For refactoring.

    python benchmarks/same_outputs.py snapshot DIR   run every case, keep the outputs in DIR
    python benchmarks/same_outputs.py compare DIR    run every case again, compare with DIR

Each case runs the installed console script in a fresh folder on real DIALS files from
``../shared/data`` (every reflection file, alone and with each experiment list beside
it), the shipped example, and many files at once with ``nproc=2``. The log, the JSON, the
HTML, the standard error and the exit status are compared byte for byte, apart from the
lines that hold a run's timing. ``compare`` exits 1 and names every case that differs.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
SHARED_DATA = REPOSITORY.parent / "shared" / "data"
PROGRAM = "dials.spot_size_analysis"
OUTPUTS = ("dials.spot_size_analysis.log", "dials.spot_size_analysis.json")
OUTPUTS_HTML = "dials.spot_size_analysis.html"
_TIMINGS = re.compile(rb"Total time: [0-9.]+ s")


def cases() -> dict[str, list[str]]:
    """Case name -> arguments (paths absolute)."""
    found: dict[str, list[str]] = {}
    example = REPOSITORY / "examples" / "data"
    found["example"] = [str(example / "indexed.expt"), str(example / "indexed.refl")]
    found["example-options"] = [
        *found["example"],
        "bins=40",
        "data_max=Auto",
        "flags.require=None",
        "mask_code=Valid+Foreground",
    ]
    for folder in sorted(p for p in SHARED_DATA.iterdir() if p.is_dir()):
        tables = sorted(folder.glob("*.refl"))
        lists = sorted(folder.glob("*.expt"))
        for table in tables:
            found[f"{folder.name}/{table.name}"] = [str(table)]
            for experiments in lists:
                name = f"{folder.name}/{table.name}+{experiments.name}"
                found[name] = [str(experiments), str(table)]
        found[f"{folder.name}/"] = [str(folder)]
    found["all-folders-nproc2"] = [str(SHARED_DATA), "nproc=2"]
    return found


def run_case(arguments: list[str]) -> dict[str, bytes]:
    """The outputs of one run, by name (missing outputs are absent)."""
    with tempfile.TemporaryDirectory() as folder:
        done = subprocess.run(
            [
                shutil.which(PROGRAM) or PROGRAM,
                *arguments,
                f"output.html={OUTPUTS_HTML}",
            ],
            cwd=folder,
            capture_output=True,
        )
        result = {
            "exit": str(done.returncode).encode(),
            "stdout": _TIMINGS.sub(b"Total time: T", done.stdout),
            "stderr": done.stderr,
        }
        for name in (*OUTPUTS, OUTPUTS_HTML):
            path = Path(folder, name)
            if path.exists():
                result[name] = _TIMINGS.sub(b"Total time: T", path.read_bytes())
    return result


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("snapshot", "compare"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    mode, directory = argv[0], Path(argv[1])
    different = []
    for name, arguments in cases().items():
        outputs = run_case(arguments)
        key = name.replace("/", "_")
        if mode == "snapshot":
            (directory / key).mkdir(parents=True, exist_ok=True)
            for output, content in outputs.items():
                (directory / key / output).write_bytes(content)
            continue
        before = {p.name: p.read_bytes() for p in (directory / key).glob("*")}
        if before != outputs:
            changed = sorted(
                k for k in set(before) | set(outputs) if before.get(k) != outputs.get(k)
            )
            different.append(f"{name}: {', '.join(changed)}")
    if mode == "snapshot":
        print(json.dumps({"cases": len(cases()), "snapshot": str(directory)}))
        return 0
    for line in different:
        print(line)
    print(f"{len(cases()) - len(different)} of {len(cases())} cases identical")
    return 1 if different else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
