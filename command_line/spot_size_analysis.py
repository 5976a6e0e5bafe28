"""
How big are my spots? Counts, for every selected reflection, the shoebox pixels carrying a
mask code (by default Foreground: the signal pixels found by spot finding, summed over all
images a spot touches) and histograms those sizes exactly as the DIALS "Python scripting"
tutorial does with scitbx flex.histogram, with statistics and breakdowns per experiment,
panel, image and resolution shell.

Reflection files need shoeboxes: dials.find_spots writes them (strong.refl) and dials.index
and dials.refine pass them on; dials.integrate keeps them only with
integration.debug.output=True.

Examples::

  dials.spot_size_analysis indexed.expt indexed.refl

  dials.spot_size_analysis indexed.expt indexed.refl bins=100 data_max=Auto

  dials.spot_size_analysis imported.expt strong.refl mask_code=Valid+Foreground

  dials.spot_size_analysis refined.expt refined.refl flags.require=used_in_refinement

  dials.spot_size_analysis indexed.expt indexed.refl flags.require=None flags.exclude=overloaded
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field

import libtbx.phil

from .. import __version__
from ..algorithms.flags import UnknownFlagError
from ..algorithms.spot_sizes import SelectionError
from ..api import (
    PROGRAM,
    AnalysisResult,
    ParameterError,
    _parameters_for_analysis,
    analyse_tables,
    changed_parameters,
    normalise_choice_argument,
)
from ..formats import FileFormatError, read_experiments, read_reflections
from ..formats.source import COMPRESSED_SUFFIXES, describe_content
from ..phil import phil_scope

logger = logging.getLogger(PROGRAM)
help_message = __doc__
usage = f"{PROGRAM} [options] [experiments.expt] reflections.refl [parameter=value ...] [file.phil]"


_UMASK = os.umask(0)
os.umask(_UMASK)


class UserError(Exception):
    """A problem the user can fix: printed as one sentence, exit status 1."""


@dataclass
class CommandLine:
    reflection_files: list[str] = field(default_factory=list)
    experiment_files: list[str] = field(default_factory=list)
    phil_sources: list = field(default_factory=list)
    show_help: int = 0
    show_config: bool = False
    attributes_level: int = 0
    expert_level: int = 0
    verbose: int = 0


def _file_kind(path: str) -> str:
    """'reflections', 'experiments' or 'phil', from the content (DIALS recognises
    positional files by content, not by name)."""
    name = path.lower()
    for suffix in COMPRESSED_SUFFIXES:
        if name.endswith(suffix):
            inner = name[: -len(suffix)]
            if inner.endswith(".expt") or inner.endswith(".json"):
                return "experiments"
            return "reflections"
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError as error:
        raise UserError(f"{path}: cannot be read ({error.strerror})") from None
    if not head:
        raise UserError(f"{path}: is empty (0 bytes): was it written completely?")
    if head[:1] in (b"\x80", b"\x93", b"\xdc", b"\xdd") or head.startswith(b"\x89HDF"):
        return "reflections"  # msgpack, or a legacy pickle / HDF5 that the reader explains
    if head.lstrip()[:1] == b"{":
        return "experiments"
    try:
        libtbx.phil.parse(head.decode("utf-8"), process_includes=False)
        return "phil"
    except Exception:  # not PHIL either: say what it looks like
        pass
    raise UserError(
        f"{path}: is not a DIALS experiment list, reflection table or PHIL file: it looks like {describe_content(head)}"
    )


def parse_command_line(args: list[str], phil=phil_scope) -> CommandLine:
    command_line = CommandLine()
    interpreter = phil.command_line_argument_interpreter(home_scope="")
    arguments = iter(args)
    for argument in arguments:
        if argument in ("-h", "--help") or (argument.startswith("-h") and set(argument[1:]) == {"h"}):
            command_line.show_help = max(1, argument.count("h")) if argument != "--help" else 1
        elif argument == "-c":
            command_line.show_config = True
        elif argument.startswith("-a") and set(argument[1:]) == {"a"}:
            command_line.attributes_level += len(argument) - 1
        elif argument.startswith("-e") and set(argument[1:]) == {"e"}:
            command_line.expert_level += len(argument) - 1
        elif argument.startswith("-v") and set(argument[1:]) == {"v"}:
            command_line.verbose += len(argument) - 1
        elif argument == "--phil" or argument.startswith("--phil="):
            path = argument.partition("=")[2] or next(arguments, None)
            if not path:
                raise UserError("--phil needs a file name")
            command_line.phil_sources.append(_phil_file(path))
        elif argument.startswith("-") and not os.path.exists(argument):
            raise UserError(f"unknown option {argument}: see {PROGRAM} -h")
        elif "=" in argument and not os.path.exists(argument):
            try:
                command_line.phil_sources.append(interpreter.process(arg=normalise_choice_argument(argument)))
            except Exception as error:  # libtbx raises Sorry or RuntimeError
                raise UserError(_phil_message(error, argument)) from None
        elif not os.path.exists(argument):
            raise UserError(f"{argument}: no such file or directory (parameters are given as name=value)")
        elif os.path.isdir(argument):
            raise UserError(f"{argument}: is a directory: give the .expt and .refl files in it")
        else:
            kind = _file_kind(argument)
            if kind == "phil":
                command_line.phil_sources.append(_phil_file(argument))
            elif kind == "experiments":
                command_line.experiment_files.append(argument)
            else:
                command_line.reflection_files.append(argument)
    return command_line


def _phil_file(path: str):
    try:
        with open(path, encoding="utf-8") as handle:
            return libtbx.phil.parse(handle.read(), source_info=path, process_includes=False)
    except OSError as error:
        raise UserError(f"{path}: cannot be read ({error.strerror})") from None
    except Exception as error:
        raise UserError(_phil_message(error, path)) from None


def _phil_message(error: Exception, where: str) -> str:
    text = " ".join(str(error).split())
    text = text.replace(" (command line argument, line 1)", "")
    if "Unknown command line parameter definition" in text or "Unknown parameter" in text:
        return f"{where}: unknown parameter: see {PROGRAM} -c for the parameters and their names"
    return f"{where}: {text}"


def _extract(command_line: CommandLine, phil):
    try:
        working = phil.fetch(sources=command_line.phil_sources) if command_line.phil_sources else phil
        params = working.extract()
    except Exception as error:
        raise UserError(_phil_message(error, "parameters")) from None
    return params


@contextlib.contextmanager
def atomic_output(path: str):
    """A temporary file beside ``path``, renamed onto it only if the block succeeds."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    except OSError as error:
        raise UserError(f"{path}: cannot be written ({error.strerror}): choose another output path") from None
    os.close(handle)
    try:
        yield temporary
        os.chmod(temporary, 0o666 & ~_UMASK)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise


