"""The help text (``-h``, or no arguments), which needs none of the program's own
imports (numba, numpy, the readers: most of its start-up): the console script prints
it from here before making them, and the program from here too, so both print the
same."""

from __future__ import annotations

import ast
from pathlib import Path

from .. import PROGRAM
from .options import Options, options_help

USAGE = (
    f"{PROGRAM} [options] [experiments.expt] reflections.refl [parameter=value ...] "
    "[file.phil]"
)
PROGRAM_MODULE = Path(__file__).with_name("spot_size_analysis.py")


def program_help() -> str:
    """The program module's docstring, its help as DIALS programs have it, read from
    its source: importing the module would make every import help does not need."""
    return ast.get_docstring(ast.parse(PROGRAM_MODULE.read_text()), clean=False)


def show_help(options: Options, phil) -> None:
    """Print the usage, the program's help, its options and its parameters (with
    their help texts, up to ``options.expert_level``).

    Parameters
    ----------
    options : Options
        The command line's options (attributes and expert levels).
    phil : libtbx.phil scope
        The parameters shown.
    """
    print(f"Usage: {USAGE}\n")
    print(program_help().strip())
    print(f"\nOptions:\n{options_help()}")
    print(
        "\nParameters (name=value; any unique suffix of a name works, e.g. bins=100):\n"
    )
    phil.show(
        attributes_level=max(options.attributes_level, 1),
        expert_level=options.expert_level,
    )
