"""SUV body-weight (SUVbw) scale factor from PET DICOM header values.

``SUVbw = stored value × RescaleSlope + RescaleIntercept (the "rescaled" value) × factor``; the factor is
dimensionless when the rescaled value is in Bq/ml (Units ``BQML``) and the SUV unit is g/ml.

Input is the dict the ingest stores (``studies.ingest.dicom_meta.pet_meta``), shaped like the input of the
cornerstonejs calculate-suv library: PatientWeight kg, RadionuclideTotalDose Bq, RadionuclideHalfLife s,
Units ``BQML``/``CNTS``/``GML``, DecayCorrection ``START``/``ADMIN``/``NONE``, DICOM DA/TM/DT strings for
SeriesDate/Time, AcquisitionDate/Time, RadiopharmaceuticalStartTime/StartDateTime, CorrectedImage list,
PhilipsPETPrivateGroup ``{SUVScaleFactor, ActivityConcentrationScaleFactor}`` (numbers or number strings)
and optionally ``GEPrivatePostInjectionDateTime`` (GE (0009,100d), a DT string).

Rules (the QIBA SUV pseudo-code as calculate-suv applies it):

* CorrectedImage must contain ``ATTN`` and ``DECY``.
* ``BQML``: factor = weight g / decayed dose Bq. With DecayCorrection ``START`` the dose decays from the
  injection to the scan time, ``dose × 2^(-Δt / half-life)``; with ``ADMIN`` the pixels are already decay
  corrected to the injection, so the dose is used as is; ``NONE`` (per-frame decay) is refused.
* Scan time: SeriesDate+SeriesTime when it is not after the earliest AcquisitionDate+AcquisitionTime of the
  series; otherwise (the series was re-created after the acquisition, e.g. by reconstruction) the GE
  private post-injection date-time if present, else the earliest acquisition date-time. The Siemens
  frame-based back-computation of QIBA (FrameReferenceTime, ActualFrameDuration) is not applied, as in
  calculate-suv; those fields never change the factor.
* Injection time: RadiopharmaceuticalStartDateTime, else RadiopharmaceuticalStartTime on the SeriesDate;
  with that implied date, an injection time of day after the scan time of day is taken as the evening
  before when that gives a decay time of at most 12 h (a scan past midnight).
* ``CNTS`` (Philips): the private SUVScaleFactor (7053,1000) when present and non-zero in every instance;
  else ActivityConcentrationScaleFactor (7053,1009) × the ``BQML`` factor; else refused.
* ``GML``: the pixels are already SUVbw, factor 1.

The factor is **per series**: every input the factor depends on is a series-level attribute, and the scan
time is the series' earliest acquisition, so ``suvbw_factors`` returns the same value for every instance
(the per-instance list mirrors calculate-suv's output, and the RescaleSlope/Intercept, which may differ per
instance, are applied to the pixels before this factor).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from core.errors import FieldError

__all__ = ["SuvError", "suvbw_factor", "suvbw_factors"]

_MAX_MIDNIGHT_DECAY = timedelta(hours=12)
_SERIES_FIELDS = (
    "Units",
    "CorrectedImage",
    "PatientWeight",
    "RadionuclideTotalDose",
    "RadionuclideHalfLife",
    "DecayCorrection",
    "SeriesDate",
    "SeriesTime",
    "RadiopharmaceuticalStartTime",
    "RadiopharmaceuticalStartDateTime",
)


class SuvError(FieldError):
    """A header set that cannot give an SUVbw factor; ``field`` names the missing or bad DICOM field."""


def _text(meta: Mapping[str, Any], field: str) -> str:
    value = meta.get(field)
    return "" if value is None else str(value).strip()


def _positive(meta: Mapping[str, Any], field: str) -> float:
    value = meta.get(field)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise SuvError(field, "missing")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SuvError(field, f"not a number: {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise SuvError(field, f"must be a positive number, got {value!r}")
    return number


def _parse_da(value: str, field: str) -> datetime:
    """DICOM DA ``YYYYMMDD`` (or the old ``YYYY.MM.DD``) at midnight."""
    digits = value.replace(".", "").replace("-", "")
    if not re.fullmatch(r"\d{8}", digits):
        raise SuvError(field, f"not a DICOM date: {value!r}")
    try:
        return datetime(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        raise SuvError(field, f"not a valid date: {value!r}") from None


def _parse_tm(value: str, field: str) -> timedelta:
    """DICOM TM ``HH[MM[SS[.F{1,6}]]]`` (or the old ``HH:MM:SS``) as the time since midnight."""
    match = re.fullmatch(r"(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?", value.replace(":", ""))
    if not match:
        raise SuvError(field, f"not a DICOM time: {value!r}")
    hours, minutes, seconds = (int(g or 0) for g in match.groups()[:3])
    micros = int((match.group(4) or "").ljust(6, "0"))
    if hours > 23 or minutes > 59 or seconds > 60:
        raise SuvError(field, f"not a valid time: {value!r}")
    return timedelta(hours=hours, minutes=minutes, seconds=seconds, microseconds=micros)


def _parse_dt(value: str, field: str) -> datetime:
    """DICOM DT ``YYYYMMDD[HHMMSS[.F]]`` with any ``±ZZZZ`` offset ignored (all times of one study share
    the scanner's local clock)."""
    body = re.split(r"[+-]", value.strip(), maxsplit=1)[0]
    if len(body) < 8:
        raise SuvError(field, f"not a DICOM date-time: {value!r}")
    day = _parse_da(body[:8], field)
    return day + (_parse_tm(body[8:], field) if body[8:] else timedelta())


def _date_time(
    meta: Mapping[str, Any], date_field: str, time_field: str, fallback_date: str = ""
) -> datetime:
    date = _text(meta, date_field) or fallback_date
    time = _text(meta, time_field)
    if not date:
        raise SuvError(date_field, "missing")
    if not time:
        raise SuvError(time_field, "missing")
    return _parse_da(date, date_field) + _parse_tm(time, time_field)


def _scan_time(meta: Mapping[str, Any], earliest_acquisition: datetime) -> datetime:
    series = _date_time(meta, "SeriesDate", "SeriesTime")
    if series <= earliest_acquisition:
        return series
    ge_private = _text(meta, "GEPrivatePostInjectionDateTime")
    if ge_private:
        return _parse_dt(ge_private, "GEPrivatePostInjectionDateTime")
    return earliest_acquisition


def _acquisition(meta: Mapping[str, Any]) -> datetime:
    """AcquisitionDate+AcquisitionTime; a missing AcquisitionDate falls back to the SeriesDate."""
    return _date_time(meta, "AcquisitionDate", "AcquisitionTime", fallback_date=_text(meta, "SeriesDate"))


def _decay_seconds(meta: Mapping[str, Any], scan: datetime) -> float:
    """Seconds from the injection to ``scan``."""
    explicit = _text(meta, "RadiopharmaceuticalStartDateTime")
    if explicit:
        start = _parse_dt(explicit, "RadiopharmaceuticalStartDateTime")
        if start > scan:
            raise SuvError("RadiopharmaceuticalStartDateTime", f"injection {start} is after the scan {scan}")
        return (scan - start).total_seconds()
    time = _text(meta, "RadiopharmaceuticalStartTime")
    if not time:
        raise SuvError("RadiopharmaceuticalStartTime", "missing (and no RadiopharmaceuticalStartDateTime)")
    series_date = _text(meta, "SeriesDate")
    if not series_date:
        raise SuvError("SeriesDate", "missing (needed to date the RadiopharmaceuticalStartTime)")
    start = _parse_da(series_date, "SeriesDate") + _parse_tm(time, "RadiopharmaceuticalStartTime")
    if start > scan:
        start -= timedelta(days=1)  # injected before midnight, scanned after it
        if scan - start > _MAX_MIDNIGHT_DECAY:
            raise SuvError("RadiopharmaceuticalStartTime", f"injection time {time} is after the scan {scan}")
    return (scan - start).total_seconds()


def _bqml_factor(meta: Mapping[str, Any], earliest_acquisition: datetime) -> float:
    weight_g = _positive(meta, "PatientWeight") * 1000.0
    dose = _positive(meta, "RadionuclideTotalDose")
    correction = _text(meta, "DecayCorrection").upper()
    if correction == "ADMIN":
        return weight_g / dose
    if correction != "START":
        reason = "missing" if not correction else f"{correction!r} is not supported (START or ADMIN)"
        raise SuvError("DecayCorrection", reason)
    half_life = _positive(meta, "RadionuclideHalfLife")
    decay = _decay_seconds(meta, _scan_time(meta, earliest_acquisition))
    return weight_g / (dose * 2.0 ** (-decay / half_life))


def _philips(meta: Mapping[str, Any], key: str) -> float | None:
    group = meta.get("PhilipsPETPrivateGroup") or {}
    value = group.get(key) if isinstance(group, Mapping) else None
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SuvError(f"PhilipsPETPrivateGroup.{key}", f"not a number: {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise SuvError(f"PhilipsPETPrivateGroup.{key}", f"must be a non-negative number, got {value!r}")
    return number or None


def _check_corrected(meta: Mapping[str, Any]) -> None:
    corrected = meta.get("CorrectedImage")
    values = [corrected] if isinstance(corrected, str) else list(corrected or [])
    flags = {str(v).strip().upper() for v in values}
    missing = [flag for flag in ("ATTN", "DECY") if flag not in flags]
    if missing:
        raise SuvError("CorrectedImage", f"must contain ATTN and DECY, lacks {'/'.join(missing)}: {values}")


def _factors(instances: Sequence[Mapping[str, Any]]) -> list[float]:
    if not instances:
        raise SuvError("instances", "no header set given")
    first = instances[0]
    for instance in instances[1:]:
        for field in _SERIES_FIELDS:
            if instance.get(field) != first.get(field):
                raise SuvError(field, "differs between the instances; they are not one series")
    _check_corrected(first)
    units = _text(first, "Units").upper()
    if units == "GML":
        return [1.0] * len(instances)
    if units not in ("BQML", "CNTS"):
        raise SuvError("Units", "missing" if not units else f"{units!r} is not BQML, CNTS or GML")
    if units == "CNTS":
        suv_scale = [_philips(i, "SUVScaleFactor") for i in instances]
        if all(s is not None for s in suv_scale):
            return [float(s) for s in suv_scale if s is not None]
        activity = [_philips(i, "ActivityConcentrationScaleFactor") for i in instances]
        if not all(a is not None for a in activity):
            raise SuvError(
                "PhilipsPETPrivateGroup",
                "Units are CNTS but neither SUVScaleFactor nor ActivityConcentrationScaleFactor is set",
            )
    else:
        activity = [1.0] * len(instances)
    earliest = min(_acquisition(i) for i in instances)
    bqml = _bqml_factor(first, earliest)
    return [float(a) * bqml for a in activity if a is not None]


def suvbw_factors(instances: Sequence[Mapping[str, Any]]) -> list[float]:
    """SUVbw factor of each instance (header dict) of one PET series, in input order.

    The series-level fields must agree between instances (else ``SuvError`` naming the first that
    differs); the scan time uses the earliest acquisition over all instances, so the values are equal.
    Raises ``SuvError(field, reason)`` when no factor can be computed.
    """
    return _factors(instances)


def suvbw_factor(meta: Mapping[str, Any]) -> float:
    """SUVbw scale factor of one series from its stored header dict (``pet_meta``) or one instance's.

    Multiply rescaled voxel values (Bq/ml for ``BQML``, counts for Philips ``CNTS``) by it to get SUVbw
    (g/ml). Raises ``SuvError(field, reason)`` naming the missing or bad field.
    """
    return _factors([meta])[0]
