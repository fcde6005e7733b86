"""The one jinja2 environment of the HTML pages (report and diff): package templates, autoescaped throughout."""

from __future__ import annotations

import math

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from convdoctor.reports.charts import quantity
from convdoctor.reports.presentation import byte_size

ENVIRONMENT = Environment(
    loader=PackageLoader("convdoctor.reports", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def milliseconds(micro: float) -> float:
    """Microseconds as milliseconds."""
    return micro / 1e3


def giga(value: float) -> float:
    """A rate in units of 10⁹: FLOP/s as GFLOP/s, bytes/s as GB/s."""
    return value / 1e9


def finite(value: float | None) -> float | None:
    """The value, or None where it is None, NaN or infinite (as report.json has it)."""
    return None if value is None or not math.isfinite(value) else value


ENVIRONMENT.filters.update(quantity=quantity, byte_size=byte_size, ms=milliseconds, giga=giga, finite=finite)
