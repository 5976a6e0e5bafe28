"""The program's options, with the meanings ``dials.util.options`` gives them.

``-h`` help (with the options and the parameters), ``-c``/``--show-config`` the
configuration, ``-a N``/``--attributes-level=N`` and ``-e N``/``--expert-level=N``
integer levels for it (``-c -a1``, ``-ca2``), ``-v`` more output (counted), ``--phil
FILE`` a parameter file, ``--version``. Everything else is a positional argument: a
file, folder, glob or list of files, a ``.phil`` file, or ``name=value``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from .. import PROGRAM, __version__
from ..errors import SpotSizeAnalysisError


class UsageError(SpotSizeAnalysisError):
    """An option the program does not know, or one without its value."""


@dataclass
class Options:
    """The options given, and every other argument in order."""

    arguments: list[str] = field(default_factory=list)
    phil_files: list[str] = field(default_factory=list)
    show_help: bool = False
    show_config: bool = False
    show_version: bool = False
    attributes_level: int = 0
    expert_level: int = 0
    verbose: int = 0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print usage and exit 2
        message = message.replace("unrecognized arguments:", "unknown option")
        raise UsageError(f"{message}: see {PROGRAM} -h")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROGRAM, add_help=False, allow_abbrev=False)
    add = parser.add_argument
    add("-h", "--help", action="store_true", dest="show_help", help="Show this help.")
    add(
        "-c",
        "--show-config",
        action="store_true",
        dest="show_config",
        help="Show the parameters and their values (with -a and -e for more).",
    )
    add(
        "-a",
        "--attributes-level",
        type=int,
        default=0,
        metavar="N",
        dest="attributes_level",
        help="With -c: show more of each parameter's attributes (1: help texts).",
    )
    add(
        "-e",
        "--expert-level",
        type=int,
        default=0,
        metavar="N",
        dest="expert_level",
        help="With -c: show parameters up to this expert level.",
    )
    add(
        "-v",
        action="count",
        default=0,
        dest="verbose",
        help="More output: what was read, how files were paired, each stage's time.",
    )
    add(
        "--phil",
        action="append",
        default=[],
        metavar="FILE",
        dest="phil_files",
        help="A PHIL file of parameters (command-line parameters override it).",
    )
    add("--version", action="store_true", dest="show_version", help="Show the version.")
    add("arguments", nargs="*")
    return parser


def parse_options(args: list[str]) -> Options:
    """The options and the other arguments of a command line.

    Raises
    ------
    UsageError
        For an unknown option or a missing or malformed value.

    Parameters
    ----------
    args : list of str
        The command line, without the program's name.
    """
    namespace = _parser().parse_intermixed_args(args)
    return Options(**vars(namespace))


def options_help() -> str:
    """The options, one per line, for the help text."""
    lines = []
    for action in _parser()._actions:
        if not action.option_strings:
            continue
        names = ", ".join(
            f"{name} {action.metavar}" if action.metavar else name
            for name in action.option_strings
        )
        lines.append(f"  {names:<30} {action.help}")
    return "\n".join(lines)


def version_line() -> str:
    return f"{PROGRAM} {__version__}"
