"""dials.spot_size_analysis: how big are my spots, in signal pixels?

A DIALS-native program and library. It reads DIALS reflection (``.refl``) and
experiment (``.expt``) files without needing DIALS itself, counts the shoebox pixels
carrying a mask code for every selected reflection, and histograms those counts exactly
as ``flex.histogram`` does.

Sub-packages, in the direction data flows::

    formats/      bytes -> arrays  (the DIALS file formats; one error type, FileFormatError)
    algorithms/   arrays -> results (flags, mask codes, histogram, statistics, geometry)
    report/       results -> text log, JSON, plotly figures, PNG, HTML
    command_line/ the user: PHIL parameters, messages, exit status
"""

from __future__ import annotations

from .errors import SpotSizeAnalysisError

__version__ = "0.1.0"
PROGRAM = "dials.spot_size_analysis"

__all__ = ["PROGRAM", "SpotSizeAnalysisError", "__version__"]
