"""The one base class of every error a user can fix (the role DIALS gives ``Sorry``).

The program prints such an error as one sentence and exits with status 1; a pipeline
catches this one type. Each room derives its own errors from it.
"""

from __future__ import annotations


class SpotSizeAnalysisError(Exception):
    """A problem with the input, the parameters or the outputs, described in one
    sentence that names it and, where there is one, what to do about it."""
