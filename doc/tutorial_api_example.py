from dials_spot_size_analysis.api import analyse
from dials_spot_size_analysis.formats import read_reflections

expt, refl = "examples/data/indexed.expt", "examples/data/indexed.refl"

# The defaults: indexed spots, Foreground pixels, 0..1000 in 100 bins.
result = analyse(refl, expt)
median, p95 = result.statistics["median"], result.statistics["p95"]
print(f"{result.selection['n_counted']} spots, median {median:g} px, 95% below {p95:g}")

usable = analyse(refl, expt, mask_code="Valid+Foreground")
same = (usable.histogram.counts == result.histogram.counts).all()
print("Valid|Foreground gives the same histogram:", same)

shoeboxes = read_reflections(refl).shoeboxes
images_spanned = shoeboxes.bbox[:, 5] - shoeboxes.bbox[:, 4]
print(
    "spots spanning 1, 2, 3 images:",
    [int((images_spanned == n).sum()) for n in (1, 2, 3)],
)
