"""Exporters: each module has ``NAME``, ``LABEL_KINDS`` (the label kinds it can hold) and
``export(cases, sink, meta, progress=None) -> ExportSummary``; see ``releases/records.py``."""
