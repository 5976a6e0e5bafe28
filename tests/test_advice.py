"""Spot-finding limits and the profile model checked against the data; the log and .phil
readers; the suggested .phil parsed against DIALS's real parameter names and types."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from libtbx.phil import parse as parse_phil

from dials_spot_size_analysis.algorithms import advice
from dials_spot_size_analysis.formats import FileFormatError, read_reflections
from dials_spot_size_analysis.formats.dials_logs import (
    parse_find_spots_log,
    read_spot_finding_parameters,
)
from dials_spot_size_analysis.report.suggestions import (
    phil_by_program,
    render_log_lines,
    render_phil,
)

RNG_SEED = 20261202


def exponential_sizes(n=10000, scale=30.0, smallest=3, seed=RNG_SEED):
    """Integer spot sizes with a decaying tail, as real spot-finding tables have."""
    rng = np.random.default_rng(seed)
    return smallest + np.floor(rng.exponential(scale, n))


def compact_distances(n=5000, seed=RNG_SEED):
    """Peak-centroid distances of compact spots (3-D normal offsets), cut at 2 px."""
    rng = np.random.default_rng(seed)
    distance = np.linalg.norm(rng.normal(0.0, 0.35, (n, 3)), axis=1)
    return distance[distance <= 2.0]


# ----------------------------------------------------------------- max_spot_size


def test_max_spot_size_pile_up_is_flagged():
    rng = np.random.default_rng(RNG_SEED)
    sizes = np.concatenate([exponential_sizes(), rng.integers(950, 1001, 100)])
    check = advice.check_max_spot_size(sizes, sizes, np.ones(sizes.size))
    assert check["value"] == 1000 and "factory.py" in check["source"]
    assert check["margin"] == 100
    assert check["n_near"] == 100 and check["expected_near"] < 1
    assert check["change_called_for"]
    assert "pile-up" in check["reasons"][0]
    suggestion = check["suggestion"]
    assert suggestion["parameter"] == "spotfinder.filter.max_spot_size"
    assert (suggestion["current"], suggestion["suggested"]) == (1000, 2000)
    assert suggestion["evidence"]["n_near"] == 100
    assert sum(check["histogram"]["counts"]) == 100
    assert check["histogram"]["band"] == [900.0, 1000.0]


def test_max_spot_size_decaying_tail_is_not_flagged():
    sizes = exponential_sizes()
    check = advice.check_max_spot_size(sizes, sizes, np.ones(sizes.size))
    assert check["n_near"] == 0
    assert not check["change_called_for"] and check["suggestion"] is None


def test_max_spot_size_tail_not_decaying_at_the_cap_is_flagged():
    """Spots spread evenly up to and past the cap (DIALS #937): no pile-up, but the
    density at the cap has not fallen, so the cap is cutting the population."""
    sizes = np.random.default_rng(RNG_SEED).integers(3, 1300, 10000)
    sizes = sizes[sizes <= 1000]
    check = advice.check_max_spot_size(sizes, sizes, np.full(sizes.size, 4))
    assert check["change_called_for"]
    assert any("has not decayed" in reason for reason in check["reasons"])
    # 1000 px over 4 images is 250 px on one image, about 16 x 16 px.
    assert check["on_one_image"]["footprint_at_cap"] == 250
    assert check["on_one_image"]["footprint_side_px"] == pytest.approx(15.81, abs=0.01)
    assert check["over_images"]["cube_side_px"] == pytest.approx(10.0)


def test_max_spot_size_removed_by_the_log_is_flagged():
    sizes = exponential_sizes()
    quiet = advice.check_max_spot_size(sizes, sizes, np.ones(sizes.size), removed=34)
    assert not quiet["change_called_for"]
    loud = advice.check_max_spot_size(
        sizes, sizes, np.ones(sizes.size), 1000, "log", removed=7209
    )
    assert loud["change_called_for"] and loud["source"] == "log"
    assert loud["removed_fraction"] == pytest.approx(7209 / 17209)


def test_upper_tail_bands_extrapolates_the_decay():
    values = np.repeat([75.0, 85.0, 95.0], [40, 20, 30])
    bands = advice.upper_tail_bands(values, 100, 10)
    assert (bands["n_before_previous"], bands["n_previous"], bands["n_near"]) == (
        40,
        20,
        30,
    )
    assert bands["expected_near"] == 10.0  # 20 * 20 / 40
    assert bands["pile_up"]  # 30 >= 2 * 10 and 30 - 10 > 3 * sqrt(10)


def _plain_bands(values, limit, band):
    """The band counts written plainly with numpy: the reference for the kernel."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    edges = limit - band * np.arange(3, -1, -1)
    return (
        int(np.count_nonzero((values >= edges[0]) & (values < edges[1]))),
        int(np.count_nonzero((values >= edges[1]) & (values < edges[2]))),
        int(np.count_nonzero((values >= edges[2]) & (values <= limit))),
        int(np.count_nonzero(values > limit)),
    )


def _awkward_values(dtype):
    """Values on and beside every edge of the bands and histograms below, with NaN and
    infinities for real types."""
    values = np.concatenate([np.arange(-5, 130), [70, 80, 90, 100, 100, 101, 2**40]])
    values = values.astype(dtype)
    if np.issubdtype(dtype, np.floating):
        values = np.concatenate(
            [values, [np.nan, np.inf, -np.inf, 69.99999999999999, 100.00000000000001]]
        ).astype(dtype)
    return values


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float32, np.float64])
def test_band_counts_and_histogram_equal_numpy(dtype):
    values = _awkward_values(dtype)
    bands = advice.upper_tail_bands(values, 100, 10)
    found = (
        bands["n_before_previous"],
        bands["n_previous"],
        bands["n_near"],
        bands["n_beyond_limit"],
    )
    assert found == _plain_bands(values, 100, 10)
    for edges in (np.linspace(70, 100, 16), np.linspace(-5.5, 3.5, 10), [0.0, 1.0]):
        finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
        expected, _ = np.histogram(finite, bins=np.asarray(edges, dtype=np.float64))
        counts = advice._histogram(values, np.asarray(edges), 100, (90, 100))["counts"]
        assert counts == expected.tolist()
    equal = np.full(4, 5.0)  # a degenerate range: numpy puts its values in the last bin
    expected, _ = np.histogram(values[np.isfinite(values)], bins=equal)
    assert advice._histogram(values, equal, 5, (5, 5))["counts"] == expected.tolist()
    assert advice._histogram(values[:0], np.linspace(0, 1, 3), 1, (0, 1))["counts"] == [
        0,
        0,
    ]


