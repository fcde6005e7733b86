"""The one jinja2 environment of the HTML pages (report and diff): package templates, autoescaped throughout."""

from __future__ import annotations

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
ENVIRONMENT.filters["quantity"] = quantity
ENVIRONMENT.filters["byte_size"] = byte_size
