"""PHIL helpers: parameters from ``key=value`` arguments, and back to plain data."""

from __future__ import annotations

from typing import Any, Sequence

from ..errors import SpotSizeAnalysisError
from . import phil_scope

AUTO = "Auto"


class ParameterError(SpotSizeAnalysisError, ValueError):
    """A parameter value that PHIL accepted but the analysis cannot use."""


def plain(value: Any) -> Any:
    """libtbx.Auto and friends as JSON-able Python values ("Auto" stays a string).

    Parameters
    ----------
    value
        A PHIL value (None, a number, a string, ``libtbx.Auto``, a list of them, or
        anything else, which is written with ``str``).

    Returns
    -------
    None, bool, int, float, str or list
        The value as JSON-able data.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if type(value).__name__ == "AutoType":
        return AUTO
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return str(value)


def _phil_arguments(overrides: dict[str, Any]) -> list[str]:
    arguments = []
    for key, value in overrides.items():
        if isinstance(value, (list, tuple)):
            value = " ".join(str(v) for v in value) if value else "None"
        arguments.append(f"{key}={value}")
    return arguments


def extract_parameters(params=None, arguments: Sequence[str] = (), **overrides):
    """A ``phil_scope.extract()`` object with ``arguments`` and ``overrides`` applied.

    Parameters
    ----------
    params : optional
        A ``phil_scope.extract()`` object to start from (default: the defaults).
    arguments : sequence of str
        ``key=value`` strings; unique suffixes of parameter names are accepted.
    **overrides
        The same as keyword arguments (``bins=50``, ``mask_code="Valid+Foreground"``).
    """
    sources = []
    interpreter = phil_scope.command_line_argument_interpreter(home_scope="")
    try:
        for argument in list(arguments) + _phil_arguments(overrides):
            sources.append(interpreter.process(arg=argument))
        base = phil_scope if params is None else phil_scope.format(python_object=params)
        return base.fetch(sources=sources).extract() if sources else base.extract()
    except Exception as error:  # noqa: BLE001 (libtbx raises Sorry, RuntimeError, ...)
        text = " ".join(str(error).split()).replace(
            " (command line argument, line 1)", ""
        )
        raise ParameterError(f"parameters: {text}") from None


def parameters_as_dict(params) -> dict:
    """Nested dict of every parameter value, for the JSON document.

    Parameters
    ----------
    params
        A ``phil_scope.extract()`` object (see ``phil.parameters.extract_parameters``).

    Returns
    -------
    dict
        Scopes as nested dicts, each value as :func:`plain` gives it.
    """
    result: dict = {}
    for locator in phil_scope.format(python_object=params).all_definitions():
        node = result
        *scopes, name = locator.path.split(".")
        for scope in scopes:
            node = node.setdefault(scope, {})
        node[name] = plain(locator.object.extract())
    return result


def changed_parameters(params) -> str:
    """The PHIL text of parameters that differ from the defaults (empty if none).

    Parameters
    ----------
    params
        A ``phil_scope.extract()`` object (see ``phil.parameters.extract_parameters``).

    Returns
    -------
    str
        PHIL text, one definition per line inside its scopes.
    """
    working = phil_scope.format(python_object=params)
    return phil_scope.fetch_diff(source=working).as_str().strip()
