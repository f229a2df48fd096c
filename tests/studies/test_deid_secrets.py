"""The secrets of de-identification stay secret: a patient's date shift (with it, shifted dates give the
real ones) is read only by managers of a project that keeps its identity map, through that map; no API
response, admin page or export shows it; the checksums of the original (identified) files and report
texts are shown to no member. Ages over 89 and private codes do not reach an export either.
"""

import datetime as dt
import gzip
import json

import pydicom
import pytest
from django.contrib.auth.models import Permission
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import reverse
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from core.models import Role
from core.services import membership_set
from releases.exporting import release_manifest
from releases.records import DirSink
from releases.services import dataset_create, release_create, release_export_to
from studies import demo
from studies.deid import header_from_json
from studies.models import Patient, PatientIdentity, ScanSource, Study
from studies.services.scans import scans_ingest
from tests.factories import make_scan_tree
from tests.releases.factories import reviewed_case

pytestmark = pytest.mark.django_db

ROLES = [Role.MANAGER, Role.ANNOTATOR, Role.RADIOLOGIST, Role.RESEARCHER]
SHIFT = -777
SOURCE_CHECKSUM = "a1" * 32  # sha256 over the original files' sha256s
FILE_CHECKSUM = "b2" * 32  # sha256 of one original DICOM file
REPORT_CHECKSUM = "c3" * 32  # sha256 of the report text before it was scrubbed
SECRETS = (SOURCE_CHECKSUM, FILE_CHECKSUM, REPORT_CHECKSUM)


def tree_with_secrets(project) -> dict:
    tree = make_scan_tree(project)
    Patient.objects.filter(pk=tree["patient"].pk).update(date_shift_days=SHIFT)
    tree["scan"].source_checksum = SOURCE_CHECKSUM
    tree["scan"].save(update_fields=["source_checksum"])
    ScanSource.objects.create(project=project, scan=tree["scan"], sop_uid="2.25.42", checksum=FILE_CHECKSUM)
    tree["report"].checksum = REPORT_CHECKSUM
    tree["report"].save(update_fields=["checksum"])
    return tree


def studies_api_texts(client, tree) -> dict[str, str]:
    """The body of every studies read (lists and details) as text, by URL."""
    urls = [reverse(name) for name in ("patient-list", "study-list", "scan-list", "report-list", "gaze-list")]
    for name, key in [
        ("patient-detail", "patient"),
        ("study-detail", "study"),
        ("scan-detail", "scan"),
        ("report-detail", "report"),
        ("gaze-detail", "gaze"),
    ]:
        urls.append(reverse(name, args=[tree[key].pk]))
    texts = {}
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        texts[url] = response.content.decode()
    return texts


@pytest.mark.parametrize("role", ROLES)
def test_no_role_reads_a_date_shift_or_an_original_checksum_from_the_studies_api(
    project, make_user, api_client, role
):
    project.keep_identity_map = True  # even where the map is kept: the shift is in the map only
    project.save(update_fields=["keep_identity_map"])
    tree = tree_with_secrets(project)
    user = make_user(f"u-{role}")
    membership_set(project=project, user=user, role=role)
    client = api_client(user)

    [patient] = client.get(reverse("patient-list")).json()["results"]
    assert patient["pseudonym"] == tree["patient"].pseudonym
    assert "date_shift_days" not in patient
    assert "date_shift_days" not in client.get(reverse("patient-detail", args=[tree["patient"].pk])).json()
    for url, text in studies_api_texts(client, tree).items():
        assert "date_shift" not in text, url
        assert "checksum" not in text, url
        assert not [s for s in SECRETS if s in text], url


def test_identity_map_gives_the_date_shift_to_managers_of_projects_that_keep_it(
    project, other_project, manager, make_user, api_client
):
    project.keep_identity_map = True
    project.save(update_fields=["keep_identity_map"])
    tree = tree_with_secrets(project)
    PatientIdentity.objects.create(patient=tree["patient"], original_id="MRN-1", original_name="DOE^JANE")
    url = reverse("identity-map", args=["alpha"])

    rows = api_client(manager).get(url).json()["results"]
    assert [(r["pseudonym"], r["original_id"], r["date_shift_days"]) for r in rows] == [
        (tree["patient"].pseudonym, "MRN-1", SHIFT)
    ]
    for role in (Role.ANNOTATOR, Role.RADIOLOGIST, Role.RESEARCHER):
        member = make_user(f"m-{role}")
        membership_set(project=project, user=member, role=role)
        assert api_client(member).get(url).status_code == 404
    stranger = make_user("stranger")
    membership_set(project=other_project, user=stranger, role=Role.MANAGER)
    assert api_client(stranger).get(url).status_code == 404

    # A project that no longer keeps the map shows none of it, not even rows left from before.
    project.keep_identity_map = False
    project.save(update_fields=["keep_identity_map"])
    response = api_client(manager).get(url)
    assert response.status_code == 200 and response.json()["results"] == []
    assert "date_shift" not in response.content.decode() and "MRN-1" not in response.content.decode()


