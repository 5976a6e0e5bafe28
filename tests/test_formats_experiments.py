"""The .expt reader against experiment lists written by DIALS."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dials_spot_size_analysis.formats import read_experiments, read_reflections


def test_centroid_experiment(shared_data):
    experiments = read_experiments(shared_data / "centroid_test_data/indexed.expt")
    assert experiments.identifiers() == ["d6c88837-e8dd-467f-beff-356887317c56"]
    experiment = experiments[0]
    assert experiment.beam.wavelength == pytest.approx(0.9795)
    assert np.linalg.norm(experiment.beam.s0) == pytest.approx(1 / 0.9795)
    assert experiment.beam.s0[2] < 0  # the beam travels along -z
    panel = experiment.detector.panels[0]
    assert (
        len(experiment.detector) == 1
        and panel.image_size == (2463, 2527)
        and panel.pixel_size == (0.172, 0.172)
    )
    assert experiment.scan.image_range == (1, 9) and experiment.scan.oscillation == (
        0.0,
        0.2,
    )
    assert experiment.scan.num_images == 9
    assert experiment.goniometer.rotation_axis[0] == pytest.approx(1.0)
    a, b, c, alpha, beta, gamma = experiment.crystal.unit_cell
    assert (a, b, c) == pytest.approx((42.2085, 42.2085, 39.6927), abs=1e-3)
    assert (alpha, beta, gamma) == pytest.approx((90, 90, 90))
    assert experiment.crystal.space_group_hall_symbol == "P 4 2"
    assert experiment.imageset_template == "centroid_####.cbf"


def test_per_image_scan_properties_and_multi_axis_goniometer(shared_data):
    experiment = read_experiments(shared_data / "I23_P12M_thau/imported.expt")[0]
    assert experiment.scan.image_range == (1, 1)
    assert experiment.scan.oscillation == (-210.0, 0.05)
    assert experiment.goniometer.axis_names == ("PHI", "KAPPA", "OMEGA")
    assert experiment.crystal is None
    assert len(experiment.detector) == 24


@pytest.mark.parametrize("folder", ["I23_P12M_thau", "centroid_test_data"])
def test_detector_geometry_reproduces_dials_s1(shared_data, folder):
    """Observed s1 from our lab-frame panels (composed down the detector hierarchy)
    agrees with the s1 DIALS stored for each reflection: a wrong frame would miss by degrees."""
    table = read_reflections(shared_data / folder / "indexed.refl")
    experiment = read_experiments(shared_data / folder / "indexed.expt")[0]
    panels = experiment.detector.panels
    index = table["panel"].astype(int)
    origin, fast, slow = (
        np.array([getattr(p, name) for p in panels])[index]
        for name in ("origin", "fast_axis", "slow_axis")
    )
    xy = table["xyzobs.mm.value"]
    lab = origin + xy[:, :1] * fast + xy[:, 1:2] * slow
    ours = lab / np.linalg.norm(lab, axis=1)[:, None]
    theirs = table["s1"] / np.linalg.norm(table["s1"], axis=1)[:, None]
    angles = np.degrees(np.arccos(np.clip((ours * theirs).sum(axis=1), -1, 1)))
    assert angles.max() < 0.05
    if folder == "I23_P12M_thau":
        assert len(np.unique(index)) == 24


def test_miller_index_d_spacing_agrees_with_observed(shared_data):
    table = read_reflections(shared_data / "I23_P12M_thau/indexed.refl")
    experiment = read_experiments(shared_data / "I23_P12M_thau/indexed.expt")[0]
    indexed = (table["flags"] & 4) != 0
    d_hkl = experiment.crystal.d_spacings(table["miller_index"][indexed])
    d_obs = 1 / np.linalg.norm(table["s1"][indexed] - experiment.beam.s0, axis=1)
    assert np.abs(d_obs / d_hkl - 1).max() < 0.02


def test_shared_models_stay_shared(tmp_path, shared_data):
    document = json.loads((shared_data / "eiger_therm/imported.expt").read_text())
    second = dict(document["experiment"][0], identifier="second")
    document["experiment"].append(second)
    path = tmp_path / "two.expt"
    path.write_text(json.dumps(document))
    experiments = read_experiments(path)
    assert experiments.identifiers() == [
        "5684a4f6-055b-79c4-db71-81f3df1142b7",
        "second",
    ]
    assert experiments[0].detector is experiments[1].detector
    assert experiments[0].beam is experiments[1].beam


def test_old_style_beam_with_s0(tmp_path, shared_data):
    document = json.loads((shared_data / "eiger_therm/imported.expt").read_text())
    document["beam"][0] = {"s0": [0.0, 0.0, -1 / 0.98027]}
    path = tmp_path / "s0.expt"
    path.write_text(json.dumps(document))
    beam = read_experiments(path)[0].beam
    assert beam.wavelength == pytest.approx(0.98027)
    assert beam.s0 == pytest.approx([0, 0, -1 / 0.98027])


def test_goniometer_rotations_scan_points_and_oscillation_widths(shared_data):
    refined = read_experiments(shared_data / "centroid_test_data_refined/refined.expt")[
        0
    ]
    # dials.refine writes per-image starts without widths: derived from the starts.
    assert refined.scan.oscillation_width == pytest.approx(0.2)
    assert len(refined.scan.oscillation_per_image) == 9
    assert refined.crystal.A_at_scan_points.shape == (10, 3, 3)
    assert np.allclose(
        refined.crystal.real_space @ refined.crystal.A, np.eye(3), atol=1e-12
    )
    assert np.allclose(refined.goniometer.setting_rotation, np.eye(3))
    i23 = read_experiments(shared_data / "I23_P12M_thau/indexed.expt")[0]
    assert i23.goniometer.axis_names == ("PHI", "KAPPA", "OMEGA")
    assert np.allclose(i23.goniometer.fixed_rotation, np.eye(3))  # angles 0, 0
    assert np.allclose(i23.goniometer.rotation_axis_lab, [1, 0, 0])
    assert i23.scan.oscillation_width == pytest.approx(0.05)
    assert i23.profile is None


def test_multi_axis_composition_follows_dxtbx():
    from dials_spot_size_analysis.formats.experiments import parse_experiments

    document = {
        "__id__": "ExperimentList",
        "experiment": [{"goniometer": 0}],
        "goniometer": [
            {
                "axes": [[1, 0, 0], [0, 0, 1], [0, 1, 0]],
                "angles": [90.0, 0.0, 90.0],
                "names": ["PHI", "OMEGA", "CHI"],
                "scan_axis": 1,
            }
        ],
    }
    goniometer = parse_experiments(document)[0].goniometer
    # F from PHI (below the scan axis): 90 degrees about x takes y to z.
    assert np.allclose(goniometer.fixed_rotation @ [0, 1, 0], [0, 0, 1])
    # S from CHI (above it): 90 degrees about y takes z to x; the lab axis is S z.
    assert np.allclose(goniometer.rotation_axis_lab, [1, 0, 0])


def test_stored_profiles(shared_data):
    stills = read_experiments(shared_data / "ssx_CuNiR/integrated.expt")
    assert [e.profile.kind for e in stills] == ["ellipsoid"] * 5
    assert stills[0].profile.sigma_b_deg is None
    # the ellipsoid model's mosaicity, under DIALS's names, as stored
    first = stills[0].profile
    assert first.parameterisation == "angular4"
    assert first.parameters == pytest.approx(
        (5.09132340872312e-4, 1.763712123812306e-6, 1.1464146084730638e-4,
         4.982614733898999e-4), rel=1e-15,
    )  # fmt: skip
    assert first.sigma[0] == pytest.approx(
        (2.592157405221201e-7, 8.979628822214363e-10, 0)
    )
    for still in stills:  # in these files, sigma = M M^T, M lower-triangular
        b1, b2, b3, b4 = still.profile.parameters
        m = np.array([[b1, 0, 0], [b2, b3, 0], [0, 0, b4]])
        assert np.allclose(still.profile.sigma, m @ m.T, rtol=1e-12, atol=0)
    from dials_spot_size_analysis.formats.experiments import parse_experiments

    document = {
        "__id__": "ExperimentList",
        "experiment": [{"profile": 0}, {"profile": 1}, {"profile": 7}],
        "profile": [
            {
                "__id__": "gaussian_rs",
                "n_sigma": 3,
                "sigma_b": [0.1, 0.2],
                "sigma_m": [1, 2],
            },
            {"__id__": "gaussian_rs", "n_sigma": 3},  # unreadable: kept raw
        ],
    }
    experiments = parse_experiments(document)
    assert experiments[0].profile.sigma_b_deg == (0.1, 0.2)
    assert experiments[0].profile.sigma_m_deg == (1.0, 2.0)
    assert experiments[1].profile.sigma_b_deg is None
    assert experiments[1].profile.raw == {"__id__": "gaussian_rs", "n_sigma": 3}
    assert experiments[2].profile is None
    # another kind's mosaicity read only where it is readable, never failing the read
    odd = parse_experiments(
        {
            "__id__": "ExperimentList",
            "experiment": [{"profile": 0}, {"profile": 1}],
            "profile": [
                {"__id__": "ellipsoid", "parameters": ["a"], "sigma": [[1, 2], [3]]},
                {"__id__": "ellipsoid", "parameterisation": 4, "parameters": [1e-4]},
            ],
        }
    )
    assert [e.profile.kind for e in odd] == ["ellipsoid"] * 2
    assert (odd[0].profile.parameters, odd[0].profile.sigma) == (None, None)
    assert odd[1].profile.parameterisation is None
    assert odd[1].profile.parameters == (1e-4,)
