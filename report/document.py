"""The JSON document: stable, versioned, described by ``schema.json`` beside this file."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterator

from .. import PROGRAM, __version__
from ..algorithms.mask_codes import mask_code_value
from ..algorithms.result import AnalysisResult
from .plots import report_figures

SCHEMA_VERSION = 2
DATASET_KEYS = (
    "name",
    "n_rows",
    "require",
    "exclude",
    "require_was_automatic",
    "n_selected",
    "n_without_pixel_data",
    "n_counted",
    "size_source",
    "size_source_note",
    "n_bbox_disagreements",
    "resolution_note",
)
SCHEMA_FILE = Path(__file__).with_name("schema.json")


_PLAIN = frozenset({str, int, bool, type(None)})


def finite(value):
    """``value`` with every NaN or infinity (which JSON lacks) replaced by None.

    Parameters
    ----------
    value
        Plain data: dicts, lists, numbers, strings, None.
    """
    kind = type(value)
    if kind in _PLAIN:  # most of a document of thousands of files: nothing to do
        return value
    if kind is dict:
        return {k: finite(v) for k, v in value.items()}
    if kind is list:
        return [finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):  # JSON writes a tuple as a list
        return [finite(v) for v in value]
    return value


def json_document(analysis: AnalysisResult, replace_non_finite: bool = True) -> dict:
    """The JSON document of an analysis (schema: ``schema.json`` beside this file).

    Parameters
    ----------
    analysis : AnalysisResult
        The result of :func:`dials_spot_size_analysis.api.analyse` or of the program.
    replace_non_finite : bool
        Replace NaN and infinity by None. False leaves them to a writer that replaces
        them where it finds them (:func:`json_text`, :func:`compact_json_pieces`),
        rather than copying every number of a document of thousands of files first.

    Returns
    -------
    dict
        Plain data, as ``json.dump`` writes it; NaN and infinity become None (unless
        ``replace_non_finite`` is False).
    """
    result = analysis.result
    histogram = result.histogram
    selection = dict(result.selection)
    selection["datasets"] = [
        {key: getattr(dataset, key) for key in DATASET_KEYS}
        for dataset in result.datasets
    ]
    document = {
        "program": PROGRAM,
        "version": __version__,
        "schema_version": SCHEMA_VERSION,
        "parameters": analysis.parameters,
        "mask_code": {
            "names": result.mask_code,
            "value": mask_code_value(result.mask_code),
        },
        "inputs": analysis.inputs,
        "skipped_files": analysis.skipped_files,
        "selection": selection,
        "histogram": {
            "data_min": histogram.data_min,
            "data_max": histogram.data_max,
            "n_bins": histogram.n_bins,
            "bin_width": histogram.bin_width,
            "bin_centers": histogram.bin_centers.tolist(),
            "counts": histogram.counts.tolist(),
            "n_out_of_range": histogram.n_out_of_range,
        },
        "statistics": result.statistics,
        "by_experiment": result.by_experiment,
        "by_panel": result.by_panel,
        "by_image": result.by_image,
        "by_resolution": result.by_resolution,
        "spot_shape": spot_shape_document(result),
        "profile_model": analysis.profile_model,
        "advice": advice_document(analysis.advice),
        "plots": report_figures(analysis),
    }
    if not replace_non_finite:
        return document
    # Only these hold computed floats that could be NaN or infinite (the by_experiment,
    # by_panel and by_image groups are statistics of integer sizes, always finite, and
    # hold one entry per experiment: thousands in serial crystallography).
    for key in (
        "statistics",
        "histogram",
        "by_resolution",
        "spot_shape",
        "profile_model",
        "advice",
        "plots",
    ):
        document[key] = finite(document[key])
    return document


def advice_document(advice: dict) -> dict:
    """The ``advice`` object: the plain summary, the suggestions (parameter, current
    and suggested value, reason, evidence), and every check with its figures.

    Parameters
    ----------
    advice : dict
        ``AnalysisResult.advice`` (``algorithms.advice.advise``); None or empty gives
        an empty object.

    Returns
    -------
    dict
        ``summary`` (str or None), ``suggestions``, ``checks``, ``unused`` (the
        definitions of the user's .phil not used, each with why) and ``notes`` (what
        was asked but could not be checked).
    """
    advice = advice or {}
    return {
        "summary": advice.get("summary"),
        "suggestions": advice.get("suggestions", []),
        "checks": advice.get("checks", []),
        "unused": advice.get("unused", []),
        "notes": advice.get("notes", []),
    }


def spot_shape_document(result) -> dict:
    """The ``spot_shape`` object: one entry per quantity, and what rows they cover.

    Parameters
    ----------
    result : SpotSizeResult
        The summary (``algorithms.spot_sizes.summarise``).

    Returns
    -------
    dict
        Per quantity, its summary, and ``counts``; empty where no shape was summarised.
    """
    summary = result.spot_shape
    if not summary:
        return {}
    counts = {key: value for key, value in summary.items() if key != "quantities"}
    counts["n_bbox_disagreements"] = sum(
        d.n_bbox_disagreements for d in result.datasets
    )
    return {**summary["quantities"], "counts": counts}


# Entries per piece of a long list: a few hundred entries make about 100 KB of text,
# and the memory each piece's text leaves is taken again by the next; pieces of
# thousands of entries took fresh pages from the system each time (10,000 stills'
# JSON: 0.12-0.22 s written in pieces of 200 entries, 0.16-0.40 s in pieces of 10,000).
ITEMS_PER_PIECE = 200


def compact_json_pieces(value) -> Iterator[str]:
    """``json.dumps(finite(value), separators=(",", ":"))`` in pieces, to be written one
    after another: long lists (a document's files, datasets and experiments: one entry
    each) a slice at a time, so that a document describing a million files never exists
    as one string of hundreds of megabytes. The pieces join to exactly json.dumps's text.

    Parameters
    ----------
    value
        Anything ``json.dumps`` accepts.

    Returns
    -------
    iterator of str
        The pieces of the JSON text.
    """
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        yield "{"
        for number, (key, item) in enumerate(value.items()):
            yield ("," if number else "") + json.dumps(key) + ":"
            yield from compact_json_pieces(item)
        yield "}"
    elif isinstance(value, list) and len(value) > ITEMS_PER_PIECE:
        yield "["
        for start in range(0, len(value), ITEMS_PER_PIECE):
            yield ("," if start else "") + _compact(
                value[start : start + ITEMS_PER_PIECE]
            )[1:-1]
        yield "]"
    else:
        yield _compact(value)


def _compact(value) -> str:
    return json_text(value, separators=(",", ":"), check_circular=False)


def json_text(value, **options) -> str:
    """``json.dumps(finite(value), **options)``, without copying ``value`` where it
    holds no NaN or infinity (the usual case: it is then encoded once, and checked as
    it is encoded).

    Parameters
    ----------
    value
        Anything ``json.dumps`` accepts.
    **options
        Further arguments of ``json.dumps`` (e.g. ``indent``).
    """
    try:
        return json.dumps(value, allow_nan=False, **options)
    except ValueError:  # a NaN or infinity: null, as JSON has neither
        return json.dumps(finite(value), allow_nan=False, **options)
