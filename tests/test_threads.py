"""One table's stretches measured on several threads (nproc with a single file): the
same numbers as one thread, the same errors, and each stretch's pages its own."""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
from unittest import mock

import msgpack
import numpy as np
import pytest
from conftest import REFLECTION_FILES

from dials_spot_size_analysis.algorithms import spot_shape
from dials_spot_size_analysis.algorithms.geometry import ExperimentGeometry
from dials_spot_size_analysis.algorithms.spot_sizes import (
    ExperimentNumbering,
    MeasureOptions,
    SpotSizes,
    measure_rows,
)
from dials_spot_size_analysis.api import analyse
from dials_spot_size_analysis.formats import (
    FileFormatError,
    read_experiments,
    read_reflections,
)
from dials_spot_size_analysis.formats import reflections as formats_reflections
from dials_spot_size_analysis.formats import source as formats_source
from dials_spot_size_analysis.formats.shoeboxes import HEADER_BYTES, indexed_chunks
from dials_spot_size_analysis.parallel import measure_file
from dials_spot_size_analysis.report.document import json_document
from dials_spot_size_analysis.threads import in_order

WITH_SHOEBOXES = sorted(REFLECTION_FILES)


def _measured(path, expt, threads, rows_per_chunk=64, code=("Foreground",)):
    table = read_reflections(path, index_shoeboxes=False)
    geometry = ExperimentGeometry(list(read_experiments(expt)))
    options = MeasureOptions(mask_code=code)
    numbering = ExperimentNumbering(identifiers=table.identifiers)
    if not table.identifiers:
        numbering = ExperimentNumbering(count=len(geometry))
    with mock.patch.object(measure_file, "ROWS_PER_CHUNK", rows_per_chunk):
        return measure_file.measure_table(
            table, geometry, numbering, options, release_pages=True, threads=threads
        )


@pytest.mark.parametrize("name", WITH_SHOEBOXES)
def test_threads_give_the_rows_of_one_thread(shared_data, name):
    path, expt = shared_data / name, shared_data / REFLECTION_FILES[name]
    one, one_selection = _measured(path, expt, threads=1)
    two, two_selection = _measured(path, expt, threads=2)
    assert one_selection == two_selection
    assert len(one) == one_selection.n_counted > 100
    for field in dataclasses.fields(one):
        np.testing.assert_array_equal(
            getattr(one, field.name), getattr(two, field.name), err_msg=field.name
        )


def test_nproc_on_one_file_is_the_analysis_of_one_process(shared_data):
    """The I23 table in stretches of 16 rows on two threads: every number of the
    result is the one process's."""
    path = shared_data / "I23_P12M_thau/indexed.refl"
    expt = shared_data / "I23_P12M_thau/indexed.expt"
    threads = []

    def spied(function, items, threads_given=1):
        threads.append(threads_given)
        return in_order(function, items, threads_given)

    summary_threads = []

    def spied_summaries(function, items, threads_given=1):
        summary_threads.append(threads_given)
        return in_order(function, items, threads_given)

    with (
        mock.patch.object(measure_file, "ROWS_PER_CHUNK", 32),
        mock.patch.object(measure_file, "in_order", spied),
        mock.patch.object(spot_shape, "in_order", spied_summaries),
    ):
        one = analyse(path, expt, nproc=1)
        two = analyse(path, expt, nproc=2)
    assert threads == [1, 2]  # the second run's stretches on two threads
    assert summary_threads == [1, 2]  # and its shape summaries
    # the profile model, run beside the summaries with nproc=2, is there and is the
    # one of one process, as is the advice that uses it
    profile = two.profile_model["experiments"][0]
    assert profile["sigma_m_deg"] == pytest.approx(0.0723257, rel=1e-6)
    assert profile["n_matched"] == 173
    assert two.advice["checks"] and two.advice == one.advice
    documents = [json_document(result) for result in (one, two)]
    for document in documents:
        document["parameters"]["mp"].pop("nproc")  # the only difference asked for
    assert documents[0] == documents[1]
    assert one.result.statistics["n"] == 205


@pytest.mark.parametrize("name", WITH_SHOEBOXES)
def test_stretches_own_consecutive_bytes_of_the_column(shared_data, name):
    """byte_range: the stretches' ranges tile the column, first byte to last."""
    table = read_reflections(shared_data / name, index_shoeboxes=False)
    blob = table._shoebox_blob
    ranges = [
        column.byte_range()
        for _, _, column in indexed_chunks(blob, table.nrows, rows_per_chunk=50)
    ]
    assert ranges[0][0] == 0 and ranges[-1][1] == blob.size
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert all(a[0] < a[1] for a in ranges)


