"""Arrays in, results out: flag selection, mask codes, histograms, statistics, geometry.

Nothing here reads files or prints.
"""
