"""What one analysis produced: the numbers, and a plain description of their sources.

Everything a report shows is here, as plain data: reports import this, and nothing
here imports a report.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..formats.experiments import Experiment
from .histogram import Histogram
from .spot_sizes import SpotSizeResult


@dataclass
class AnalysisResult:
    """The outcome of one run.

    Attributes
    ----------
    result : SpotSizeResult
        Histogram, statistics, breakdowns and the per-reflection sizes.
    parameters : dict
        Every parameter's value, as nested plain data (the JSON's ``parameters``).
    inputs : list of dict
        Each reflection table and experiment list read, described.
    experiments : list of Experiment
        The experiments of the experiment lists given.
    skipped_files : list of dict
        ``{"file", "reason"}`` of each file that could not be used.
    profile_model : dict
        sigma_b and sigma_m as dials.integrate would compute them, per experiment
        (``algorithms.profile_model.combine_profiles``).
    advice : dict
        The spot-finding limits and the profile model set against the spots, and the
        suggestions they make (``algorithms.advice.advise``).
    """

    result: SpotSizeResult
    parameters: dict
    inputs: list[dict]
    experiments: list[Experiment] = field(default_factory=list)
    skipped_files: list[dict] = field(default_factory=list)
    profile_model: dict = field(default_factory=dict)
    advice: dict = field(default_factory=dict)

    @property
    def histogram(self) -> Histogram:
        return self.result.histogram

    @property
    def statistics(self) -> dict:
        return self.result.statistics

    @property
    def selection(self) -> dict:
        return self.result.selection

    @property
    def sizes(self) -> np.ndarray:
        """The measured size of every counted reflection."""
        return self.result.spot_sizes.size
