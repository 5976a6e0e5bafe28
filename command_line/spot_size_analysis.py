"""
How big are my spots? Counts, for every selected reflection, the shoebox pixels carrying a
mask code (by default Foreground: the signal pixels found by spot finding, summed over all
images a spot touches) and histograms those sizes exactly as the DIALS "Python scripting"
tutorial does with scitbx flex.histogram, with statistics and breakdowns per experiment,
panel, image and resolution shell. Measures each spot's shape (pixels across, images
spanned, footprint on one image, widths, streaks); computes sigma_b and sigma_m as
dials.integrate would, with the integration shoebox and the memory they imply; checks
dials.find_spots' spot-size and separation limits against the spots; and suggests
parameter values where the data call for them (output.suggestions writes them as .phil
files to run).

Reflection files need shoeboxes: dials.find_spots writes them (strong.refl) and dials.index
and dials.refine pass them on; dials.integrate drops them, but with
integration.debug.output=True writes them to separate shoeboxes_*.refl files.

Examples::

  dials.spot_size_analysis indexed.expt indexed.refl

  dials.spot_size_analysis indexed.expt indexed.refl bins=100 data_max=Auto

  dials.spot_size_analysis imported.expt strong.refl mask_code=Valid+Foreground

  dials.spot_size_analysis refined.expt refined.refl flags.require=used_in_refinement

  dials.spot_size_analysis indexed.expt indexed.refl flags.require=None flags.exclude=overloaded

  dials.spot_size_analysis indexed.expt indexed.refl output.plot=spot_sizes.png

  dials.spot_size_analysis refined.expt refined.refl profile.memory_limit=Auto output.suggestions=suggested.phil

Many files (a folder, a quoted glob, or a text file listing them; a .refl and the .expt of
the same name beside it are a pair), over every core or MPI ranks::

  dials.spot_size_analysis stills/ nproc=Auto

  mpirun -n 16 dials.spot_size_analysis files.txt mp.method=mpi
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import time

from .. import PROGRAM, __version__
from ..algorithms.result import AnalysisResult
from ..errors import SpotSizeAnalysisError
from ..formats import write_reflections
from ..parallel.pool import OUT_OF_MEMORY, warm_up_kernels
from ..parallel.run import run_analysis
from ..parallel.tuning import collection_paused
from ..phil import phil_scope
from ..phil.options import analysis_options
from ..phil.parameters import ParameterError, changed_parameters
from ..report.document import json_document
from ..report.reflections_output import refuse_unless_one_table, table_with_shapes
from ..report.suggestions import advice_lines, phil_by_program
from ..report.text import printable, profile_model_lines, report_lines
from .help import show_help
from .inputs import (
    InputError,
    Inputs,
    find_inputs,
    pair_by_name,
    phil_file,
    phil_message,
    read_experiment_lists,
    refuse_named_tables_with_same_spots,
)
from .options import Options, parse_options, version_line
from .output_paths import OutputError, written_into
from .outputs import (
    OutputSet,
    logging_to,
    write_json,
    write_text,
    written,
)
from .signals import (
    NOTHING_WRITTEN,
    StoppedAfterOutputs,
    StoppedWhileStreaming,
    StopSignals,
    Terminated,
    signal_of,
    stop_behind,
)
from .standard_output import printed

logger = logging.getLogger(PROGRAM)
MAX_FILES_LISTED = 20


def run(args: list[str] | None = None, phil=phil_scope) -> AnalysisResult | None:
    """The program. ``run([...])`` returns the result (None after -h, -c or
    --version); ``run()``, as the console script calls it, reads ``sys.argv`` and
    returns None. Any problem the user can fix ends in one sentence on stderr and
    ``SystemExit(1)``; SIGINT and SIGTERM in one sentence and exit status 130 and 143;
    either way no temporary file is left, and no output unless the signal came once
    the outputs were being put in place (the sentence then says they all were).

    Parameters
    ----------
    args : list of str, optional
        The command line without the program's name (None: ``sys.argv``).
    phil : libtbx.phil scope
        The parameter scope (the program's by default).
    """
    from_console = args is None
    args = sys.argv[1:] if from_console else list(args)
    speaker = {"quiet": False}  # under MPI, rank 0 speaks for all
    try:
        with collection_paused(), StopSignals() as signals:
            result = _run(args, phil, speaker, signals)
        return None if from_console else result
    except BaseException as error:
        ending = _ending(stop_behind(error) or error)
        if ending is None:
            raise
        status, sentence = ending
        _say(speaker, sentence)
        raise SystemExit(status) from None
    finally:
        if (
            from_console
        ):  # the interpreter exits next: spare it a walk over every object
            gc.freeze()


TYPES_AND_RANGES = f"{PROGRAM} -c -a2 lists each parameter's type and range"


def _ending(error: BaseException) -> tuple[int, str] | None:
    """The exit status and sentence for what ended the run, None for what is not
    the user's to fix (a bug: its traceback is wanted)."""
    if isinstance(error, ParameterError):  # what to give
        return 1, f"{error} ({TYPES_AND_RANGES})"
    if isinstance(error, SpotSizeAnalysisError):
        return 1, str(error)
    if isinstance(error, MemoryError):
        return 1, OUT_OF_MEMORY
    if isinstance(error, (KeyboardInterrupt, Terminated)):
        return NOTHING_WRITTEN[signal_of(error)]
    if isinstance(error, (StoppedAfterOutputs, StoppedWhileStreaming)):
        return error.exit_status, str(error)
    return None


def _say(speaker: dict, message: str) -> None:
    if not speaker["quiet"] and sys.stderr is not None:  # closed (2>&-): unsaid
        print(f"{PROGRAM}: {printable(message)}", file=sys.stderr)


def _run(args: list[str], phil, speaker: dict, signals: StopSignals):
    options = parse_options(args)
    if options.show_version or options.show_help or not args:
        printed(lambda: _show_version_or_help(options, phil))
        return None
    inputs = find_inputs(options.arguments, phil)
    params = _extract(options, inputs, phil)
    if options.show_config:
        printed(
            lambda: phil.format(python_object=params).show(
                attributes_level=options.attributes_level,
                expert_level=options.expert_level,
            )
        )
        return None
    if not inputs.reflection_files:
        raise InputError(
            "no reflection file given: pass a .refl file (with its .expt), e.g. indexed.expt indexed.refl"
        )
    analysis = analysis_options(params)  # parameter errors before any work
    if params.output.reflections:  # the one table read, with columns added
        refuse_unless_one_table(len(inputs.reflection_files))
    comm = _mpi_communicator(params)
    speaker["quiet"] = comm is not None and comm.Get_rank() != 0
    wanted = (
        []
        if speaker["quiet"]
        else [*_output_paths(params.output), params.output.reflections]
    )
    read = [
        *inputs.reflection_files,
        *inputs.experiment_files,
        *options.phil_files,
        *([params.input.find_spots] if params.input.find_spots else []),
    ]
    outputs = OutputSet(wanted, read, inputs.identities)
    try:
        result = _analyse_and_report(
            inputs, params, analysis, comm, options, outputs, signals.check
        )
        signals.check()  # a signal whose exception something swallowed
        try:
            outputs.stream()  # to /dev/stdout: a pipe's reader may block, signals act
            with signals.held():
                outputs.commit()
        except BaseException as error:
            stop = stop_behind(error)
            if isinstance(stop, (KeyboardInterrupt, Terminated)) and (
                outputs.streamed_into  # what a descriptor received stays there
            ):
                raise StoppedWhileStreaming(
                    signal_of(stop), outputs.streamed_into
                ) from None
            raise
    finally:
        outputs.discard()
    signals.check()  # a signal since, whose exception something swallowed
    return result


def _output_paths(output) -> list[str | None]:
    suggestions = [path for path, _ in _suggestion_files(output.suggestions, {})]
    return [output.log, output.json, output.html, output.plot, *suggestions]


def _no_change(program: str) -> str:
    return f"# The spots call for no change to the parameters of {program}.\n"


SUGGESTION_PROGRAMS = (
    ("dials.find_spots", "find_spots"),
    ("dials.integrate", "integrate"),
)


def _suggestion_stem(prefix: str) -> str:
    """What the two suggestion files are named after: output.suggestions less
    ``.phil`` and a program's part (x.find_spots.phil names x); refused where it names
    a folder, a device or an open file, which two files cannot be named after."""
    stem = prefix.removesuffix(".phil")
    for _, short in SUGGESTION_PROGRAMS:
        stem = stem.removesuffix(f".{short}")
    name = os.path.basename(stem)
    what = None
    if not name:
        what = "no file name"
    elif name in (".", "..") or os.path.isdir(stem):
        what = "a folder"
    elif written_into(prefix) or written_into(stem):
        what = "a device or an open file"
    if what:
        raise OutputError(
            f"output.suggestions={prefix} names {what}, but the suggestions are two "
            "files named after it: give a file name, e.g. "
            "output.suggestions=suggested.phil for suggested.find_spots.phil and "
            "suggested.integrate.phil"
        )
    return stem


def _suggestion_files(prefix: str | None, advice: dict) -> list[tuple[str, str]]:
    """output.suggestions=x.phil: x.find_spots.phil and x.integrate.phil (each DIALS
    program refuses the other's parameters), with their text."""
    if not prefix:
        return []
    stem = _suggestion_stem(prefix)
    texts = phil_by_program(advice.get("suggestions", []))
    return [
        (f"{stem}.{short}.phil", texts.get(program) or _no_change(program))
        for program, short in SUGGESTION_PROGRAMS
    ]


def _analyse_and_report(inputs, params, analysis, comm, options, outputs, check):
    """Read, measure, summarise and write every output into its temporary file."""
    started = time.perf_counter()
    keep_log = bool(outputs.paths and params.output.log)
    quiet = comm is not None and comm.Get_rank() != 0
    with logging_to(keep_log, options.verbose, quiet) as log:
        logger.info("%s v%s", PROGRAM, __version__)
        changed = changed_parameters(params)
        logger.info(
            f"The following parameters have been modified:\n{changed}\n"
            if changed
            else "All parameters have their default values.\n"
        )
        for note in inputs.notes:  # tables set aside, files skipped in folders
            logger.info(printable(note))
        pairs, shared = pair_by_name(inputs.reflection_files, inputs.experiment_files)
        _log_pairing(inputs.reflection_files, pairs, shared)
        with _stage("reading experiment lists"):
            experiment_lists, skipped = read_experiment_lists(
                shared, params.input.bad_files
            )
        with _stage("loading the compiled kernels"):
            warm_up_kernels()  # this process runs only our kernels
        check()  # a signal remembered while numba loaded them
        with _stage("measuring, merging and summarising"):
            result = run_analysis(
                inputs.reflection_files,
                experiment_lists,
                analysis,
                comm=comm,
                skipped_files=skipped,
                paired_experiments=pairs,
                check_measured=(
                    refuse_named_tables_with_same_spots
                    if inputs.compare_while_measuring
                    else None
                ),
                stop_requested=check,  # a signal remembered in numba's loading
            )
        if result is None:  # an MPI rank other than 0: rank 0 reports
            return None
        _log_inputs(result)
        logger.info("")
        for line in report_lines(result.result):
            logger.info(line)
        for line in profile_model_lines(result.profile_model):
            logger.info(line)
        for line in advice_lines(result.advice):
            logger.info(line)
        logger.info("")
        with _stage("writing the outputs"):
            _write_outputs(result, params.output, changed, outputs)
        logger.info("Total time: %.2f s", time.perf_counter() - started)
        if log is not None:
            log.write(outputs.temporary(params.output.log))
    return result


@contextlib.contextmanager
def _stage(name: str):
    """Time a stage of the run, for -v."""
    started = time.perf_counter()
    yield
    logger.debug("Timing: %s took %.3f s", name, time.perf_counter() - started)


def _log_pairing(reflection_files, pairs: dict[int, str], shared: list[str]) -> None:
    """For -v: which experiment list describes which table."""
    for index, path in enumerate(reflection_files[:MAX_FILES_LISTED]):
        if index in pairs:
            logger.debug("%s is paired with %s (the same name)", path, pairs[index])
        elif shared:
            logger.debug(
                "%s is matched to the experiments of %s", path, ", ".join(shared)
            )
        else:
            logger.debug("%s has no experiment list", path)


def _show_version_or_help(options: Options, phil) -> None:
    if options.show_version:
        print(version_line())
        return
    show_help(options, phil)


def _extract(options: Options, inputs: Inputs, phil):
    """The parameters, refusing any definition the scope does not have, as DIALS
    programs do (a misspelt name in a .phil file would otherwise be ignored)."""
    sources = [phil_file(path) for path in options.phil_files] + inputs.phil_sources
    try:
        working, unused = phil.fetch(sources=sources, track_unused_definitions=True)
        params = working.extract()
    except Exception as error:  # noqa: BLE001 (libtbx raises Sorry, RuntimeError, ...)
        message = phil_message(error, "parameters")
        raise InputError(f"{message} ({TYPES_AND_RANGES})") from None
    if unused:
        names = ", ".join(str(locator) for locator in unused[:5])
        raise InputError(
            f"unknown parameter {names}: see {PROGRAM} -c for the parameters and their names"
        )
    return params


def _mpi_communicator(params):
    """MPI.COMM_WORLD for mp.method=mpi (None otherwise)."""
    if params.mp.method != "mpi":
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        raise InputError(
            "mp.method=mpi needs mpi4py (pip install mpi4py) and a start by mpirun"
        ) from None
    return MPI.COMM_WORLD


def _write_outputs(result: AnalysisResult, output, changed: str, outputs) -> None:
    if output.json:
        logger.info("Writing JSON to %s", printable(output.json))
        document = json_document(result, replace_non_finite=False)  # write_json does
        write_json(document, outputs.temporary(output.json))
    if output.html:
        from ..report.html import html_report  # plotly.js: only when asked for

        logger.info("Writing HTML report to %s", printable(output.html))
        write_text(html_report(result, changed), outputs.temporary(output.html))
    if output.suggestions:
        for path, text in _suggestion_files(output.suggestions, result.advice):
            logger.info("Writing suggested parameters to %s", printable(path))
            write_text(text, outputs.temporary(path))
    if output.plot:
        from ..report.png import histogram_png  # matplotlib: only when asked for

        logger.info("Writing histogram plot to %s", printable(output.plot))
        with written(outputs.temporary(output.plot), "wb") as handle:
            histogram_png(result.result, handle, log_scale=output.plot_log_scale)
    if output.reflections:
        logger.info(
            "Writing reflections with sizes and shapes to %s",
            printable(output.reflections),
        )
        table = table_with_shapes(result)  # read again before the output is opened
        with written(outputs.temporary(output.reflections), "wb") as handle:
            write_reflections(table, handle)


def _experiments_of(table: dict, lists: list[dict]) -> str:
    """Which experiment list a table was measured with, for the log: its own, or the
    shared lists holding its experiments' identifiers."""
    if "experiments" in table:
        return f" with the experiments of {table['experiments']}"
    ids = set(table["experiment_identifiers"]) - {""}
    names = [e["experiments"] for e in lists if ids & set(e["experiment_identifiers"])]
    return f" with the experiments of {', '.join(names)}" if names else ""


def _log_inputs(analysis: AnalysisResult) -> None:
    tables = [entry for entry in analysis.inputs if "reflections" in entry]
    lists = [entry for entry in analysis.inputs if "n_experiments" in entry]
    for entry in lists[:MAX_FILES_LISTED]:
        n = entry["n_experiments"]
        logger.info(
            "Read %d experiment%s from %s",
            n,
            "" if n == 1 else "s",
            printable(entry["experiments"]),
        )
    for entry in tables[:MAX_FILES_LISTED]:
        logger.info(
            "Read %d reflections from %s (table version %d, %s)%s",
            entry["n_rows"],
            printable(entry["reflections"]),
            entry["table_version"],
            "with shoeboxes" if entry["has_shoeboxes"] else "no shoebox column",
            _experiments_of(entry, lists),
        )
        for name in entry["skipped_columns"]:
            logger.info("  column %s skipped: it cannot be read portably", name)
    if len(tables) > MAX_FILES_LISTED or len(lists) > MAX_FILES_LISTED:
        logger.info(
            "... %d reflection files (%d reflections) and %d experiment lists in all; every file is listed in the JSON",
            len(tables),
            sum(entry["n_rows"] for entry in tables),
            len(lists),
        )
    if analysis.skipped_files:
        logger.info(
            "\nSkipped %d file(s) that could not be used (input.bad_files=skip):",
            len(analysis.skipped_files),
        )
        for entry in analysis.skipped_files[:MAX_FILES_LISTED]:
            logger.info("  %s", printable(entry["reason"]))
        if len(analysis.skipped_files) > MAX_FILES_LISTED:
            logger.info(
                "  ... and %d more, all listed in the JSON",
                len(analysis.skipped_files) - MAX_FILES_LISTED,
            )


if __name__ == "__main__":
    run()