# ----------------------------------------------------------------- min_spot_size


def test_min_spot_size_cut_in_the_bulk_is_flagged():
    sizes = exponential_sizes(scale=2.0, smallest=6)
    check = advice.check_min_spot_size(
        sizes, sizes, np.ones(sizes.size), detector_type="SENSOR_CCD"
    )
    assert check["value"] == 6 and "Auto" in check["source"]
    assert check["median_size"] == 7
    assert check["change_called_for"]
    assert check["suggestion"]["suggested"] == 5


def test_min_spot_size_well_above_the_limit_is_not_flagged():
    sizes = exponential_sizes(scale=10.0, smallest=3)
    check = advice.check_min_spot_size(
        sizes, sizes, np.ones(sizes.size), detector_type="SENSOR_PAD"
    )
    assert check["value"] == 3
    assert not check["change_called_for"] and check["suggestion"] is None


@pytest.mark.parametrize("median_above_limit, flagged", [(1, True), (2, False)])
def test_min_spot_size_threshold_is_one_pixel_above_the_limit(
    median_above_limit, flagged
):
    sizes = np.array([3, 3, 4, 4, 3 + median_above_limit, 9, 10, 12, 20])
    check = advice.check_min_spot_size(sizes, sizes, np.ones(sizes.size), 3)
    assert check["median_size"] == 3 + median_above_limit
    assert check["change_called_for"] is flagged


def test_min_spot_size_never_suggested_below_two():
    sizes = exponential_sizes(scale=1.0, smallest=2)
    check = advice.check_min_spot_size(sizes, sizes, np.ones(sizes.size), 2, "phil")
    assert check["reasons"] and check["source"] == "phil"
    assert "already the smallest" in check["reasons"][-1]
    assert not check["change_called_for"] and check["suggestion"] is None


# ----------------------------------------------------------------- max_separation


def test_max_separation_pile_up_is_flagged():
    rng = np.random.default_rng(RNG_SEED)
    distance = np.concatenate([compact_distances(), rng.uniform(1.8, 2.0, 250)])
    check = advice.check_max_separation(distance)
    assert check["value"] == 2.0 and check["margin"] == 0.25
    assert check["n_near"] == 250
    assert check["change_called_for"]
    assert check["suggestion"]["parameter"] == "spotfinder.filter.max_separation"
    assert check["suggestion"]["suggested"] == 3.0


def test_max_separation_compact_spots_are_not_flagged():
    check = advice.check_max_separation(compact_distances(), removed=47519)
    assert check["n_near"] == 0
    assert not check["change_called_for"] and check["suggestion"] is None


# ----------------------------------------------------------------- real DIALS files

# file, n, median size, smallest size, spots at the smallest, spots at it or 1 px more,
# median and largest z extent
REAL_FILES = [
    ("I23_P12M_thau/strong.refl", 208, 9, 3, 18, 38, 1, 1),
    ("I23_P12M_thau/indexed.refl", 208, 9, 3, 18, 38, 1, 1),
    ("eiger_therm/strong.refl", 112, 7, 3, 9, 25, 1, 1),
    ("centroid_test_data/indexed.refl", 654, 11, 3, 90, 161, 3, 9),
    ("ssx_CuNiR/strong_5.refl", 759, 3, 2, 193, 414, 1, 1),
    ("ssx_CuNiR/indexed.refl", 360, 4, 2, 66, 164, 1, 1),
]


def _spots(path):
    shoeboxes = read_reflections(path).shoeboxes
    size = shoeboxes.count_mask_values(4)
    extent_z = shoeboxes.bbox[:, 5] - shoeboxes.bbox[:, 4]
    return shoeboxes, size, extent_z


