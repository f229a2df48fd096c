"""Orthanc for the PACS tests: one process for the session (started by the tests, never the system
service), emptied before each test that loads studies into it; the fault proxy in front of it."""

from __future__ import annotations

import copy
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from tests.conftest import SHARED_DATA, need_service
from tests.pacs.faults import FaultProxy
from tests.pacs.orthanc import PASSWORD, USER, Orthanc, orthanc_missing, orthanc_start

CT_FOLDER = SHARED_DATA / "ct" / "lungdx-a0002"
# The real series has no accession number; the tests give it one, as the hospital's RIS would have.
ACCESSION = "GLA0002"


@pytest.fixture(scope="session")
def orthanc_server(tmp_path_factory) -> Orthanc:
    why = orthanc_missing()
    if why:
        need_service("Orthanc", why)
    server = orthanc_start(tmp_path_factory.mktemp("orthanc"))
    yield server
    server.stop()


@pytest.fixture
def orthanc(orthanc_server) -> Orthanc:
    orthanc_server.clear()
    return orthanc_server


@pytest.fixture
def fault_proxy(orthanc) -> FaultProxy:
    proxy = FaultProxy(orthanc).start()
    yield proxy
    proxy.stop()


def ct_datasets(*, copy_number: int = 0) -> list[pydicom.Dataset]:
    """The real CT series of ../shared/data with accession ``ACCESSION``; ``copy_number`` > 0: the same
    pixels as another patient's study (new patient, study, series and SOP UIDs; accession + number)."""
    files = sorted(CT_FOLDER.glob("*.dcm"))
    out = []
    uids: dict[str, str] = {}

    def new(uid: str) -> str:
        return uids.setdefault(uid, str(generate_uid(entropy_srcs=[uid, str(copy_number)])))

    for path in files:
        ds = pydicom.dcmread(path)
        ds.AccessionNumber = ACCESSION if not copy_number else f"{ACCESSION}-{copy_number}"
        if copy_number:
            ds = copy.deepcopy(ds)
            ds.PatientID = f"{ds.PatientID}-COPY{copy_number}"
            ds.PatientName = f"Copy^{copy_number}"
            for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
                if keyword in ds:
                    setattr(ds, keyword, new(str(getattr(ds, keyword))))
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        out.append(ds)
    return out


def orthanc_client(orthanc: Orthanc):
    import requests
    from dicomweb_client import DICOMwebClient

    session = requests.Session()
    session.auth = (USER, PASSWORD)
    return DICOMwebClient(orthanc.dicomweb, session=session)


def load_ct(orthanc: Orthanc, *, copies: int = 0) -> list[str]:
    """Store the real CT (and ``copies`` more studies of its pixels) in Orthanc; their study UIDs."""
    client = orthanc_client(orthanc)
    study_uids = []
    for n in range(copies + 1):
        datasets = ct_datasets(copy_number=n)
        client.store_instances(datasets)
        study_uids.append(str(datasets[0].StudyInstanceUID))
    return study_uids


@pytest.fixture
def ct_in_orthanc(orthanc, shared_data) -> str:
    """The real CT in Orthanc: its study UID."""
    return load_ct(orthanc)[0]


__all__ = ["ACCESSION", "CT_FOLDER", "Path", "ct_datasets", "load_ct", "orthanc_client"]
