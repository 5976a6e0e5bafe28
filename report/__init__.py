"""Results to reports: the text log, the JSON document, plotly figures, PNG and HTML.

Nothing here computes a number that the result does not already hold.
"""
