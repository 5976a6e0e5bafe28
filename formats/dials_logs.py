"""The spot-finding parameters actually used, from a ``dials.find_spots.log`` or a ``.phil``.

Every log line read here is matched against the exact wording DIALS writes (paths in the
dials/dials repository):

- ``The following parameters have been modified:`` followed by the diff PHIL
  (``run`` in ``src/dials/command_line/find_spots.py``);
- ``Setting spotfinder.filter.min_spot_size=%i`` where ``Auto`` is resolved
  (``reflection_table.from_observations`` in ``src/dials/array_family/flex_ext.py``);
- ``Extracted {n} spots``, ``Removed {n} spots with size < {min_spot_size} pixels`` and
  ``Removed {n} spots with size > {max_spot_size} pixels`` (``pixel_list_to_shoeboxes``
  in ``src/dials/algorithms/spot_finding/finder.py``);
- ``Filtered %d of %d spots by peak-centroid distance``: spots kept, of spots before
  (``PeakCentroidDistanceFilter.__call__`` in
  ``src/dials/algorithms/spot_finding/factory.py``; written only where
  ``max_separation`` is not None);
- ``Saved %s reflections to %s`` (``do_spotfinding`` in ``find_spots.py``).

These lines repeat once per imageset (or per image, for stills found without
shoeboxes): counts are summed. A ``.phil`` file is read with ``libtbx.phil`` (pure
Python). Anything else raises :class:`FileFormatError`.
"""

from __future__ import annotations

import os
import re
import stat

from libtbx.phil import parse as parse_phil

from .errors import FileFormatError


class ParameterValueError(FileFormatError):
    """A parameter in a log or PHIL file with a value DIALS would not take."""


class EmptyPhilError(FileFormatError):
    """A PHIL file (empty, or comments only) that defines no parameter."""


MIN_SPOT_SIZE = "spotfinder.filter.min_spot_size"
MAX_SPOT_SIZE = "spotfinder.filter.max_spot_size"
MAX_SEPARATION = "spotfinder.filter.max_separation"
SPOT_FINDING_LIMITS = (MIN_SPOT_SIZE, MAX_SPOT_SIZE, MAX_SEPARATION)
# The parameters this module reports, with the DIALS type of each (factory.py; the
# profile ones from src/dials/algorithms/profile_model/gaussian_rs/model.py).
PARAMETER_TYPES = {
    MIN_SPOT_SIZE: int,
    MAX_SPOT_SIZE: int,
    MAX_SEPARATION: float,
    "profile.gaussian_rs.parameters.n_sigma": float,
    "profile.gaussian_rs.parameters.sigma_b": float,
    "profile.gaussian_rs.parameters.sigma_m": float,
}

# What DIALS accepts (factory.py's value_min=1 for the sizes, value_min=0 for
# max_separation, whose None leaves the filter out; sigmas in degrees), with ends no
# real dataset comes near, so that the checks drawn from them stay bounded.
PARAMETER_RANGES = {
    MIN_SPOT_SIZE: (1, 10**9),
    MAX_SPOT_SIZE: (1, 10**12),
    MAX_SEPARATION: (0.0, 1e6),
    "profile.gaussian_rs.parameters.n_sigma": (0.1, 100.0),
    "profile.gaussian_rs.parameters.sigma_b": (0.0, 90.0),
    "profile.gaussian_rs.parameters.sigma_m": (0.0, 90.0),
}

# dials.integrate uses sigma_b and sigma_m (degrees) fixed together in place of those
# it would compute, and refuses one alone (gaussian_rs/model.py,
# create_from_reflections).
FIXED_SIGMAS = (
    "profile.gaussian_rs.parameters.sigma_b",
    "profile.gaussian_rs.parameters.sigma_m",
)

MODIFIED_HEADER = "The following parameters have been modified:"
_LINES = {
    "min_spot_size_auto": re.compile(
        r"Setting spotfinder\.filter\.min_spot_size=(\d+)"
    ),
    "extracted": re.compile(r"Extracted (\d+) spots"),
    "removed_too_small": re.compile(r"Removed (\d+) spots with size < (\d+) pixels"),
    "removed_too_large": re.compile(r"Removed (\d+) spots with size > (\d+) pixels"),
    "peak_centroid": re.compile(
        r"Filtered (\d+) of (\d+) spots by peak-centroid distance"
    ),
    "saved": re.compile(r"Saved (\d+) reflections to (.+)"),
}
_VERSION = re.compile(r"DIALS \S+")
_PHIL_LINE = re.compile(r"\s*([A-Za-z_][\w.]*\s*(=.*|\{\s*)|\}\s*)?")


