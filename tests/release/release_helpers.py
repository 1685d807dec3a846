"""Shared by the release tests: the bundled examples, and a copy of the digits
example's config changed by a function (tests/shared.py, which the run-wide builds use too)."""

from shared import EXAMPLE, SK_EXAMPLE
from shared import example_config as _config

__all__ = ["EXAMPLE", "SK_EXAMPLE", "_config"]