def _footprint_and_peak_distance(shoeboxes, centroids):
    """Plain per-row reference (the package's own measurement is built elsewhere):
    the most Foreground pixels on one image, and DIALS's peak (first maximum of the
    box's data, C order) to centroid distance."""
    footprint, distance = [], []
    for row in range(len(shoeboxes)):
        data, mask, _ = shoeboxes.pixels(row)
        footprint.append(int(((mask & 4) == 4).sum(axis=(1, 2)).max()))
        z, y, x = np.unravel_index(np.argmax(data), data.shape)
        x0, _, y0, _, z0, _ = shoeboxes.bbox[row]
        peak = np.array([x + x0, y + y0, z + z0]) + 0.5
        distance.append(float(np.linalg.norm(peak - centroids[row])))
    return np.array(footprint), np.array(distance)


@pytest.mark.parametrize(
    "name, n, median, smallest, at_limit, near_limit, median_z, max_z", REAL_FILES
)
def test_real_files_call_for_no_change(
    shared_data, name, n, median, smallest, at_limit, near_limit, median_z, max_z
):
    shoeboxes, size, extent_z = _spots(shared_data / name)
    assert (len(size), np.median(size), size.min()) == (n, median, smallest)
    assert (np.median(extent_z), extent_z.max()) == (median_z, max_z)

    low = advice.check_min_spot_size(size, size, extent_z)
    assert low["value"] == smallest and low["source"].startswith("inferred")
    assert (low["n_at_limit"], low["n_near"], low["n_below_limit"]) == (
        at_limit,
        near_limit,
        0,
    )
    assert not low["change_called_for"] and low["suggestion"] is None

    high = advice.check_max_spot_size(size, size, extent_z)
    assert (high["n_near"], high["n_beyond_limit"]) == (0, 0)
    assert high["on_one_image"]["footprint_at_cap"] == pytest.approx(1000 / median_z)
    assert not high["change_called_for"] and high["suggestion"] is None


def test_real_rotation_data_max_separation(shared_data):
    """centroid_test_data: a third of spots lie within 1 px of the 2 px limit, but the
    tail decays to it (73, 33, 21 spots in the last three quarter-pixel bands)."""
    path = shared_data / "centroid_test_data/indexed.refl"
    table = read_reflections(path)
    footprint, distance = _footprint_and_peak_distance(
        table.shoeboxes, table["xyzobs.px.value"]
    )
    assert np.count_nonzero(distance > 1.0) == 216
    check = advice.check_max_separation(distance)
    assert (check["n_before_previous"], check["n_previous"], check["n_near"]) == (
        73,
        33,
        21,
    )
    assert check["expected_near"] == pytest.approx(33 * 33 / 73)
    assert not check["change_called_for"]
    assert np.median(footprint) == 5 and footprint.max() == 18
    sentence = advice.summary_sentence(np.median(footprint), 3)
    assert sentence.startswith(
        "your spots are about 2 px across (covering 5 pixels on one image) and span "
        "3 images; "
        "the defaults assume"
    )
    assert "333 px per image over 3 images" in sentence
    across = advice.summary_sentence(5.0, 3, median_across=4.0)
    assert across.startswith(
        "your spots are about 4 px across along their longer side (covering 5 pixels"
    )


def _sigma_b_px(experiment, sigma_b_deg):
    panel = experiment.detector.panels[0]
    distance = abs(float(panel.origin @ panel.normal))
    return distance * math.tan(math.radians(sigma_b_deg)) / panel.pixel_size[0]


def test_real_profile_model_calls_for_no_change(shared_data):
    from dials_spot_size_analysis.formats import read_experiments

    reference = json.loads((shared_data / "profile_reference.json").read_text())[0]
    assert reference["reflections"] == "centroid_test_data/indexed.refl"
    experiment = read_experiments(shared_data / reference["experiments"])[0]
    oscillation = experiment.scan.oscillation[1]
    shoeboxes, _, extent_z = _spots(shared_data / reference["reflections"])
    extent_xy = np.maximum(
        shoeboxes.bbox[:, 1] - shoeboxes.bbox[:, 0],
        shoeboxes.bbox[:, 3] - shoeboxes.bbox[:, 2],
    )
    sigma_b_px = _sigma_b_px(experiment, reference["sigma_b_deg"])
    assert sigma_b_px == pytest.approx(1.046, abs=1e-3)
    check = advice.check_profile_model(
        reference["sigma_b_deg"],
        reference["sigma_m_deg"],
        sigma_b_px,
        reference["sigma_m_deg"] / oscillation,
        oscillation,
        extent_xy,
        extent_z,
        n_images=experiment.scan.num_images,
    )
    assert check["box_z_images"] == pytest.approx(5.90, abs=0.01)
    assert not any(check["flags"].values())
    assert check["suggestions"] == [] and not check["change_called_for"]
    lines = render_log_lines([check])
    assert lines[-1].startswith("No parameter change suggested")


# ----------------------------------------------------------------- profile model


