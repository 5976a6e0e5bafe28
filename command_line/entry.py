"""The console script: ``dials.spot_size_analysis`` starts here.

Only this module (and the standard library) is imported before the program's own
imports (numba, numpy, cctbx: most of a second), so that Ctrl-C or SIGTERM during them
ends in one sentence, not a traceback through the imports or a silent death. Then it is
:func:`spot_size_analysis.run`, as in DIALS.
"""

from __future__ import annotations

import signal
import sys

from .signals import Terminated


def _terminated(number: int, frame) -> None:
    raise Terminated()


def main() -> None:
    signal.signal(signal.SIGTERM, _terminated)  # run() installs its own in its turn
    try:
        from .spot_size_analysis import run
    except KeyboardInterrupt:
        print(
            "dials.spot_size_analysis: interrupted: no output was written",
            file=sys.stderr,
        )
        raise SystemExit(130) from None
    except Terminated:
        print(
            "dials.spot_size_analysis: terminated (SIGTERM): no output was written",
            file=sys.stderr,
        )
        raise SystemExit(143) from None
    sys.exit(run())
