"""Reading radiology reports: CSV tables (IU X-ray, CT-RATE, any table with named columns), plain-text
files and DICOM Basic/Enhanced Text SR. Pure functions: nothing here touches the database.

Every reader returns ``ReportData`` with the report's text split into the four sections the platform
keeps (indication, comparison, findings, impression); everything else goes to ``extra``. The text is
not scrubbed here: an SR's own header identifiers travel in ``scrub_tokens`` and its original
accession number / Study Instance UID in ``link_keys``, for the service to scrub and pseudonymise.
"""

from studies.ingest.reports.common import SECTIONS, ReportData, report_sections, strip_image_suffix
from studies.ingest.reports.sr import read_report_sr, read_report_text
from studies.ingest.reports.table import LAYOUTS, count_csv_rows, iter_report_csv, read_report_csv

__all__ = [
    "LAYOUTS",
    "SECTIONS",
    "ReportData",
    "count_csv_rows",
    "iter_report_csv",
    "read_report_csv",
    "read_report_sr",
    "read_report_text",
    "report_sections",
    "strip_image_suffix",
]