def absurd_model(**overrides):
    """DIALS #599: sigma_m 20.8 deg, for spots spanning at most 3 images of 0.1 deg."""
    arguments = {
        "sigma_b_deg": 0.05,
        "sigma_m_deg": 20.8,
        "sigma_b_px": 1.0,
        "sigma_m_images": 208.0,
        "oscillation_deg": 0.1,
        "extent_xy": np.full(100, 6),
        "extent_z": np.repeat([1, 2, 3], [40, 40, 20]),
        "n_images": 900,
    }
    arguments.update(overrides)
    return advice.check_profile_model(**arguments)


def test_absurd_sigma_m_gets_fixed_sigmas_sized_from_the_spots():
    check = absurd_model()
    assert check["flags"]["sigma_m_absurd"]
    assert check["flags"]["box_z_many_times_spots"]
    assert not check["flags"]["box_xy_many_times_spots"]
    by_name = {item["parameter"]: item for item in check["suggestions"]}
    assert set(by_name) == {advice.SIGMA_B, advice.SIGMA_M}
    # box = 2 * 3 images: sigma_m = 3 images * 0.1 deg * 2 / (2 * 3 sigmas)
    assert by_name[advice.SIGMA_M]["suggested"] == pytest.approx(0.1)
    assert by_name[advice.SIGMA_B]["suggested"] == 0.05  # kept: both must be set
    assert all(item["program"] == "dials.integrate" for item in check["suggestions"])


def test_sane_model_gets_no_suggestion():
    check = absurd_model(sigma_m_deg=0.1, sigma_m_images=1.0)
    assert not any(check["flags"].values()) and check["suggestions"] == []


def test_box_many_times_the_spots_in_xy():
    """DIALS #1615: boxes of 47 x 48 px for spots a few pixels across."""
    check = absurd_model(
        sigma_m_deg=0.1, sigma_m_images=1.0, sigma_b_deg=0.4, sigma_b_px=8.0
    )
    assert check["flags"]["box_xy_many_times_spots"]
    by_name = {item["parameter"]: item for item in check["suggestions"]}
    # a foreground of 48 px (a box of 96): 8 times the spots
    assert (check["foreground_xy_px"], check["box_xy_px"]) == (48.0, 96.0)
    assert check["box_to_spot_xy"] == 8.0
    # foreground = 2 * 6 px: sigma_b = 6 px * 0.05 deg/px * 2 / 6
    assert by_name[advice.SIGMA_B]["suggested"] == pytest.approx(0.1)
    assert by_name[advice.SIGMA_M]["suggested"] == 0.1


def test_the_suggested_sigmas_clear_the_flag_they_answer():
    """The box across is twice its foreground (DIALS's sigma_b_multiplier): the flag
    compares the foreground, which the suggested sigma_b sizes to twice the spots."""
    flagged = absurd_model(
        sigma_m_deg=0.1, sigma_m_images=1.0, sigma_b_deg=0.4, sigma_b_px=8.0
    )
    by_name = {item["parameter"]: item["suggested"] for item in flagged["suggestions"]}
    sigma_b_deg = by_name[advice.SIGMA_B]
    sigma_b_px = sigma_b_deg / 0.05  # 0.05 deg per px, as in the flagged model
    fixed = absurd_model(
        sigma_m_deg=by_name[advice.SIGMA_M], sigma_m_images=1.0,
        sigma_b_deg=sigma_b_deg, sigma_b_px=sigma_b_px,
    )  # fmt: skip
    assert (fixed["foreground_xy_px"], fixed["box_xy_px"]) == (12.0, 24.0)
    assert not any(fixed["flags"].values()) and fixed["suggestions"] == []


@pytest.mark.parametrize(
    "n_sigma, suggested",
    [
        (9.0, {advice.N_SIGMA: 3.0}),  # at DIALS's 3 the box fits: n_sigma the cause
        (3.0, None),  # the default already: no n_sigma to blame
    ],
)
def test_a_raised_n_sigma_is_named_as_the_cause(n_sigma, suggested):
    # sigma_b 2.5 px: a foreground of 15 px at n_sigma 3 (2.5 times the 6 px spots),
    # 45 px at 9 (7.5 times)
    check = absurd_model(
        sigma_m_deg=0.1, sigma_m_images=1.0, sigma_b_deg=0.125, sigma_b_px=2.5,
        n_sigma=n_sigma,
    )  # fmt: skip
    assert check["flags"]["box_xy_many_times_spots"] is (n_sigma == 9.0)
    found = {item["parameter"]: item["suggested"] for item in check["suggestions"]}
    assert found == (suggested or {})
    if suggested:
        [item] = check["suggestions"]
        assert item["current"] == 9.0 and item["reason"].startswith(
            "n_sigma = 9 widens every box 3 times over DIALS's default 3: at 3 it is "
            "about 30 px x 6.0 images, within 4 times the spots"
        )
        # a box cut to a scan of 13 images: at n_sigma 3, 6 images, not 10 / 3
        cut = absurd_model(
            sigma_m_deg=0.1, sigma_m_images=1.0, sigma_b_deg=0.125, sigma_b_px=2.5,
            n_sigma=n_sigma, n_images=13, box_z_images=10.0,
        )  # fmt: skip
        assert "about 30 px x 6.0 images" in cut["suggestions"][0]["reason"]


