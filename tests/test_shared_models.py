"""Models shared between the files of a run: the same beam and detector parsed once,
and what is derived from them computed once, never at the cost of a right answer."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from dials_spot_size_analysis.algorithms import _memo, prediction
from dials_spot_size_analysis.algorithms.geometry import ExperimentGeometry
from dials_spot_size_analysis.algorithms.prediction import DetectorArrays
from dials_spot_size_analysis.formats import FileFormatError, read_experiments
from dials_spot_size_analysis.formats import experiments as experiments_module


def _copy_with(tmp_path, source, name, change=None):
    document = json.loads(source.read_text())
    if change is not None:
        change(document)
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return path


def test_identical_models_of_two_files_are_one_object(shared_data, tmp_path):
    source = shared_data / "eiger_therm/imported.expt"
    first = read_experiments(_copy_with(tmp_path, source, "a.expt"))[0]

    def renamed(document):
        document["experiment"][0]["identifier"] = "another"

    second = read_experiments(_copy_with(tmp_path, source, "b.expt", renamed))[0]
    assert second.identifier == "another"
    for kind in ("beam", "detector", "goniometer", "scan"):
        assert getattr(first, kind) is getattr(second, kind), kind
    assert DetectorArrays.of(first.detector) is DetectorArrays.of(second.detector)
    origin = first.detector.panels[0].origin
    assert not origin.flags.writeable  # shared, so immutable
    with pytest.raises(ValueError, match="read-only"):
        origin[0] = 0.0


def test_a_model_that_differs_in_one_number_is_its_own(shared_data, tmp_path):
    source = shared_data / "eiger_therm/imported.expt"
    first = read_experiments(_copy_with(tmp_path, source, "a.expt"))[0]

    def moved(document):
        document["detector"][0]["panels"][0]["origin"][0] -= 1.0

    second = read_experiments(_copy_with(tmp_path, source, "b.expt", moved))[0]
    assert second.detector is not first.detector
    assert second.beam is first.beam
    assert (
        second.detector.panels[0].origin[0] == first.detector.panels[0].origin[0] - 1.0
    )
    centres = ExperimentGeometry([first, second]).beam_centres_px(
        np.array([0, 1]), np.array([0, 0])
    )
    pixel = first.detector.panels[0].pixel_size[0]
    assert centres[1, 0] - centres[0, 0] == pytest.approx(1.0 / pixel)  # its own
    assert centres[1, 1] == pytest.approx(centres[0, 1])


@pytest.mark.parametrize(
    "change",
    [
        lambda beam: beam.__setitem__(
            "wavelength", math.nextafter(beam["wavelength"], 2)
        ),
        lambda beam: beam.__setitem__("transmission", 1),  # 1.0 in the file
        lambda beam: beam.__setitem__("divergence", -0.0),  # 0.0 in the file
        lambda beam: beam.__setitem__("extra", True),
    ],
    ids=["last bit", "int for float", "negative zero", "one more key"],
)
def test_entries_that_differ_at_all_are_not_shared(shared_data, tmp_path, change):
    """The memory's key tells apart entries that differ in a float's last bit, in a
    number's type, in the sign of a zero or by one key: each is parsed on its own."""
    source = shared_data / "eiger_therm/imported.expt"
    first = read_experiments(_copy_with(tmp_path, source, "a.expt"))[0]
    second = read_experiments(
        _copy_with(tmp_path, source, "b.expt", lambda d: change(d["beam"][0]))
    )[0]
    assert second.beam is not first.beam
    assert second.detector is first.detector


def test_an_invalid_model_is_refused_every_time(shared_data, tmp_path):
    """Only valid models are remembered: the same invalid detector in a second file
    is refused again, with the same sentence."""
    source = shared_data / "eiger_therm/imported.expt"

    def broken(document):
        document["detector"][0]["panels"][0]["pixel_size"] = [0.075, -1]

    for name in ("a.expt", "b.expt"):
        path = _copy_with(tmp_path, source, name, broken)
        with pytest.raises(FileFormatError, match="panel 0 .*pixel_size is -1"):
            read_experiments(path)


def test_memories_are_bounded(shared_data, tmp_path, monkeypatch):
    monkeypatch.setattr(experiments_module, "MOST_REMEMBERED", 3)
    monkeypatch.setattr(_memo, "MOST_REMEMBERED", 3)
    source = shared_data / "eiger_therm/imported.expt"
    detectors = []
    for number in range(6):

        def moved(document, number=number):
            document["detector"][0]["panels"][0]["origin"][2] -= number

        path = _copy_with(tmp_path, source, f"{number}.expt", moved)
        detector = read_experiments(path)[0].detector
        DetectorArrays.of(detector)
        detectors.append(detector)
    assert len(experiments_module._remembered["detector"]) == 3
    assert len(prediction._shared_detector_arrays._results) == 3


def test_by_identity_keeps_its_arguments_and_result():
    calls = []

    @_memo.by_identity
    def derived(model):
        calls.append(model)
        return object()

    a, b = object(), object()
    assert derived(a) is derived(a)
    assert derived(b) is not derived(a)
    assert calls == [a, b]


def test_beam_centres_are_nan_where_unknown(shared_data):
    """An experiment with a detector but no beam, a panel or experiment out of range:
    NaN, never another experiment's numbers."""
    from dataclasses import replace

    experiment = read_experiments(shared_data / "eiger_therm/imported.expt")[0]
    geometry = ExperimentGeometry([replace(experiment, beam=None), experiment])
    centres = geometry.beam_centres_px(
        np.array([0, 1, 1, -1, 2]), np.array([0, 0, 1, 0, 0])
    )
    assert np.isnan(centres[[0, 2, 3, 4]]).all()
    assert np.isfinite(centres[1]).all()
    assert centres[1] == pytest.approx([2216.06, 2300.41], abs=0.01)


def test_long_entries_are_not_remembered(shared_data, tmp_path, monkeypatch):
    """Memory stays bounded in bytes too: a model whose key (the entry marshalled) is
    longer than LONGEST_REMEMBERED is parsed for each file and not kept."""
    monkeypatch.setattr(experiments_module, "LONGEST_REMEMBERED", 300)
    experiments_module._remembered["beam"].clear()
    source = shared_data / "eiger_therm/imported.expt"
    first = read_experiments(_copy_with(tmp_path, source, "a.expt"))[0]
    second = read_experiments(_copy_with(tmp_path, source, "b.expt"))[0]
    assert first.beam is not second.beam  # its key is 349 bytes long
    assert first.beam.wavelength == second.beam.wavelength
    assert first.goniometer is second.goniometer  # 227 bytes: remembered
    assert not experiments_module._remembered["beam"]
