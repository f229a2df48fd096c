"""Report import: readers (CSV layouts, text, DICOM SR) and the service (storing, scrubbing, linking)."""

import csv
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from studies.ingest.reports import (
    read_report_csv,
    read_report_sr,
    read_report_text,
    report_sections,
)
from studies.ingest.types import IngestError
from studies.models import Patient, Report, Scan, Study
from studies.pseudonyms import accession_hash, uid_remap
from studies.scrub import identifier_hashes, identifier_tokens
from studies.services.reports import reports_import, reports_link

IU = "reports/iu_reports_dev.csv"


# ------------------------------------------------------------------------------------------ helpers


def make_study(project, key: str, *, names=(), accession: str = "", study_uid: str | None = None, scans=()):
    """A patient, study and scans with the minimal fields, as the scan importers would leave them."""
    secret = project.deid_secret
    patient = Patient.objects.create(
        project=project, pseudonym=f"P{key}"[:32], identity_hash=f"h-{key}", date_shift_days=-10
    )
    study = Study.objects.create(
        project=project,
        patient=patient,
        study_uid=study_uid or uid_remap(secret, f"study-{key}"),
        external_id=key if not scans else "",
        accession_hash=accession_hash(secret, accession) if accession else "",
        identifier_hashes=identifier_hashes(secret, identifier_tokens(names=list(names), ids=[accession])),
    )
    for i, name in enumerate(scans):
        Scan.objects.create(
            project=project,
            study=study,
            series_uid=uid_remap(secret, f"series-{key}-{i}"),
            name=name,
            modality="DX",
            source_format="png",
            ndim=2,
            shape=[512, 512],
            spacing=[1.0, 1.0],
            affine=[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]],
            dtype="uint8",
            file=f"scans/{name}.nii.gz",
            source_checksum=f"c-{key}-{i}",
        )
    return study


def write_csv(path: Path, header: list[str], rows: list[list[str]], **kwargs) -> Path:
    with open(path, "w", newline="", encoding=kwargs.pop("encoding", "utf-8")) as fh:
        writer = csv.writer(fh, **kwargs)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def sr_with_text(tmp_path: Path, *, name: str, accession: str, sections: dict[str, str]) -> Path:
    """A Basic Text SR made from pydicom's reportsi.dcm: new header identity, one container per section."""
    ds = pydicom.dcmread(get_testdata_file("reportsi.dcm"))
    ds.PatientName = name
    ds.PatientID = "PID-77812"
    ds.PatientBirthDate = "19500214"
    ds.AccessionNumber = accession
    template = ds.ContentSequence[-1]  # the "Section Heading" container with one TEXT item
    items = []
    for heading, text in sections.items():
        container = pydicom.Dataset()
        container.RelationshipType = "CONTAINS"
        container.ValueType = "CONTAINER"
        container.ContinuityOfContent = "SEPARATE"
        code = pydicom.Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "1", "99TEST", heading
        container.ConceptNameCodeSequence = [code]
        item = pydicom.Dataset()
        item.RelationshipType, item.ValueType = "CONTAINS", "TEXT"
        item.ConceptNameCodeSequence = template.ContentSequence[0].ConceptNameCodeSequence
        item.TextValue = text
        container.ContentSequence = [item]
        items.append(container)
    ds.ContentSequence = list(ds.ContentSequence[:-1]) + items
    path = tmp_path / "report_sr.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


# ------------------------------------------------------------------------------------------ sections


def test_sections_headings_on_own_line_inline_and_any_case():
    text = (
        "CHEST PA AND LATERAL\n"
        "Clinical History: cough for 3 weeks\n"
        "comparison: 2019 study\n"
        "FINDINGS\n"
        "Lungs are clear. History of smoking noted.\n"
        "Technique: PA and lateral\n"
        "Impression: No acute disease. RECOMMENDATION: none"
    )
    sections = report_sections(text)
    assert sections["indication"] == "cough for 3 weeks"
    assert sections["comparison"] == "2019 study"
    assert sections["findings"] == "Lungs are clear. History of smoking noted."
    assert sections["impression"] == "No acute disease."
    assert sections["extra"] == {
        "technique": "PA and lateral",
        "recommendation": "none",
        "preamble": "CHEST PA AND LATERAL",
    }


