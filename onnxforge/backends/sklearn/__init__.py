"""scikit-learn sources: loading (sources.py) and running (runner.py). sklearn and
skops load inside the functions."""

from __future__ import annotations

from onnxforge.backends.sklearn.runner import sklearn_source_runner
from onnxforge.backends.sklearn.sources import SKLEARN_SUFFIXES

RUNNERS = {"sklearn": sklearn_source_runner}
SUFFIXES = {"sklearn": SKLEARN_SUFFIXES}