def _check_writable(path: str | None) -> None:
    if not path:
        return
    if os.path.isdir(path):
        raise UserError(f"{path}: is a directory: choose a file name for this output")
    try:
        with tempfile.TemporaryFile(dir=os.path.dirname(os.path.abspath(path))):
            pass
    except OSError as error:
        raise UserError(f"{path}: cannot be written ({error.strerror}): choose another output path") from None


@contextlib.contextmanager
def logging_to(log_path: str | None, verbose: int):
    """Informative lines to the terminal (stdout) and the log file, as DIALS programs do;
    the log file appears only when the run succeeds."""
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter("%(message)s"))
    handlers = [console]
    with contextlib.ExitStack() as stack:
        if log_path:
            temporary = stack.enter_context(atomic_output(log_path))
            file_handler = logging.FileHandler(temporary, mode="w", encoding="utf-8")
            file_handler.setFormatter(logging.Formatter("%(message)s"))
            handlers.append(file_handler)
        for handler in handlers:
            logger.addHandler(handler)
            logging.getLogger("dials_spot_size_analysis").addHandler(handler)
        try:
            yield
        finally:
            for handler in handlers:
                logger.removeHandler(handler)
                logging.getLogger("dials_spot_size_analysis").removeHandler(handler)
                handler.close()


