"""SUVbw scale factors against the cornerstonejs/calculate-suv header sets in ../shared/data."""

import copy
import json
from pathlib import Path

import pytest

from ml.generators.suv import SuvError, suvbw_factor, suvbw_factors

SUV_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "pet" / "suv-metadata"
REL = 1e-6


def _cases() -> list:
    """(set name, instance index) of every instance of every header set; one skipped case when absent."""
    if not SUV_DIR.is_dir():
        return [pytest.param("absent", 0, id="shared-data-absent")]
    out = []
    for path in sorted(SUV_DIR.glob("*-instances.json")):
        name = path.name.removesuffix("-instances.json")
        for index in range(len(json.loads(path.read_text()))):
            out.append(pytest.param(name, index, id=f"{name}-{index}"))
    return out


@pytest.fixture
def suv_dir(shared_data: Path) -> Path:
    return shared_data / "pet" / "suv-metadata"


@pytest.fixture
def expected(suv_dir: Path) -> dict[str, float]:
    data = json.loads((suv_dir / "expected_suvbw_factors.json").read_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}


def _instances(suv_dir: Path, name: str) -> list[dict]:
    return json.loads((suv_dir / f"{name}-instances.json").read_text())


@pytest.fixture
def siemens(suv_dir: Path) -> dict:
    return _instances(suv_dir, "SIEMENS")[0]


def test_every_header_set_has_an_expected_factor(suv_dir, expected):
    names = {p.name.removesuffix("-instances.json") for p in suv_dir.glob("*-instances.json")}
    assert names == set(expected)
    assert len(names) == 8


@pytest.mark.parametrize("name,index", _cases())
def test_factor_of_each_instance_matches_calculate_suv(suv_dir, expected, name, index):
    instances = _instances(suv_dir, name)
    assert suvbw_factor(instances[index]) == pytest.approx(expected[name], rel=REL)
    assert suvbw_factors(instances)[index] == pytest.approx(expected[name], rel=REL)


def test_factor_is_per_series_even_when_frame_times_differ(suv_dir, expected):
    instances = _instances(suv_dir, "SIEMENS")
    assert len({i["FrameReferenceTime"] for i in instances}) == 3
    factors = suvbw_factors(instances)
    assert len(set(factors)) == 1


def test_series_time_after_acquisition_uses_earliest_acquisition(suv_dir, expected):
    instances = _instances(suv_dir, "CPS_AND_BQML_AC_DT_-_S_DT")
    later = copy.deepcopy(instances[0])
    later["AcquisitionTime"] = "131000.000000"  # a later bed position; the earliest one still rules
    factors = suvbw_factors([later, *instances])
    assert factors == pytest.approx([expected["CPS_AND_BQML_AC_DT_-_S_DT"]] * 4, rel=REL)
    assert suvbw_factor(later) > factors[0]  # alone, a later scan: more decay, a larger factor


def test_ge_private_post_injection_time_is_the_scan_time(suv_dir):
    meta = copy.deepcopy(_instances(suv_dir, "CPS_AND_BQML_AC_DT_-_S_DT")[0])
    meta["GEPrivatePostInjectionDateTime"] = "20201217120037"  # the injection time itself: no decay
    assert suvbw_factor(meta) == pytest.approx(69 * 1000 / 388e6, rel=1e-12)


def test_admin_decay_correction_uses_the_injected_dose(siemens):
    siemens["DecayCorrection"] = "ADMIN"
    assert suvbw_factor(siemens) == pytest.approx(67 * 1000 / 374e6, rel=1e-12)


def test_gml_is_already_suv(siemens):
    siemens["Units"] = "GML"
    assert suvbw_factor(siemens) == 1.0


def test_philips_cnts_without_suv_factor_uses_activity_concentration(suv_dir):
    meta = _instances(suv_dir, "PHILIPS_BQML")[0]
    bqml = suvbw_factor(meta)
    meta["Units"] = "CNTS"
    meta["PhilipsPETPrivateGroup"] = {"ActivityConcentrationScaleFactor": "4.709921"}
    assert suvbw_factor(meta) == pytest.approx(4.709921 * bqml, rel=1e-12)


def test_injection_date_implied_by_series_date_across_midnight(siemens):
    del siemens["RadiopharmaceuticalStartDateTime"]
    siemens["RadiopharmaceuticalStartTime"] = "233000"
    siemens.update(SeriesTime="003000", AcquisitionTime="003000.5")  # scanned one hour after injection
    assert suvbw_factor(siemens) == pytest.approx(67000 / (374e6 * 2 ** (-3600 / 6586.2)), rel=1e-9)


@pytest.mark.parametrize(
    "change,field",
    [
        ({"PatientWeight": None}, "PatientWeight"),
        ({"PatientWeight": 0}, "PatientWeight"),
        ({"RadionuclideTotalDose": "abc"}, "RadionuclideTotalDose"),
        ({"RadionuclideHalfLife": None}, "RadionuclideHalfLife"),
        ({"Units": "PROPCNTS"}, "Units"),
        ({"Units": ""}, "Units"),
        ({"DecayCorrection": "NONE"}, "DecayCorrection"),
        ({"DecayCorrection": None}, "DecayCorrection"),
        ({"CorrectedImage": ["ATTN", "SCAT"]}, "CorrectedImage"),
        ({"SeriesTime": ""}, "SeriesTime"),
        ({"SeriesDate": "2020-13-45"}, "SeriesDate"),
        ({"AcquisitionTime": "25:99"}, "AcquisitionTime"),
        (
            {"RadiopharmaceuticalStartDateTime": None, "RadiopharmaceuticalStartTime": None},
            "RadiopharmaceuticalStartTime",
        ),
        ({"RadiopharmaceuticalStartDateTime": "20201217120000"}, "RadiopharmaceuticalStartDateTime"),
        (
            {"RadiopharmaceuticalStartDateTime": "", "RadiopharmaceuticalStartTime": "120000"},
            "RadiopharmaceuticalStartTime",
        ),
    ],
)
def test_header_sets_that_cannot_give_a_factor_name_the_field(siemens, change, field):
    siemens.update(change)
    with pytest.raises(SuvError) as info:
        suvbw_factor(siemens)
    assert info.value.field == field
    assert isinstance(info.value, ValueError)


def test_cnts_without_philips_factors_is_refused(suv_dir):
    meta = _instances(suv_dir, "PHILIPS_CNTS_AND_SUV")[0]
    meta["PhilipsPETPrivateGroup"] = {}
    with pytest.raises(SuvError) as info:
        suvbw_factor(meta)
    assert info.value.field == "PhilipsPETPrivateGroup"


def test_instances_of_different_series_are_refused(suv_dir):
    a, b = _instances(suv_dir, "SIEMENS")[:2]
    b["PatientWeight"] = 70
    with pytest.raises(SuvError) as info:
        suvbw_factors([a, b])
    assert info.value.field == "PatientWeight"
    with pytest.raises(SuvError):
        suvbw_factors([])