MAX_TEXT_BYTES = 1 << 28  # a dials.find_spots log of a huge run is megabytes


def _read_text(path: str) -> str:
    """The file's text; only a regular file is opened (a device such as /dev/zero
    never ends), and only up to MAX_TEXT_BYTES."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise FileFormatError(
                path,
                "is not a regular file: pass a dials.find_spots log or a PHIL file.",
            )
        with open(path, "rb") as handle:
            raw = handle.read(MAX_TEXT_BYTES + 1)
    except OSError as error:
        raise FileFormatError(path, f"cannot be read ({error.strerror}).") from None
    if len(raw) > MAX_TEXT_BYTES:
        raise FileFormatError(
            path,
            f"is larger than {MAX_TEXT_BYTES >> 20} MiB: not a dials.find_spots log "
            "or a PHIL file.",
        )
    if b"\0" in raw:
        raise FileFormatError(
            path, "is a binary file, not a dials.find_spots log or a PHIL file."
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _typed(name: str, text: str, path: str | None, where: str = "") -> object:
    """The value of parameter ``name`` given as ``text``; refused where DIALS would
    not accept it (not a number of its type, outside its range, not finite), naming
    ``where`` it was found. ``min_spot_size = Auto`` (DIALS's default: its choice for
    the detector) is "Auto"; ``max_separation = None`` (spot finding without that
    filter) is "None"; a spot-finding limit of Auto or None otherwise is refused (no
    limit to check the spots against); the profile parameters' Auto and None (their
    defaults: computed from the data) are kept as they are."""
    kind = "a whole number" if PARAMETER_TYPES[name] is int else "a number"
    low, high = PARAMETER_RANGES[name]
    if text.lower() in ("auto", "none"):
        if name == MIN_SPOT_SIZE and text.lower() == "auto":
            return "Auto"
        if name == MAX_SEPARATION and text.lower() == "none":
            return "None"  # DIALS's spot finding then leaves the filter out
        if name not in SPOT_FINDING_LIMITS:
            return text
        meaning = (
            "no such filter in DIALS's spot finding"
            if text.lower() == "none" and name == MIN_SPOT_SIZE
            else "not a value DIALS takes"
        )
        raise ParameterValueError(
            path,
            f"{where}{name} = {text} ({meaning}) leaves no limit to check the spots "
            f"against: give the value used, {kind} from {low:g} to {high:g}"
            + (", or Auto" if name == MIN_SPOT_SIZE else "")
            + ", or leave it out to check DIALS's default.",
        )
    try:
        value = PARAMETER_TYPES[name](text)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:  # NaN fails too
        raise ParameterValueError(
            path,
            f"{where}{name} = {text} is not a value DIALS takes ({kind} from "
            f"{low:g} to {high:g}).",
        )
    return value


def _phil_definitions(text: str, path: str | None) -> dict:
    """Every definition in a PHIL text: full path -> list of words (as text)."""
    try:
        scope = parse_phil(text)
    except RuntimeError as error:
        raise FileFormatError(path, f"does not parse as PHIL ({error}).") from None
    return {
        item.path: [str(word.value) for word in item.object.words]
        for item in scope.all_definitions()
    }


def _recognised(definitions: dict, where: str, path: str | None) -> dict:
    return {
        name: {"value": _typed(name, " ".join(words), path), "source": where}
        for name, words in definitions.items()
        if name in PARAMETER_TYPES
    }


MOST_OTHERS_LISTED = 10  # definitions of other parameters named in one item


def unused_definitions(definitions: dict) -> list[str]:
    """Every definition this program does not use, with why: each one a reader would
    take for one it reads as ``name = value (why)`` (a spot-finding limit under a
    shortened or other path, as DIALS too reads a file's definitions by their full
    path; n_sigma, which sets dials.integrate's box, not this program's; a fixed
    sigma without the other, or of 0), then every other in one item (up to
    MOST_OTHERS_LISTED named). sigma_b and sigma_m both fixed above 0 are used (see
    :func:`fixed_sigmas`).

    Parameters
    ----------
    definitions : dict
        Full path -> list of words, as in the file.
    """
    unused, others = [], []
    both_fixed = (
        _fixed_pair(" ".join(definitions.get(name, [])) for name in FIXED_SIGMAS)
        is not None
    )
    for name, words in definitions.items():
        value = " ".join(words)
        if name in SPOT_FINDING_LIMITS or (name in FIXED_SIGMAS and both_fixed):
            continue
        if name in PARAMETER_TYPES:
            if not _is_set(definitions, name):  # dials.integrate's defaults
                continue
            if name.endswith(".n_sigma"):
                why = f"not applied: set this program's profile.n_sigma={value} for it"
            elif all(_is_set(definitions, sigma) for sigma in FIXED_SIGMAS):
                why = "not applied: a sigma of 0 gives boxes of no size"
            else:
                why = (
                    "not applied: dials.integrate given this file stops, as it needs "
                    "sigma_b and sigma_m fixed together (gaussian_rs/model.py, "
                    "create_from_reflections)"
                )
            unused.append(f"{name} = {value} ({why})")
            continue
        full = [k for k in SPOT_FINDING_LIMITS if k.endswith("." + name.split(".")[-1])]
        if full:
            unused.append(f"{name} = {value} (not {full[0]}: give the full name)")
        else:
            others.append(f"{name} = {value}")
    if others:
        more = len(others) - MOST_OTHERS_LISTED
        unused.append(
            ", ".join(others[:MOST_OTHERS_LISTED])
            + (f" and {more} more" if more > 0 else "")
            + " (not read: this program reads only the spot-finding limits and the "
            "profile parameters)"
        )
    return unused


def _is_set(definitions: dict, name: str) -> bool:
    """Whether a file's ``definitions`` give ``name`` a value (not Auto or None)."""
    return " ".join(definitions.get(name, ["None"])).lower() not in ("auto", "none")