@pytest.mark.parametrize(
    "n_sigma, sigma_b_px, short",
    [
        (1.0, 1.0, "the foreground 2.0 px across, less than the 6 px 95% of spots "
         "span and the box 2.0 images, less than the 3 images 95% of spots span"),
        (2.0, 1.0, "the foreground 4.0 px across, less than the 6 px 95% of spots "
         "span:"),
        (1.0, 4.0, "the box 2.0 images, less than the 3 images 95% of spots span:"),
        (2.5, 1.5, None),  # 7.5 px across and 5 images: wide enough
    ],
)  # fmt: skip
def test_a_box_narrower_than_the_spots_is_said(n_sigma, sigma_b_px, short):
    """sigma_m 1 image, 95% of spots 6 px across and 3 images: a small n_sigma cuts
    them off; below DIALS's 3 only, and n_sigma = 3 is suggested."""
    check = absurd_model(
        sigma_m_deg=0.1, sigma_m_images=1.0, n_sigma=n_sigma,
        sigma_b_deg=0.05 * sigma_b_px, sigma_b_px=sigma_b_px,
    )  # fmt: skip
    assert check["flags"]["box_smaller_than_spots"] is (short is not None)
    if short is None:
        assert check["suggestions"] == [] and check["reasons"] == []
        return
    assert check["reasons"][0].startswith(f"n_sigma = {n_sigma:g} makes {short}")
    [item] = check["suggestions"]
    assert (item["parameter"], item["current"], item["suggested"]) == (
        advice.N_SIGMA, n_sigma, 3.0,
    )  # fmt: skip


def test_sigma_m_tracking_the_image_width_is_flagged_without_a_change():
    check = absurd_model(
        sigma_m_deg=0.03, sigma_m_images=0.3, extent_z=np.ones(100), n_images=100
    )
    assert check["flags"]["sigma_m_tracks_image_width"]
    assert check["suggestions"] == []
    assert any("#119" in reason for reason in check["reasons"])


def test_memory_suggestions():
    sane = {"sigma_m_deg": 0.1, "sigma_m_images": 1.0, "shoebox_memory_bytes": 255e9}
    many = absurd_model(memory_limit_bytes=64e9, nproc=8, **sane)
    assert many["flags"]["memory_exceeds_limit"]
    assert many["memory_allowed_gb"] == pytest.approx(51.2)
    (item,) = many["suggestions"]
    assert (item["parameter"], item["current"], item["suggested"]) == (
        advice.NPROC,
        8,
        1,
    )
    one = absurd_model(memory_limit_bytes=64e9, block_size_deg=10.0, **sane)
    (item,) = one["suggestions"]
    assert (item["parameter"], item["current"], item["suggested"]) == (
        advice.BLOCK_SIZE, 10.0, 2.0
    )  # fmt: skip
    assert item["reason"] == (
        "the shoeboxes of a block of 10 deg need 255 GB, more than the 51.2 GB "
        "allowed; a block of 2 deg (20 images, integration.block.units = degrees) "
        "would need about 51 GB, the memory taken as growing with the block"
    )
    auto = absurd_model(memory_limit_bytes=64e9, n_images=100, **sane)
    assert auto["suggestions"][0]["current"] == "Auto"  # DIALS's block.size = auto
    # 255 GB over a 10-degree block of 0.1-degree images: 2.55 GB for one image,
    # more than 0.8 x 2 GB
    hopeless = absurd_model(memory_limit_bytes=2e9, block_size_deg=10.0, **sane)
    (item,) = hopeless["suggestions"]
    assert (item["parameter"], item["suggested"]) == (advice.BLOCK_SIZE, None)
    assert item["reason"] == (
        "even a block of one image would need about 2.55 GB, more than the 1.6 GB "
        "allowed: the boxes are too large for this memory (a smaller n_sigma, fixed "
        "sigmas, or a larger machine)"
    )
    just = absurd_model(memory_limit_bytes=4e9, block_size_deg=10.0, **sane)
    assert just["suggestions"][0]["suggested"] == 0.1  # 3.2 GB allowed: one image
    fits = absurd_model(memory_limit_bytes=512e9, **sane)
    assert fits["suggestions"] == []
    # An absurd model is the cause: fix it, not the memory.
    cause = absurd_model(shoebox_memory_bytes=255e9, memory_limit_bytes=64e9)
    assert {item["parameter"] for item in cause["suggestions"]} == {
        advice.SIGMA_B,
        advice.SIGMA_M,
    }


# ----------------------------------------------------------------- logs and .phil