def test_a_corrupt_record_in_a_later_stretch_is_the_same_error(shared_data, tmp_path):
    source = shared_data / "centroid_test_data/indexed.refl"
    tag, version, body = msgpack.unpackb(
        source.read_bytes(), strict_map_key=False, raw=False
    )
    kind, (count, blob) = body["data"]["shoebox"]
    offsets = read_reflections(source).shoeboxes.data_offset
    blob = bytearray(blob)
    blob[offsets[600] - 1] = 7  # record 600's present byte: no such marker
    body["data"]["shoebox"] = [kind, [count, bytes(blob)]]
    path = tmp_path / "corrupt.refl"
    path.write_bytes(msgpack.packb([tag, version, body], use_bin_type=True))
    expt = shared_data / "centroid_test_data/indexed.expt"
    messages = []
    for threads in (1, 2):
        with pytest.raises(FileFormatError, match="record 600") as raised:
            _measured(path, expt, threads=threads)
        messages.append(str(raised.value))
    assert messages[0] == messages[1]


def test_in_order_keeps_the_order_and_bounds_the_items_in_flight():
    running, most = 0, 0
    lock = threading.Lock()

    def slow_square(x):
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.01 * (x % 3))  # later items may finish first
        with lock:
            running -= 1
        return x * x

    drawn = []

    def items():
        for x in range(12):
            drawn.append(x)
            yield x

    results = []
    for result in in_order(slow_square, items(), threads=2):
        results.append(result)
        assert len(drawn) <= len(results) + 1  # two in flight: one drawn ahead
    assert results == [x * x for x in range(12)]
    assert most == 2
    assert list(in_order(slow_square, range(4), threads=1)) == [0, 1, 4, 9]


def test_in_order_raises_what_an_item_or_the_items_raise():
    def fails_on_three(x):
        if x == 3:
            raise ValueError("three")
        return x

    with pytest.raises(ValueError, match="three"):
        list(in_order(fails_on_three, range(6), threads=2))

    def broken_items():
        yield 1
        raise FileFormatError("x.refl", "is corrupt")

    with pytest.raises(FileFormatError, match="is corrupt"):
        list(in_order(fails_on_three, broken_items(), threads=2))