def _fixed_pair(values) -> tuple[float, float] | None:
    """sigma_b and sigma_m (numbers, or their text) where both are numbers above 0,
    as dials.integrate boxes with them; None otherwise."""
    try:
        pair = tuple(float(value) for value in values)
    except (TypeError, ValueError):
        return None
    return pair if all(value > 0 for value in pair) else None


def fixed_sigmas(found: dict | None) -> dict | None:
    """sigma_b and sigma_m as a user's file fixes them for dials.integrate, which then
    uses them instead of computing its own; None where the file does not fix both.

    Parameters
    ----------
    found : dict, optional
        What :func:`read_spot_finding_parameters` read.

    Returns
    -------
    dict or None
        ``sigma_b_deg``, ``sigma_m_deg`` and ``source`` (where they were read).
    """
    parameters = (found or {}).get("parameters") or {}
    entries = [parameters.get(name) for name in FIXED_SIGMAS]
    if not all(entries):
        return None
    pair = _fixed_pair(entry["value"] for entry in entries)
    if pair is None:
        return None
    sigma_b, sigma_m = pair
    return {
        "sigma_b_deg": sigma_b,
        "sigma_m_deg": sigma_m,
        "source": entries[0]["source"],
    }


def _modified_block(lines: list, start: int) -> str:
    """The diff PHIL after the 'modified' header: PHIL-shaped lines, up to the first
    line at depth 0 that is not PHIL (the next log message)."""
    block, depth = [], 0
    for line in lines[start:]:
        if depth == 0 and line.strip() and not _PHIL_LINE.fullmatch(line):
            break
        depth += line.count("{") - line.count("}")
        block.append(line)
    return "\n".join(block)


def _empty_log_result(path: str | None) -> dict:
    return {
        "path": path,
        "kind": "dials.find_spots log",
        "dials_version": None,
        "modified": {},
        "parameters": {},
        "extracted": None,
        "removed_too_small": None,
        "removed_too_large": None,
        "peak_centroid_kept": None,
        "peak_centroid_before": None,
        "removed_by_peak_centroid": None,
        "saved": None,
        "unused": [],
    }


def _add(result: dict, key: str, value: int) -> None:
    result[key] = value if result[key] is None else result[key] + value


def _use(result: dict, name: str, value, where: str) -> None:
    """Take ``value`` for ``name`` from the line ``where``, over what the log said
    before; where that differs (other than an Auto the line resolves), it is named
    as not used, with the line that says so (a log that contradicts itself: pasted
    together, or edited)."""
    value = _typed(name, str(value), result["path"], f"{where}: ")
    previous = result["parameters"].get(name)
    if previous is not None and previous["value"] not in (value, "Auto"):
        result["unused"].append(
            f"{previous['source']}: {name} = {previous['value']} (not used: "
            f"{where} says {value} was)"
        )
    result["parameters"][name] = {"value": value, "source": where}


def _read_line(result: dict, name: str, match, where: str) -> None:
    numbers = [int(group) for group in match.groups() if group.isdigit()]
    if name == "min_spot_size_auto":
        _use(result, MIN_SPOT_SIZE, numbers[0], where)
    elif name == "removed_too_small":
        _add(result, "removed_too_small", numbers[0])
        _use(result, MIN_SPOT_SIZE, numbers[1], where)
    elif name == "removed_too_large":
        _add(result, "removed_too_large", numbers[0])
        _use(result, MAX_SPOT_SIZE, numbers[1], where)
    elif name == "peak_centroid":
        _add(result, "peak_centroid_kept", numbers[0])
        _add(result, "peak_centroid_before", numbers[1])
        _add(result, "removed_by_peak_centroid", numbers[1] - numbers[0])
    else:
        _add(result, name, numbers[0])