# Lines in DIALS's exact wording: find_spots.py (header, "Saved"), flex_ext.py
# ("Setting ..."), finder.py ("Extracted", "Removed"), factory.py ("Filtered ...").
FIND_SPOTS_LOG = """\
DIALS 3.30.dev0-g0123abcd
The following parameters have been modified:

spotfinder {
  filter {
    max_spot_size = 500
    max_separation = 3
  }
}
input {
  experiments = imported.expt
}

Setting spotfinder.filter.min_spot_size=3
Configuring spot finder from input parameters
--------------------------------------------------------------------------------
Finding strong spots in imageset 0
--------------------------------------------------------------------------------

Finding spots in image 1 to 1800...
Extracting strong pixels from images
 Using multiprocessing with 4 parallel job(s)

Found 1234 strong pixels on image 1

Extracted 405471 spots
Removed 123788 spots with size < 3 pixels
Removed 34 spots with size > 500 pixels
Calculated 281649 spot centroids
Calculated 281649 spot intensities
Filtered 234130 of 281649 spots by peak-centroid distance
--------------------------------------------------------------------------------
Finding strong spots in imageset 1
--------------------------------------------------------------------------------

Extracted 1000 spots
Removed 200 spots with size < 3 pixels
Removed 6 spots with size > 500 pixels
Filtered 700 of 794 spots by peak-centroid distance

--------------------------------------------------------------------------------
Saved 234830 reflections to strong.refl
"""


def test_find_spots_log(tmp_path):
    path = tmp_path / "dials.find_spots.log"
    path.write_text(FIND_SPOTS_LOG)
    result = read_spot_finding_parameters(path)
    assert result["kind"] == "dials.find_spots log"
    assert result["dials_version"] == "DIALS 3.30.dev0-g0123abcd"
    assert (result["extracted"], result["removed_too_small"]) == (406471, 123988)
    assert result["removed_too_large"] == 40
    assert (result["peak_centroid_kept"], result["peak_centroid_before"]) == (
        234830,
        282443,
    )
    assert result["removed_by_peak_centroid"] == 47613
    assert result["saved"] == 234830
    assert result["modified"]["input.experiments"] == "imported.expt"
    used = result["parameters"]
    assert used["spotfinder.filter.min_spot_size"]["value"] == 3
    assert used["spotfinder.filter.max_spot_size"]["value"] == 500
    assert "size > 500 pixels" in used["spotfinder.filter.max_spot_size"]["source"]
    assert used["spotfinder.filter.max_separation"]["value"] == 3.0
    assert "line 2" in used["spotfinder.filter.max_separation"]["source"]


def test_log_without_modified_parameters_uses_the_setting_line():
    text = "DIALS 3.30\nSetting spotfinder.filter.min_spot_size=6\nExtracted 5 spots\n"
    result = parse_find_spots_log(text, "x.log")
    assert result["parameters"] == {
        "spotfinder.filter.min_spot_size": {
            "value": 6,
            "source": "x.log line 2: 'Setting spotfinder.filter.min_spot_size=6'",
        }
    }
    assert result["removed_too_large"] is None


def test_phil_file(tmp_path):
    path = tmp_path / "find_spots.phil"
    path.write_text(
        "spotfinder.filter.min_spot_size=4\n"
        "spotfinder { filter { max_spot_size = 2000\n max_separation = 1.5 } }\n"
        "spotfinder.threshold.dispersion.gain = 0.5\n"
        "profile.gaussian_rs.parameters.sigma_b = None\n"
    )
    result = read_spot_finding_parameters(path)
    assert result["kind"] == "phil"
    values = {name: item["value"] for name, item in result["parameters"].items()}
    assert values == {
        "spotfinder.filter.min_spot_size": 4,
        "spotfinder.filter.max_spot_size": 2000,
        "spotfinder.filter.max_separation": 1.5,
        "profile.gaussian_rs.parameters.sigma_b": "None",  # DIALS's default: computed
    }
    assert result["modified"]["spotfinder.threshold.dispersion.gain"] == "0.5"
    # DIALS's default min_spot_size, as a full parameter listing shows it
    path.write_text(
        "spotfinder { filter { min_spot_size = Auto\n max_spot_size = 1000 } }"
    )
    found = read_spot_finding_parameters(path)["parameters"]
    assert found["spotfinder.filter.min_spot_size"]["value"] == "Auto"


@pytest.mark.parametrize(
    "line, problem",
    [
        (
            "spotfinder.filter.min_spot_size = None",
            "min_spot_size = None (no such filter in DIALS's spot finding) leaves no "
            "limit to check the spots against: give the value used, a whole number from "
            "1 to 1e+09, or Auto, or leave it out to check DIALS's default.",
        ),
        (
            "spotfinder.filter.max_spot_size = Auto",
            "max_spot_size = Auto (not a value DIALS takes) leaves no limit",
        ),
        ("spotfinder.filter.max_spot_size = None", "max_spot_size = None (not a value"),
        (
            "spotfinder.filter.max_separation = auto",
            "max_separation = auto (not a value",
        ),
    ],
)
def test_a_limit_that_is_no_limit_is_refused_in_one_sentence(tmp_path, line, problem):
    path = tmp_path / "find_spots.phil"
    path.write_text(line + "\n")
    with pytest.raises(FileFormatError) as caught:
        read_spot_finding_parameters(path)
    assert problem in str(caught.value)


@pytest.mark.parametrize(
    "content, problem",
    [
        ("Dear user, this is neither.\n", "neither a dials.find_spots log nor"),
        ("", "defines no parameter: give the dials.find_spots log or a .phil"),
        ("# only a comment\n", "defines no parameter"),
        (b"\x93NUMPY\x00\x01", "binary file"),
    ],
)
def test_neither_log_nor_phil(tmp_path, content, problem):
    path = tmp_path / "notes.txt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(FileFormatError, match=problem) as error:
        read_spot_finding_parameters(path)
    assert error.value.path == str(path)