def test_sections_without_headings_are_findings():
    sections = report_sections("The heart is normal in size.\r\nNo effusion.")
    assert sections["findings"] == "The heart is normal in size.\nNo effusion."
    assert sections["impression"] == sections["indication"] == ""
    assert report_sections("Lungs clear. IMPRESSION: normal")["impression"] == "normal"
    reason = report_sections("REASON FOR EXAM: fever\nCONCLUSION: pneumonia")
    assert (reason["indication"], reason["impression"]) == ("fever", "pneumonia")


# ------------------------------------------------------------------------------------------ IU (real)


def _iu_rows(shared_data: Path) -> list[dict[str, str]]:
    with open(shared_data / IU, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_iu_csv_is_read_with_sections_and_extra(shared_data):
    rows = _iu_rows(shared_data)
    text_cols = ("indication", "comparison", "findings", "impression")
    with_text = [r for r in rows if any(r[c].strip() for c in text_cols)]
    reports, errors = read_report_csv(shared_data / IU, id_column="uid")
    assert len(reports) == len(with_text) == 1117
    assert len(errors) == len(rows) - len(with_text)
    assert all("no report text" in e.reason and e.field.startswith("row ") for e in errors)
    row = next(r for r in rows if r["uid"] == "1900")
    report = next(r for r in reports if r.external_id == "1900")
    assert report.sections == {c: row[c] for c in text_cols}
    assert report.extra["MeSH"] == row["MeSH"] and report.extra["Problems"] == row["Problems"]
    assert "uid" not in report.extra
    assert report.raw_text.startswith("INDICATION: XXXX year old hypertension")
    assert report_sections(report.raw_text)["findings"] == row["findings"]


def test_iu_import_stores_each_report_once(shared_data, project):
    rows = _iu_rows(shared_data)
    with_text = [
        r for r in rows if any(r[c].strip() for c in ("indication", "comparison", "findings", "impression"))
    ]
    calls = []

    summary = reports_import(
        project=project,
        csv_path=shared_data / IU,
        id_column="uid",
        progress=lambda d, t: calls.append((d, t)),
    )

    assert summary.stored == Report.objects.filter(project=project).count() == len(with_text)
    assert len(summary.errors) == len(rows) - len(with_text)
    assert calls[-1] == (len(rows), len(rows))
    stored = Report.objects.get(project=project, external_id="1900")
    row = next(r for r in rows if r["uid"] == "1900")
    assert (stored.indication, stored.comparison, stored.findings, stored.impression) == (
        row["indication"],
        row["comparison"],
        row["findings"],
        row["impression"],
    )
    assert stored.extra["MeSH"] == row["MeSH"] and stored.extra["scrubbed"] == 0
    assert stored.source == "csv" and stored.source_name == "iu_reports_dev.csv" and stored.study is None

    again = reports_import(project=project, csv_path=shared_data / IU, id_column="uid")
    assert (again.stored, again.updated, again.skipped) == (0, 0, len(with_text))
    assert Report.objects.filter(project=project).count() == len(with_text)


def test_iu_report_links_to_png_scans_by_id_pattern(shared_data, project):
    study = make_study(project, "cxr1900", scans=["CXR1900_IM-0584-1001", "CXR1900_IM-0584-2001"])
    summary = reports_import(
        project=project, csv_path=shared_data / IU, id_column="uid", link="id", link_pattern=r"CXR(\d+)_"
    )
    assert summary.linked == 1 and summary.unlinked_count == summary.stored - 1
    assert Report.objects.get(project=project, external_id="1900").study == study


# ------------------------------------------------------------------------------------------ CSV cases


def test_ct_rate_layout_with_bom_crlf_and_multiline_cells(tmp_path, project):
    header = ["VolumeName", "ClinicalInformation_EN", "Technique_EN", "Findings_EN", "Impressions_EN"]
    rows = [
        ["valid_1_a_1.nii.gz", "Cough.", "Non-contrast CT.", "Trachea is midline.\r\nNo nodule.", "Normal."],
        ["valid_2_a_1.nii.gz", "", "", "Emphysema, upper lobes.", "Emphysema."],
    ]
    path = write_csv(tmp_path / "ct_rate.csv", header, rows, encoding="utf-8-sig", lineterminator="\r\n")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")

    reports, errors = read_report_csv(path, id_column="VolumeName")

    assert errors == []
    first = reports[0]
    assert first.external_id == "valid_1_a_1.nii.gz"
    assert first.sections == {
        "indication": "Cough.",
        "comparison": "",
        "findings": "Trachea is midline.\nNo nodule.",
        "impression": "Normal.",
    }
    assert first.extra == {"Technique_EN": "Non-contrast CT."}
    assert first.raw_text.splitlines()[0] == "CLINICAL INFORMATION: Cough."
    assert report_sections(first.raw_text)["extra"]["technique"] == "Non-contrast CT."
    study = make_study(project, "ct", scans=["valid_2_a_1"])
    summary = reports_import(project=project, csv_path=path)  # layout and id column detected
    assert (summary.stored, summary.linked) == (2, 1)
    assert Report.objects.get(external_id="valid_2_a_1.nii.gz").study == study


def test_explicit_text_columns_map_by_name(tmp_path):
    path = write_csv(
        tmp_path / "r.csv",
        ["report_id", "history_text", "findings_body", "impressions", "notes"],
        [["A1", "Fever", "Consolidation left base.", "Pneumonia.", "urgent"]],
    )
    (report,), errors = read_report_csv(
        path, id_column="report_id", text_columns=["history_text", "findings_body", "impressions", "notes"]
    )
    assert errors == []
    assert report.sections["indication"] == "Fever" and report.sections["impression"] == "Pneumonia."
    assert report.extra == {"notes": "urgent"}
    assert report.raw_text.split("\n\n") == [
        "HISTORY TEXT: Fever",
        "FINDINGS BODY: Consolidation left base.",
        "IMPRESSIONS: Pneumonia.",
        "NOTES: urgent",
    ]


def test_free_text_column_is_split_by_headings(tmp_path):
    path = write_csv(
        tmp_path / "r.csv", ["id", "report"], [["9", "FINDINGS: Small effusion.\nIMPRESSION: Effusion."]]
    )
    (report,), _ = read_report_csv(path, id_column="id", text_columns=["report"])
    assert report.sections["findings"] == "Small effusion." and report.sections["impression"] == "Effusion."


def test_missing_named_column_is_one_error_and_no_rows(tmp_path, project):
    path = write_csv(tmp_path / "bad.csv", ["uid", "findings"], [["1", "Normal."], ["2", "Clear."]])

    reports, errors = read_report_csv(path, id_column="accession", text_columns=["findings", "impression"])

    assert reports == [] and len(errors) == 1
    assert (
        errors[0].file == str(path) and "accession" in errors[0].reason and "impression" in errors[0].reason
    )
    summary = reports_import(project=project, csv_path=path, id_column="accession", text_columns=["findings"])
    assert summary.stored == 0 and len(summary.errors) == 1 and "accession" in summary.errors[0]["reason"]
    assert not Report.objects.exists()


def test_non_utf8_bytes_fall_back_with_a_warning(tmp_path, project):
    path = tmp_path / "latin.csv"
    path.write_bytes(
        b'uid,findings,impression\n1,Normal heart.,Clear.\n2,"Ca\xe9cal \x93opacity\x94 seen.",Opacity.\n'
    )
    reports, errors = read_report_csv(path, id_column="uid")
    assert errors == [] and len(reports) == 2
    assert reports[1].sections["findings"] == "Ca\u00e9cal \u201copacity\u201d seen."
    assert reports[0].warnings == [] and "not UTF-8" in reports[1].warnings[0]
    summary = reports_import(project=project, csv_path=path)
    assert summary.stored == 2 and any("row 3" in w for w in summary.warnings)
    assert Report.objects.get(external_id="2").extra["warnings"]


def test_utf16_and_lone_cr_line_endings(tmp_path):
    utf16 = tmp_path / "u16.csv"
    utf16.write_bytes(b"\xff\xfe" + "uid,findings\r\n1,Caf\u00e9 normal.\r\n".encode("utf-16-le"))
    old_mac = tmp_path / "cr.csv"
    old_mac.write_bytes(b'uid,findings\r1,Clear.\r2,"Two\rlines."\r')
    (first,), errors = read_report_csv(utf16)
    assert errors == [] and first.sections["findings"] == "Caf\u00e9 normal."
    reports, errors = read_report_csv(old_mac)
    assert errors == [] and [r.sections["findings"] for r in reports] == ["Clear.", "Two\nlines."]
    tsv = write_csv(tmp_path / "r.tsv", ["uid", "impression"], [["5", "Normal, no change."]], delimiter="\t")
    assert read_report_csv(tsv)[0][0].sections["impression"] == "Normal, no change."


def test_duplicate_ids_and_empty_rows_fail_alone(tmp_path, project):
    path = write_csv(
        tmp_path / "dup.csv",
        ["uid", "findings", "impression"],
        [
            ["1", "First text.", ""],
            ["2", "", ""],
            ["1", "Second text.", ""],
            ["", "No id.", ""],
            ["3", "Ok.", ""],
        ],
    )
    reports, errors = read_report_csv(path, id_column="uid")
    assert [r.external_id for r in reports] == ["1", "3"]
    assert [(e.field, e.reason.split(" ")[0]) for e in errors] == [
        ("row 3", "no"),
        ("row 4", "duplicate"),
        ("row 5", "empty"),
    ]
    assert "first in row 2" in errors[1].reason and errors[1].file == str(path)

    summary = reports_import(project=project, csv_path=path)
    assert summary.stored == 2 and len(summary.errors) == 3
    assert Report.objects.get(external_id="1").findings == "First text."


def test_changed_text_is_an_update(tmp_path, project):
    path = write_csv(tmp_path / "r.csv", ["uid", "findings"], [["1", "Normal."]])
    reports_import(project=project, csv_path=path, id_column="uid", text_columns=["findings"])
    write_csv(path, ["uid", "findings"], [["1", "Small nodule."]])
    summary = reports_import(project=project, csv_path=path, id_column="uid", text_columns=["findings"])
    assert (summary.stored, summary.updated, summary.skipped) == (0, 1, 0)
    assert Report.objects.get(external_id="1").findings == "Small nodule."


# ------------------------------------------------------------------------------------------ text and SR


def test_plain_text_report(tmp_path, project):
    path = tmp_path / "CXR3_report.txt"
    path.write_bytes(
        b"\xef\xbb\xbfINDICATION: Chest pain.\r\n\r\nFINDINGS:\r\nClear lungs.\r\n\r\nIMPRESSION: Normal.\r\n"
    )
    report = read_report_text(path)
    assert report.external_id == "CXR3_report" and report.source == "text"
    assert report.sections == {
        "indication": "Chest pain.",
        "comparison": "",
        "findings": "Clear lungs.",
        "impression": "Normal.",
    }
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(IngestError, match="empty"):
        read_report_text(empty)

    study = make_study(project, "cxr3", scans=["CXR3_IM-1384-1001"])
    summary = reports_import(project=project, paths=[path], link="pattern", link_pattern=r"CXR(\d+)_")
    assert (summary.stored, summary.linked) == (1, 1)
    assert Report.objects.get(external_id="CXR3_report").study == study


def test_reportsi_sr_text_is_extracted():
    report = read_report_sr(get_testdata_file("reportsi.dcm"))
    assert report.source == "dicom-sr"
    assert report.external_id == "1.2.276.0.7230010.3.1.4.1787205428.166.1117461927.10"  # no accession
    assert report.sections["findings"] == "Enter text"
    assert "SECTION HEADING:" in report.raw_text and "Report Text: Enter text" in report.raw_text
    assert {"last", "first", "name"} <= report.scrub_tokens  # PatientName / ReferringPhysicianName
    assert report.link_keys["study_uid"] == "1.2.276.0.7230010.3.1.2.1787205428.166.1117461927.5"


def test_non_sr_dicom_and_non_dicom_are_errors(tmp_path, project):
    with pytest.raises(IngestError, match="not a DICOM Structured Report"):
        read_report_sr(get_testdata_file("CT_small.dcm"))
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom at all")
    with pytest.raises(IngestError, match="not a readable DICOM"):
        read_report_sr(junk)
    summary = reports_import(project=project, paths=[Path(get_testdata_file("CT_small.dcm")), junk])
    assert summary.stored == 0 and len(summary.errors) == 2


def test_sr_is_scrubbed_of_its_own_header_and_linked_by_accession(tmp_path, project):
    path = sr_with_text(
        tmp_path,
        name="DOE^JOHN",
        accession="ACC99123",
        sections={
            "Clinical History": "John Doe, born 02/14/1950, with cough.",
            "Findings": "Mr. Doe has a 6 mm nodule in the right upper lobe.",
            "Impression": "Nodule. Accession ACC99123.",
        },
    )
    report = read_report_sr(path)
    assert report.external_id == "ACC99123"
    assert report.sections["indication"] == "John Doe, born 02/14/1950, with cough."
    assert report.sections["impression"] == "Nodule. Accession ACC99123."

    unlinked = reports_import(project=project, paths=[path])
    stored = Report.objects.get(project=project)
    assert unlinked.stored == 1 and stored.study is None
    assert stored.indication == "XXXX XXXX, born XXXX, with cough."
    assert stored.findings == "Mr. XXXX has a 6 mm nodule in the right upper lobe."
    for field in ("raw_text", "indication", "findings", "impression", "external_id"):
        value = getattr(stored, field)
        assert "Doe" not in value and "John" not in value and "ACC99123" not in value
    assert stored.external_id == "acc-" + accession_hash(project.deid_secret, "ACC99123")[:40]
    assert stored.extra["scrubbed"] >= 5

    study = make_study(project, "sr", accession="ACC99123")
    assert reports_link(project=project, link="accession") == 1
    assert Report.objects.get(pk=stored.pk).study == study


def test_sr_links_by_study_uid(tmp_path, project):
    path = sr_with_text(tmp_path, name="ROE^JANE", accession="", sections={"Findings": "Clear."})
    original_uid = pydicom.dcmread(path).StudyInstanceUID
    study = make_study(project, "uid", study_uid=uid_remap(project.deid_secret, original_uid))
    summary = reports_import(project=project, paths=[path], link="study-uid")
    assert summary.linked == 1
    stored = Report.objects.get(project=project)
    assert stored.study == study and stored.external_id.startswith("2.25.")
    assert original_uid not in str(stored.extra)


# ------------------------------------------------------------------------------------------ linking


def test_link_by_id_scrubs_with_the_study_identifier_hashes(tmp_path, project):
    study = make_study(project, "R1", names=["DOE^JOHN"])
    path = write_csv(
        tmp_path / "r.csv", ["uid", "findings"], [["R1", "John Doe: lungs clear."], ["R2", "Clear."]]
    )
    summary = reports_import(project=project, csv_path=path, id_column="uid", text_columns=["findings"])
    assert (summary.stored, summary.linked, summary.unlinked) == (2, 1, ["R2"])
    report = Report.objects.get(external_id="R1")
    assert report.study == study
    assert report.findings == "XXXX XXXX: lungs clear."
    assert report.raw_text == "FINDINGS: XXXX XXXX: lungs clear."
    assert report.extra["scrubbed"] == 4


def test_link_by_scan_name_pattern_and_later_link(tmp_path, project):
    path = write_csv(
        tmp_path / "iu.csv", ["uid", "findings", "impression"], [["7", "John Doe: clear.", "Normal."]]
    )
    summary = reports_import(project=project, csv_path=path, link="id", link_pattern=r"CXR(\d+)_")
    assert summary.unlinked == ["7"]

    study = make_study(project, "cxr7", names=["DOE^JOHN"], scans=["CXR7_IM-2263-1001"])
    assert reports_link(project=project, link="id") == 0  # the scan name alone does not match "7"
    assert reports_link(project=project, link="pattern", link_pattern=r"CXR(\d+)_") == 1
    report = Report.objects.get(external_id="7")
    assert report.study == study and report.findings == "XXXX XXXX: clear."
    assert report.raw_text.startswith("FINDINGS: XXXX XXXX: clear.")


def test_link_by_accession_column(tmp_path, project):
    study = make_study(project, "acc", names=["DOE^JOHN"], accession="A-100")
    path = write_csv(tmp_path / "r.csv", ["accession", "impression"], [["A-100", "John Doe, normal."]])
    summary = reports_import(project=project, csv_path=path, id_column="accession", link="accession")
    report = Report.objects.get(project=project)
    assert summary.linked == 1 and report.study == study
    assert report.impression == "XXXX XXXX, normal." and "A-100" not in report.external_id
    again = reports_import(project=project, csv_path=path, id_column="accession", link="accession")
    assert again.skipped == 1 and Report.objects.count() == 1


def test_link_options_are_checked(project):
    with pytest.raises(ValueError, match="unknown link mode"):
        reports_import(project=project, paths=[], link="name")
    with pytest.raises(ValueError, match="needs link_pattern"):
        reports_import(project=project, paths=[], link="pattern")
    with pytest.raises(ValueError, match="one group"):
        reports_import(project=project, paths=[], link="id", link_pattern=r"CXR\d+")