def parse_find_spots_log(text: str, path: str | None = None) -> dict:
    """What a ``dials.find_spots.log`` says about the spot-finding limits.

    Parameters
    ----------
    text : str
        The log's text.
    path : str, optional
        The file name, for messages and provenance.

    Returns
    -------
    dict
        ``path``, ``kind`` ("dials.find_spots log"), ``dials_version``, ``modified``
        (every parameter of the diff PHIL: full name -> text), ``parameters`` (full
        name -> {``value``, ``source``}: the limits used, the "Removed" lines taking
        precedence over the "Setting" line and the diff PHIL), ``extracted``,
        ``removed_too_small``, ``removed_too_large``, ``peak_centroid_kept``,
        ``peak_centroid_before``, ``removed_by_peak_centroid``, ``saved`` (ints summed
        over imagesets, or None where the log has no such line) and ``unused`` (values
        a later line of the log contradicts, each with that line).

    Raises
    ------
    FileFormatError
        If no line of the text is one dials.find_spots writes.
    """
    result = _empty_log_result(path)
    lines = text.splitlines()
    name_of_file = os.path.basename(path) if path else "log"
    recognised = 0
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        where = f"{name_of_file} line {number}: {stripped!r}"
        if result["dials_version"] is None and _VERSION.fullmatch(stripped):
            result["dials_version"] = stripped
        if stripped == MODIFIED_HEADER:
            recognised += 1
            definitions = _phil_definitions(_modified_block(lines, number), path)
            result["modified"] = {k: " ".join(v) for k, v in definitions.items()}
            block = f"{name_of_file} line {number}: the modified parameters"
            for key, value in _recognised(definitions, block, path).items():
                result["parameters"].setdefault(key, value)
            continue
        for name, pattern in _LINES.items():
            match = pattern.fullmatch(stripped)
            if match:
                recognised += 1
                _read_line(result, name, match, where)
                break
    if not recognised:
        raise FileFormatError(
            path,
            "has no line that dials.find_spots writes: not a dials.find_spots log.",
        )
    return result


def parse_phil_parameters(text: str, path: str | None = None) -> dict:
    """The spot-finding and profile parameters a ``.phil`` file sets.

    Parameters
    ----------
    text : str
        PHIL text with full parameter paths, as passed to dials.find_spots or
        dials.integrate.
    path : str, optional
        The file name, for messages and provenance.

    Returns
    -------
    dict
        ``path``, ``kind`` ("phil"), ``modified`` (every definition: full name -> text),
        ``parameters`` (the recognised ones: full name -> {``value``, ``source``}) and
        ``unused`` (see :func:`unused_definitions`, each after the file's name).

    Raises
    ------
    FileFormatError
        If the text does not parse as PHIL or defines nothing.
    """
    definitions = _phil_definitions(text, path)
    if not definitions:
        raise EmptyPhilError(
            path,
            "defines no parameter: give the dials.find_spots log or a .phil with the "
            "limits spot finding used, or leave input.find_spots out to check DIALS's "
            "defaults.",
        )
    where = f"{os.path.basename(path) if path else 'phil'}"
    return {
        "path": path,
        "kind": "phil",
        "modified": {name: " ".join(words) for name, words in definitions.items()},
        "parameters": _recognised(definitions, where, path),
        "unused": [f"{where}: {item}" for item in unused_definitions(definitions)],
    }


def read_spot_finding_parameters(path: str | os.PathLike) -> dict:
    """Read a ``dials.find_spots.log`` or a ``.phil`` file (told apart by content).

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    dict
        As :func:`parse_find_spots_log` or :func:`parse_phil_parameters`.

    Raises
    ------
    FileFormatError
        If the file cannot be read or is neither.
    """
    path = os.fspath(path)
    text = _read_text(path)
    stripped = (line.strip() for line in text.splitlines())
    if any(
        line == MODIFIED_HEADER or any(p.fullmatch(line) for p in _LINES.values())
        for line in stripped
    ):
        return parse_find_spots_log(text, path)
    try:
        return parse_phil_parameters(text, path)
    except (ParameterValueError, EmptyPhilError):
        raise
    except FileFormatError:
        raise FileFormatError(
            path, "is neither a dials.find_spots log nor a PHIL file."
        ) from None
