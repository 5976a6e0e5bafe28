"""The one exception type for a file that cannot be read."""

from __future__ import annotations

import os

from ..errors import SpotSizeAnalysisError


class FileFormatError(SpotSizeAnalysisError):
    """A file is missing, unreadable, of the wrong kind, truncated or corrupt.

    The message is one sentence that names the file, the problem and, where there is
    one, what to do about it; command-line programs print it as it is.
    """

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{where}{problem}")
