"""The console script: ``dials.spot_size_analysis`` starts here.

Only this module and a few of the package's, which use the standard library alone
(the options, standard output, signals), are imported before the program's own imports
(numba, numpy, cctbx: most of a second), so that Ctrl-C or SIGTERM during them ends in
one sentence, not a traceback through the imports or a silent death, and so that
``--version`` and ``-h`` are answered without them. A signal that lands inside a callback from C
during the imports (numba's) cannot be raised there: it is remembered, and ends the run
as soon as the imports are done. Then it is :func:`spot_size_analysis.run`, as in
DIALS.
"""

from __future__ import annotations

import signal
import sys
from typing import Callable

from .. import PROGRAM  # the package's __init__, already loaded: light
from .help import show_help
from .options import UsageError, parse_options, version_line
from .output_paths import OutputError
from .signals import NOTHING_WRITTEN, Terminated, in_compiler, signal_of, stop_for
from .standard_output import printed


def _answered_here(args: list[str]) -> Callable[[], None] | None:
    """What prints the answer to ``--version`` or ``-h`` (or no arguments) on a
    command line the options accept, which the program answers first whatever else
    is asked: answered here, without the program's imports (the help needs only the
    parameters' scope); None for anything else."""
    try:
        options = parse_options(args)
    except UsageError:  # said by the program, in its turn
        return None
    if options.show_version:
        return lambda: print(version_line())
    if options.show_help or not args:
        from ..phil import phil_scope  # libtbx.phil alone: light

        return lambda: show_help(options, phil_scope)
    return None


def main() -> None:
    answer = _answered_here(sys.argv[1:])
    if answer is not None:
        try:
            printed(answer)
        except OutputError as error:
            print(f"{PROGRAM}: {error}", file=sys.stderr)
            raise SystemExit(1) from None
        sys.exit(0)
    received: list[int] = []

    def stop(number: int, frame) -> None:
        received.append(number)
        if in_compiler(frame):
            return  # remembered: the imports end, then the run
        raise stop_for(number)

    def quiet(unraisable) -> None:  # a signal inside a callback from C: remembered
        if not issubclass(unraisable.exc_type, (KeyboardInterrupt, Terminated)):
            sys.__unraisablehook__(unraisable)

    signal.signal(signal.SIGTERM, stop)  # run() installs its own in its turn
    signal.signal(signal.SIGINT, stop)
    sys.unraisablehook = quiet
    try:
        from .spot_size_analysis import run
    except BaseException:  # the signal's own exception, or one it caused
        if not received:  # in an import it broke on its way out
            raise
    if received:
        status, words = NOTHING_WRITTEN[received[0]]
        print(f"{PROGRAM}: {words}", file=sys.stderr)
        raise SystemExit(status)
    try:
        status = run()
    except (KeyboardInterrupt, Terminated) as stop:  # once run() had given back
        # these handlers: its outcome (outputs, sentence) is decided; no traceback
        raise SystemExit(128 + signal_of(stop)) from None
    # The interpreter exits next: a signal during its shutdown would end it without
    # a sentence.
    for number in NOTHING_WRITTEN:
        signal.signal(number, signal.SIG_IGN)
    sys.exit(status)
