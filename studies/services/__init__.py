"""Changes to studies data: ingest of scans, reports and gaze recordings."""