def test_the_shift_in_the_identity_map_turns_stored_dates_back_into_real_ones(
    project, manager, api_client, tmp_path
):
    """A real ingest: the stored study date is shifted; real date = stored date - date_shift_days."""
    project.keep_identity_map = True
    project.save(update_fields=["keep_identity_map"])
    volume, _ = demo.synthetic_chest_ct(shape=(4, 24, 24), spacing=(5.0, 2.0, 2.0))
    real = dt.date(2024, 3, 14)
    demo.write_ct_series(tmp_path / "ct", volume, (5.0, 2.0, 2.0), patient_id="MRN-9", study_date=real)
    assert not scans_ingest(project=project, paths=[tmp_path / "ct"], workers=1).errors
    study = Study.objects.get(project=project)
    assert study.study_date != real

    [row] = api_client(manager).get(reverse("identity-map", args=["alpha"])).json()["results"]
    assert row["original_id"] == "MRN-9" and row["pseudonym"] == study.patient.pseudonym
    assert study.study_date - dt.timedelta(days=row["date_shift_days"]) == real
    listed = api_client(manager).get(reverse("patient-list")).json()["results"]
    assert [p for p in listed if "date_shift_days" in p] == []


def test_admin_shows_shifts_and_original_checksums_to_superusers_only(project, make_user):
    tree = tree_with_secrets(project)
    staff = make_user("staff", is_staff=True)
    staff.user_permissions.set(Permission.objects.filter(content_type__app_label="studies"))
    boss = make_user("boss", is_superuser=True)
    pages = [
        reverse("admin:studies_patient_changelist"),
        reverse("admin:studies_patient_change", args=[tree["patient"].pk]),
        reverse("admin:studies_scan_change", args=[tree["scan"].pk]),
        reverse("admin:studies_scansource_changelist"),
        reverse("admin:studies_report_change", args=[tree["report"].pk]),
    ]
    for user, sees in ((staff, False), (boss, True)):
        client = Client()
        client.force_login(user)
        for page in pages:
            response = client.get(page)
            assert response.status_code == 200, page
            html = response.content.decode()
            shown = "date_shift_days" in html or any(s in html for s in SECRETS)
            assert shown is sees, (user.username, page)
    assert Client().get(pages[0]).status_code == 302  # to the login page


# --- Exports ------------------------------------------------------------------------------------------


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


@pytest.fixture
def old_patient_with_local_codes(monkeypatch):
    """The review case's CT series written as a 95-year-old's, with an anatomic region coded in SNOMED
    and in the hospital's private scheme (the series files are real DICOM, edited after writing)."""
    write = demo.write_ct_series

    def write_old(*args, **kwargs):
        paths = write(*args, **kwargs)
        for path in paths:
            ds = pydicom.dcmread(path)
            ds.PatientAge = "095Y"
            ds.AnatomicRegionSequence = Sequence(
                [_code("51185008", "SCT", "Chest"), _code("CH-W7", "99STELSEWHERE", "Ward 7 chest")]
            )
            ds.save_as(path)
        return paths

    monkeypatch.setattr(demo, "write_ct_series", write_old)


def _json_keys(value) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _json_keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _json_keys(v)}
    return set()


@pytest.mark.parametrize("fmt", ["rexgroundingct", "dicom-seg"])
def test_an_export_holds_no_date_shift_no_original_checksum_no_age_over_89(
    project, make_user, tmp_path, old_patient_with_local_codes, fmt
):
    scan = reviewed_case(project, tmp_path / "in", make_user)
    patient = scan.study.patient
    originals = list(ScanSource.objects.filter(scan=scan).values_list("checksum", flat=True))
    assert originals and scan.source_checksum
    with default_storage.open(scan.meta["header_file"], "rb") as fh:  # the header the exports read
        header = header_from_json(json.loads(gzip.decompress(fh.read())))
    assert header.PatientAge == "090Y"
    assert [c.CodingSchemeDesignator for c in header.AnatomicRegionSequence] == ["SCT"]
    release = release_create(dataset=dataset_create(slug="lungs", name="Lungs", projects=[project]))
    assert "shift" not in json.dumps(sorted(_json_keys(release_manifest(release))))

    out = tmp_path / "out"
    assert release_export_to(release, fmt, DirSink(out)).cases == 1
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"manifest.json", "README.md"}
    for path in files:
        data = path.read_bytes()
        assert not [c for c in [*originals, scan.source_checksum] if c.encode() in data], path
        if path.suffix in (".json", ".md", ".txt"):
            text = data.decode()
            assert "date_shift" not in text and "shift_days" not in text, path
        if path.suffix == ".json":
            assert not [k for k in _json_keys(json.loads(data)) if "shift" in k.lower()], path
    readme = (out / "README.md").read_text()
    assert str(patient.date_shift_days) not in readme and "shift" not in readme.lower()

    if fmt == "dicom-seg":
        series = sorted((out / "series").rglob("*.dcm"))
        assert series
        for path in series:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            assert ds.PatientAge == "090Y"
            assert ds.PatientID == patient.pseudonym
            schemes = {e.value for e in ds.iterall() if e.keyword == "CodingSchemeDesignator"}
            assert not [s for s in schemes if str(s).startswith("99")]
            assert b"Ward 7" not in path.read_bytes()
