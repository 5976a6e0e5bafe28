"""Suggestions as text a user can act on: a ``.phil`` per DIALS program, and log lines.

The ``.phil`` text holds one ``full.parameter.name = value`` per suggestion, each with a
one-line ``#`` reason above it. dials.find_spots and dials.integrate reject parameters
of each other's scopes, so each program gets its own text (:func:`phil_by_program`).
"""

from __future__ import annotations

from ..algorithms import advice
from ..algorithms.profile_model import ALL_PREDICTIONS
from .text import as_sentence

PROGRAMS = (advice.FIND_SPOTS, advice.INTEGRATE)
BLOCK_UNITS = "integration.block.units"  # DIALS's block size is in these


def _value_text(value) -> str:
    if value is None:
        return "default"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def render_phil(suggestions: list, program: str) -> str:
    """The suggestions for one program as PHIL text, each value under its reason.

    Parameters
    ----------
    suggestions : list of dict
        From :func:`advice.collect_suggestions`.
    program : str
        "dials.find_spots" or "dials.integrate".

    Returns
    -------
    str
        PHIL text (comments only where there is nothing to change), ending in a newline.
    """
    lines = [f"# Parameters for {program} suggested by dials.spot_size_analysis"]
    chosen = [item for item in suggestions if item["program"] == program]
    if not chosen:
        lines.append("# The data call for no change: the values in use serve.")
    for item in chosen:
        lines.append(f"# {_one_line(item['reason'])}")
        if item["suggested"] is None:
            lines.append(
                f"# {item['parameter']}: no value can be suggested from the data"
            )
            continue
        lines.append(f"{item['parameter']} = {_value_text(item['suggested'])}")
        if item["parameter"] == advice.BLOCK_SIZE:  # whatever units the user had set
            lines.append(f"{BLOCK_UNITS} = degrees")
    return "\n".join(lines) + "\n"


def phil_by_program(suggestions: list) -> dict:
    """The PHIL text for each program that has suggestions.

    Parameters
    ----------
    suggestions : list of dict
        From :func:`advice.collect_suggestions`.

    Returns
    -------
    dict
        Program name -> PHIL text, e.g. for ``dials.find_spots imported.expt
        find_spots.phil``.
    """
    wanted = {item["program"] for item in suggestions}
    return {
        program: render_phil(suggestions, program)
        for program in PROGRAMS
        if program in wanted
    }


def _limit_line(check: dict) -> str:
    margin = _value_text(check["margin"])
    band = (
        f"within {margin} px below it"
        if check["side"] == "upper"
        else f"at it or up to {margin} px above it"
    )
    if check["change_called_for"]:
        verdict = "a change is called for"
    elif check.get("judged", True):
        verdict = "no change"
    else:
        verdict = "these spots cannot judge it"
    return (
        f"{check['parameter']} = {_value_text(check['value'])} ({check['source']}): "
        f"{check['n_near']} of {check['n_spots']} spots "
        f"({check['fraction_near']:.1%}) {band}; {verdict}"
    )


def _removed_line(check: dict) -> str | None:
    if check.get("removed") is None:
        return None
    fraction = check.get("removed_fraction")
    share = "" if fraction is None else f" ({fraction:.1%} of spots)"
    return f"  dials.find_spots removed {check['removed']} spots{share} at this limit"


def _profile_lines(check: dict) -> list:
    fixed = check.get("fixed_in")
    lines = [
        f"profile model{f' as {fixed} fixes it' if fixed else ''}: "
        f"sigma_b = {check['sigma_b_deg']:.4g} deg "
        f"({check['sigma_b_px']:.3g} px), sigma_m = {check['sigma_m_deg']:.4g} deg "
        f"({check['sigma_m_images']:.3g} images), n_sigma = {check['n_sigma']:g}; box "
        f"{check['box_xy_px']:.1f} px across its longer side x "
        f"{check['box_z_images']:.1f} images"
    ]
    if fixed:
        computed_b, computed_m = check["computed_sigmas_deg"]
        lines.append(
            f"  dials.integrate given {fixed} boxes with these, not the sigmas "
            f"computed from the spots (sigma_b = {computed_b:.4g} deg, sigma_m = "
            f"{computed_m:.4g} deg)"
        )
    lines.extend(f"  {reason}" for reason in check["reasons"])
    if not check["reasons"]:
        lines.append("  the model fits the spots found: no change")
    lines.extend(f"  {line}" for line in memory_lines(check))
    return lines