def test_one_stretch_more_than_the_threads_is_not_pending(shared_data):
    """Each stretch hands its own pages back once measured (release_pages), on threads
    too: every stretch's byte range is released exactly once."""
    path = shared_data / "I23_P12M_thau/indexed.refl"
    expt = shared_data / "I23_P12M_thau/indexed.expt"
    released = []
    with mock.patch.object(
        measure_file, "release_pages_of", side_effect=released.append
    ):
        _measured(path, expt, threads=2, rows_per_chunk=64)
    sizes = [len(r) for r in released]
    table = read_reflections(path, index_shoeboxes=False)
    assert len(released) == -(-table.nrows // 32) == 7
    assert sum(sizes) == table._shoebox_blob.size
    assert HEADER_BYTES < min(sizes)


def test_the_memory_of_derived_results_is_shared_by_threads():
    """Two threads asking for more results than are remembered, at once: each gets
    its own argument's result, and the memory stays whole (no KeyError on a result
    forgotten by one thread while the other moves it to the front)."""
    from dials_spot_size_analysis.algorithms._memo import MOST_REMEMBERED, by_identity

    memo = by_identity(lambda model: model[0] * 2)
    models = [(k,) for k in range(MOST_REMEMBERED * 2)]
    failures = []

    def ask(order):
        try:
            for _ in range(200):
                for model in order:
                    assert memo(model) == model[0] * 2
        except Exception as error:  # noqa: BLE001 (reported below)
            failures.append(error)

    workers = [
        threading.Thread(target=ask, args=(models,)),
        threading.Thread(target=ask, args=(models[::-1],)),
    ]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch often: a race shows at once
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        sys.setswitchinterval(interval)
    assert failures == []
    assert len(memo._results) == MOST_REMEMBERED


def test_shape_summaries_on_threads_are_those_of_one_thread(shared_data):
    """Twelve quantities of 61,500 real rows (the I23 spots 300 times, with their
    images, shells and panels) summarised two at a time, threads switching every
    microsecond: each thread sorts in its own work array, so every number is the one
    thread's (a shared work array gives other quantities' values)."""
    path = shared_data / "I23_P12M_thau/indexed.refl"
    expt = shared_data / "I23_P12M_thau/indexed.expt"
    rows, _ = _measured(path, expt, threads=1)
    copies = 300
    repeated = SpotSizes.concatenate([rows] * copies)
    shell = np.tile(np.arange(len(rows)) % 7, copies)
    keys = {"image": repeated.image, "shell": shell, "panel": repeated.panel}
    one = spot_shape.summarise_spot_shapes(repeated, **keys, threads=1)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        two = spot_shape.summarise_spot_shapes(repeated, **keys, threads=2)
    finally:
        sys.setswitchinterval(interval)
    assert two == one
    quantities = one["quantities"]
    assert quantities["extent_z"]["statistics"]["n"] == 205 * copies
    assert len(quantities) == 12 and all(
        q["median_by_shell"] for q in quantities.values()
    )


@pytest.mark.parametrize("name", WITH_SHOEBOXES)
def test_stretches_write_their_rows_in_place_as_one_stretch_would(shared_data, name):
    """Each stretch's counted rows are written into their own place among the
    table's rows (no joining afterwards): stretches of 64 rows give the rows of one
    stretch, with the rows lacking pixel data left out in the right places."""
    path, expt = shared_data / name, shared_data / REFLECTION_FILES[name]
    stretched, selection = _measured(path, expt, threads=1, rows_per_chunk=64)
    whole, _ = _measured(path, expt, threads=1, rows_per_chunk=1 << 30)
    assert len(stretched) == len(whole) == selection.n_counted
    for field in dataclasses.fields(whole):
        np.testing.assert_array_equal(
            getattr(stretched, field.name), getattr(whole, field.name), field.name
        )


def test_rows_given_to_fill_must_be_one_per_counted_row(shared_data):
    path = shared_data / "I23_P12M_thau/indexed.refl"
    geometry = ExperimentGeometry(list(read_experiments(path.with_suffix(".expt"))))
    table = read_reflections(path)
    counted = np.zeros(table.nrows, bool)
    counted[:3] = True
    arguments = (
        table.columns, counted, np.ones(3, int), geometry,
        ExperimentNumbering(identifiers=table.identifiers), 0, "t.refl",
    )  # fmt: skip
    filled = SpotSizes.empty(5)
    assert measure_rows(*arguments, out=filled.rows(1, 4)).size.tolist() == [1, 1, 1]
    assert filled.size[1:4].tolist() == [1, 1, 1]
    assert np.isnan(filled.fill[1:4]).all() and filled.extent_z[1:4].tolist() == [0] * 3
    with pytest.raises(ValueError, match="out has 5 rows, not 3"):
        measure_rows(*arguments, out=filled)


def test_a_file_changed_before_its_later_profile_model_is_refused(
    shared_data, tmp_path
):
    """With nproc=2 the profile model of a single file runs after its rows were
    measured, beside the summaries: a file rewritten in between is refused with the
    sentence of a file changed while measured, not read as mixed content."""
    source = shared_data / "I23_P12M_thau/indexed.refl"
    path = tmp_path / "indexed.refl"
    path.write_bytes(source.read_bytes())
    expt = shared_data / "I23_P12M_thau/indexed.expt"
    real_profiles = measure_file._profiles

    def profiles_after_a_rewrite(table, *arguments):
        profiles = real_profiles(table, *arguments)
        os.utime(path, ns=(1, 1))  # another program touched the file meanwhile
        return profiles

    with (
        mock.patch.object(measure_file, "_profiles", profiles_after_a_rewrite),
        # mapped and read in place, as a big file is
        mock.patch.object(formats_source, "MAP_FROM_BYTES", 0),
        mock.patch.object(formats_reflections, "SMALL_BUFFER_BYTES", 0),
        pytest.raises(FileFormatError, match="was changed or replaced") as raised,
    ):
        analyse(path, expt, nproc=2)
    assert str(raised.value).startswith(f"{path}: ")


def test_many_tables_are_summarised_on_one_thread(shared_data):
    """With several tables nproc means processes; the parent summarises the merged
    rows on one thread, so that the memory each file costs it does not grow with
    the summaries' and the advice's temporaries side by side."""
    folders = [shared_data / "I23_P12M_thau", shared_data / "centroid_test_data"]
    tables = [folder / "indexed.refl" for folder in folders]
    experiments = [folder / "indexed.expt" for folder in folders]
    summary_threads = []

    def spied(function, items, threads_given=1):
        summary_threads.append(threads_given)
        return in_order(function, items, threads_given)

    with mock.patch.object(spot_shape, "in_order", spied):
        result = analyse(tables, experiments, nproc=2)
    assert summary_threads == [1]
    assert result.result.selection["n_datasets"] == 2
    assert len(result.profile_model["experiments"]) == 2
