"""The HTML report, in English and German: one self-contained file per run.

Fill a `ReportData` (the input contract, `clm.report.data`) and call `render_report` or
`write_report`. `clm.report.i18n` holds the words and number formats the dashboard
shares; `clm.report.charts` draws the inline SVG.
"""

from clm.report.data import Caveat, ReportData
from clm.report.html import render_report, write_report

__all__ = ["Caveat", "ReportData", "render_report", "write_report"]