def _show_help(command_line: CommandLine, phil) -> None:
    print(f"Usage: {usage}\n")
    print(help_message.strip())
    print("\nParameters (name=value; any unique suffix of a name works, e.g. bins=100):\n")
    phil.show(attributes_level=max(command_line.attributes_level, command_line.show_help), expert_level=command_line.expert_level)


def _read_inputs(command_line: CommandLine, engine: str):
    tables, experiment_lists = [], []
    for path in command_line.experiment_files:
        experiments = read_experiments(path)
        logger.info("Read %d experiment%s from %s", len(experiments), "" if len(experiments) == 1 else "s", path)
        experiment_lists.append((path, experiments))
    for path in command_line.reflection_files:
        table = read_reflections(path, engine=engine, index_shoeboxes=False)
        logger.info(
            "Read %d reflections from %s (table version %d, %s)",
            table.nrows,
            path,
            table.version,
            "with shoeboxes" if table.shoebox_column_name else "no shoebox column",
        )
        for name, reason in table.skipped_columns.items():
            logger.info("  column %s skipped: %s", name, reason)
        tables.append((path, table))
    return tables, experiment_lists


def write_text(text: str, path: str) -> None:
    with atomic_output(path) as temporary:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)


def write_json(document: dict, path: str) -> None:
    write_text(json.dumps(document, indent=2) + "\n", path)


def run(args: list[str] | None = None, phil=phil_scope) -> AnalysisResult | None:
    """The program. ``run([...])`` returns the result (None after -h or -c); ``run()``, as
    the console script calls it, reads ``sys.argv`` and returns None, so that the script's
    ``sys.exit(run())`` exits 0. Any problem the user can fix ends in one sentence on
    stderr and ``SystemExit(1)``."""
    from_console = args is None
    args = sys.argv[1:] if from_console else list(args)
    try:
        result = _run(args, phil)
        return None if from_console else result
    except (UserError, FileFormatError, SelectionError, ParameterError, UnknownFlagError) as error:
        print(f"{PROGRAM}: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print(f"{PROGRAM}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None


def _run(args: list[str], phil) -> AnalysisResult | None:
    if not args:
        _show_help(CommandLine(show_help=1), phil)
        return None
    command_line = parse_command_line(args, phil)
    if command_line.show_help:
        _show_help(command_line, phil)
        return None
    params = _extract(command_line, phil)
    if command_line.show_config:
        phil.format(python_object=params).show(attributes_level=command_line.attributes_level, expert_level=command_line.expert_level)
        return None
    if not command_line.reflection_files:
        raise UserError("no reflection file given: pass a .refl file (with its .expt), e.g. indexed.expt indexed.refl")
    require, data_min, data_max = _parameters_for_analysis(params)
    outputs = params.output
    for output in (outputs.log, outputs.json, outputs.html, outputs.plot):
        _check_writable(output)
    started = time.perf_counter()
    with logging_to(params.output.log, command_line.verbose):
        logger.info("%s v%s", PROGRAM, __version__)
        changed = changed_parameters(params)
        logger.info("The following parameters have been modified:\n%s\n" % changed if changed else "All parameters have their default values.\n")
        tables, experiment_lists = _read_inputs(command_line, engine="auto")
        analysis = analyse_tables(tables, experiment_lists, params, require, data_min, data_max)
        from ..report.text import report_lines

        logger.info("")
        for line in report_lines(analysis.result):
            logger.info(line)
        logger.info("")
        if outputs.json:
            logger.info("Writing JSON to %s", outputs.json)
            write_json(analysis.as_dict(), outputs.json)
        if outputs.html:
            from ..report.html import html_report

            logger.info("Writing HTML report to %s", outputs.html)
            write_text(html_report(analysis, changed), outputs.html)
        if outputs.plot:
            from ..report.png import histogram_png

            logger.info("Writing histogram plot to %s", outputs.plot)
            with atomic_output(outputs.plot) as temporary:
                histogram_png(analysis.result, temporary, log_scale=outputs.plot_log_scale)
        logger.info("Total time: %.2f s", time.perf_counter() - started)
    return analysis


if __name__ == "__main__":
    run()
