"""DICOM de-identification (PS3.15 Annex E basic profile with modified dates), identity extraction and the
JSON form of de-identified headers. Pure functions: no database, no storage."""

from studies.deid.core import (
    age_capped,
    burned_in_status,
    deidentify_header,
    header_from_json,
    header_identity,
    header_to_json,
    private_coding_scheme,
)

__all__ = [
    "age_capped",
    "burned_in_status",
    "deidentify_header",
    "header_from_json",
    "header_identity",
    "header_to_json",
    "private_coding_scheme",
]