@pytest.mark.parametrize(
    "name, text, line",
    [
        ("find_spots.phil", "spotfinder.filter.min_spot_size=-5\n", ""),
        ("find_spots.phil", "spotfinder.filter.max_spot_size=0\n", ""),
        ("find_spots.phil", "spotfinder.filter.max_spot_size=99999999999999999\n", ""),
        ("find_spots.phil", "spotfinder.filter.max_separation=nan\n", ""),
        ("find_spots.phil", "spotfinder.filter.max_separation=inf\n", ""),
        ("find_spots.phil", "spotfinder.filter.min_spot_size=three\n", ""),
        ("find_spots.phil", "profile.gaussian_rs.parameters.sigma_m=-1\n", ""),
        (
            "find_spots.log",
            "The following parameters have been modified:\nspotfinder {\n  filter "
            "{\n    min_spot_size = nan\n  }\n}\n",
            "",
        ),
        (
            "find_spots.log",
            "Removed 3 spots with size > 99999999999999999999 pixels\n",
            "find_spots.log line 1: ",
        ),
    ],
)
def test_a_value_dials_would_not_take_is_refused(tmp_path, name, text, line):
    """Each passed through as text or a huge number and ended in a traceback in the
    checks of the limits (a string times a float, a histogram of negative size)."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(FileFormatError, match="is not a value DIALS takes") as error:
        read_spot_finding_parameters(path)
    assert str(error.value).startswith(f"{path}: {line}")


def test_a_device_or_folder_is_refused_without_reading_it(tmp_path):
    """/dev/zero never ends: it was read until memory ran out."""
    for path in ("/dev/zero", str(tmp_path)):
        with pytest.raises(FileFormatError, match="is not a regular file"):
            read_spot_finding_parameters(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileFormatError, match="cannot be read"):
        read_spot_finding_parameters(tmp_path / "absent.log")


def test_log_with_a_broken_modified_block():
    text = "The following parameters have been modified:\n\nspotfinder {\n  x = 1\n"
    with pytest.raises(FileFormatError, match="does not parse as PHIL"):
        parse_find_spots_log(text, "bad.log")


# ----------------------------------------------------------------- the suggested .phil

# DIALS's real parameter names and types: spotfinder.filter (src/dials/algorithms/
# spot_finding/factory.py), profile.gaussian_rs.parameters (src/dials/algorithms/
# profile_model/gaussian_rs/model.py, under dials.integrate's "profile" scope),
# integration.block and integration.mp (src/dials/algorithms/integration/integrator.py).
FIND_SPOTS_SCOPE = """
spotfinder {
  filter {
    min_spot_size = Auto
      .type = int(value_min=1)
    max_spot_size = 1000
      .type = int(value_min=1, allow_none=False)
    max_separation = 2
      .type = float(value_min=0)
  }
}
"""
INTEGRATE_SCOPE = """
profile {
  gaussian_rs {
    parameters {
      n_sigma = 3.0
        .type = float(value_min=0)
      sigma_b = None
        .type = float(value_min=0)
      sigma_m = None
        .type = float(value_min=0)
    }
  }
}
integration {
  block {
    size = auto
      .type = float
    units = *degrees radians frames
      .type = choice
    max_memory_usage = 0.80
      .type = float(value_min=0.0, value_max=1.0)
  }
  mp {
    nproc = 1
      .type = int(value_min=1)
  }
}
"""


def _every_suggestion():
    rng = np.random.default_rng(RNG_SEED)
    big = np.concatenate([exponential_sizes(), rng.integers(950, 1001, 100)])
    small = exponential_sizes(scale=2.0, smallest=6)
    distance = np.concatenate([compact_distances(), rng.uniform(1.8, 2.0, 250)])
    checks = [
        advice.check_min_spot_size(small, small, np.ones(small.size), 6, "log"),
        advice.check_max_spot_size(big, big, np.ones(big.size)),
        advice.check_max_separation(distance),
        absurd_model(),
        absurd_model(
            sigma_m_deg=0.1,
            sigma_m_images=1.0,
            shoebox_memory_bytes=255e9,
            memory_limit_bytes=64e9,
            nproc=8,
        ),
        absurd_model(
            sigma_m_deg=0.1,
            sigma_m_images=1.0,
            shoebox_memory_bytes=255e9,
            memory_limit_bytes=64e9,
            block_size_deg=10.0,
        ),
        absurd_model(sigma_m_deg=0.1, sigma_m_images=1.0, n_sigma=9.0),
    ]
    return checks, advice.collect_suggestions(*checks)


@pytest.mark.parametrize(
    "program, scope",
    [("dials.find_spots", FIND_SPOTS_SCOPE), ("dials.integrate", INTEGRATE_SCOPE)],
)
def test_suggested_phil_parses_against_dials_names(program, scope):
    _, suggestions = _every_suggestion()
    text = phil_by_program(suggestions)[program]
    master = parse_phil(scope)
    working, unused = master.fetch(
        source=parse_phil(text), track_unused_definitions=True
    )
    assert unused == []
    mine = [item for item in suggestions if item["program"] == program]
    assert len(mine) >= 3
    extracted = working.extract()
    for item in mine:
        value = extracted
        for part in item["parameter"].split("."):
            value = getattr(value, part)
        assert value == pytest.approx(item["suggested"])
    lines = text.splitlines()
    for item in mine:
        at = lines.index(
            f"{item['parameter']} = {item['suggested']:.6g}"
            if isinstance(item["suggested"], float)
            else f"{item['parameter']} = {item['suggested']}"
        )
        assert lines[at - 1] == f"# {item['reason']}"
        if item["parameter"] == advice.BLOCK_SIZE:  # in degrees, whatever was set
            assert lines[at + 1] == "integration.block.units = degrees"
            assert extracted.integration.block.units == "degrees"


def test_every_suggestion_has_the_documented_keys():
    _, suggestions = _every_suggestion()
    assert {item["parameter"] for item in suggestions} == {
        advice.MIN_SPOT_SIZE,
        advice.MAX_SPOT_SIZE,
        advice.MAX_SEPARATION,
        advice.SIGMA_B,
        advice.SIGMA_M,
        advice.NPROC,
        advice.BLOCK_SIZE,
        advice.N_SIGMA,
    }
    for item in suggestions:
        assert set(item) == {
            "program",
            "parameter",
            "current",
            "suggested",
            "reason",
            "evidence",
        }
        assert "\n" not in item["reason"] and item["evidence"]


def test_phil_without_suggestions_says_so():
    text = render_phil([], "dials.find_spots")
    assert "no change" in text
    assert parse_phil(text).all_definitions() == []


def test_log_lines():
    checks, _ = _every_suggestion()
    lines = render_log_lines(checks[:3], summary="your spots are small")
    assert lines[0] == "Your spots are small."
    assert lines[1].startswith(
        "spotfinder.filter.min_spot_size = 6 (log): 6282 of 10000 spots (62.8%) "
        "at it or up to 1 px above it; a change is called for"
    )
    assert any(
        line.startswith(
            "Suggest dials.find_spots spotfinder.filter.max_spot_size = 2000 (now 1000)"
        )
        for line in lines
    )


def test_medians_of_whole_numbers_from_their_tally_equal_numpys():
    from dials_spot_size_analysis.algorithms.advice import _median

    rng = np.random.default_rng(7)
    for n in (1, 2, 3, 10, 1001, 100_000):
        values = rng.integers(0, 40, n).astype(np.int32)
        assert _median(values) == float(np.median(values.astype(float)))
    reals = rng.random(1001)
    reals[::7] = np.nan
    assert _median(reals) == float(np.median(reals[np.isfinite(reals)]))
    assert _median(np.zeros(0, np.int32)) is None
    assert _median(np.array([np.nan])) is None


@pytest.mark.parametrize("q", [5, 50, 95, 99.5])
def test_percentiles_of_whole_numbers_equal_numpys(q):
    rng = np.random.default_rng(int(q * 10))
    for n in (1, 2, 3, 10, 101, 5000):
        values = rng.integers(0, 40, n)
        expected = float(np.percentile(values.astype(np.float64), q))
        assert advice._percentile(values, q) == expected
        reals = values + 0.25
        expected_reals = float(np.median(reals) if q == 50 else np.percentile(reals, q))
        assert advice._percentile(reals, q) == expected_reals
    assert advice._percentile(np.array([np.nan, np.inf]), q) is None


def test_advise_tallies_each_array_once_with_the_same_advice(monkeypatch):
    """Several checks take medians and percentiles of the same sizes, footprints and
    extents: within one advise() each array is tallied once, and the advice is what
    tallying every time gives."""
    from types import SimpleNamespace

    rng = np.random.default_rng(4)
    n = 3000
    extent = rng.integers(1, 9, (3, n))
    spots = SimpleNamespace(
        size=extent[0] * extent[1] * extent[2] // 2 + 1,
        footprint=extent[0] * extent[1],
        extent_x=extent[0],
        extent_y=extent[1],
        extent_z=extent[2],
        peak_centroid_distance=rng.gamma(2.0, 0.4, n),
        experiment=np.zeros(n, np.int64),
    )
    profile = {"applicable": True, "identifier": "a", "n_sigma": 3.0}
    profile.update(sigma_b_deg=0.03, sigma_b_px=1.2, sigma_m_deg=0.1)
    profile.update(sigma_m_images=1.0, shoebox={"median_size_px": [9, 9, 6]})
    tallied = []
    counts_of = advice.value_counts

    def value_counts(values):
        tallied.append((values.__array_interface__["data"][0], values.size))
        return counts_of(values)

    monkeypatch.setattr(advice, "value_counts", value_counts)
    arguments = (spots, ["a"], [profile])
    shared = advice.advise(*arguments)
    once = list(tallied)
    tallied.clear()
    every_time = advice.advise.__wrapped__(*arguments)  # no tallies kept
    assert json.dumps(shared, default=str) == json.dumps(every_time, default=str)
    assert len(set(once)) == len(once) < len(tallied)
    assert advice._TALLIES.get() is None  # nothing kept after the call
