"""Study reports: the Pareto front, hypervolume over trials and the other figures a user
reads a study by, as PNG files and an HTML page (``hpod report``, ``GET /v1/studies/{id}/report``)."""

from hpod.report._build import (
    FORMATS,
    HTML_NAME,
    ReportResult,
    build_report,
    report_html,
)
from hpod.report._data import SELECTION_HELP, ReportData, load_report_data, select_trial

__all__ = [
    "FORMATS",
    "HTML_NAME",
    "SELECTION_HELP",
    "ReportData",
    "ReportResult",
    "build_report",
    "load_report_data",
    "report_html",
    "select_trial",
]