def memory_lines(check: dict) -> list[str]:
    """How a profile check's shoebox memory stands against the machine's
    (profile.memory_limit), where it was checked: within it (beyond it is one of the
    check's reasons), and for which boxes.

    Parameters
    ----------
    check : dict
        An ``advice.check_profile_model`` result (with ``memory_counted``).

    Returns
    -------
    list of str
        Sentences, none where the memory was not checked.
    """
    allowed = check.get("memory_allowed_gb")
    if allowed is None:
        return []
    lines = []
    if not check["flags"].get("memory_exceeds_limit"):
        lines.append(
            f"the shoeboxes need {check['memory_required_gb']:.3g} GB, within the "
            f"{allowed:.3g} GB allowed ({check['max_memory_usage']:.0%} of "
            f"{check['memory_limit_gb']:.3g} GB)"
        )
    if check.get("memory_counted") != ALL_PREDICTIONS:
        lines.append(
            "(the memory of the reference reflections' boxes: dials.integrate boxes "
            "every prediction, which profile.shoebox_memory=all_predictions counts)"
        )
    return lines


def no_change_sentence(checks: list) -> str:
    """What the advice says where it suggests no change: that the values in use
    serve the spots, or which limits the spots could not judge (spots lie beyond
    them: spot finding used other values).

    Parameters
    ----------
    checks : list of dict
        Results of the ``advice.check_*`` functions.
    """
    unjudged = [
        check["parameter"].rpartition(".")[2]
        for check in checks
        if not check.get("judged", True)
    ]
    if not unjudged:
        return "No parameter change suggested: the values in use serve these spots."
    return (
        f"No parameter change suggested, but these spots cannot judge "
        f"{' or '.join(unjudged)}: spots lie beyond "
        f"{'them' if len(unjudged) > 1 else 'it'}, so spot finding used another "
        "value; give the values it used for this table "
        "(input.find_spots=dials.find_spots.log)."
    )


def render_log_lines(checks: list, summary: str | None = None) -> list:
    """Plain-text lines for the log: each check's figures and verdict, then the
    suggestions.

    Parameters
    ----------
    checks : list of dict
        Results of the ``advice.check_*`` functions.
    summary : str, optional
        :func:`advice.summary_sentence`, printed first.

    Returns
    -------
    list of str
        One log line each, without newlines.
    """
    lines = []
    if summary:
        lines.append(as_sentence(summary))
    for check in checks:
        if "sigma_m_deg" in check:
            lines.extend(_profile_lines(check))
            continue
        lines.append(_limit_line(check))
        removed = _removed_line(check)
        if removed:
            lines.append(removed)
        lines.extend(f"  {reason}" for reason in check["reasons"])
    suggestions = advice.collect_suggestions(*checks)
    if not suggestions:
        lines.append(no_change_sentence(checks))
    for item in suggestions:
        value = (
            "(no value from the data)"
            if item["suggested"] is None
            else f"= {_value_text(item['suggested'])}"
        )
        lines.append(
            f"Suggest {item['program']} {item['parameter']} {value} "
            f"(now {_value_text(item['current'])}): {_one_line(item['reason'])}"
        )
    return lines


def advice_lines(found: dict) -> list:
    """The log's section on spot finding and integration: the plain summary, each
    check's figures and verdict, and the suggestions (or that none is called for).

    Parameters
    ----------
    found : dict
        ``algorithms.advice.advise``'s result (empty: no section).
    """
    if not found or not found.get("checks"):
        return []
    header = ["", "Spot finding and integration, against these spots:"]
    unused = [f"Not used: {item}" for item in found.get("unused", [])]
    notes = [f"Not checked: {item}" for item in found.get("notes", [])]
    return (
        header
        + unused
        + notes
        + render_log_lines(found["checks"], found.get("summary"))
    )
