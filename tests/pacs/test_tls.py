"""TLS verification of a source: the loopback proxy in front of Orthanc serves HTTPS with a self-signed
certificate made here. Verified (the default), the source is refused with the reason; with verification
off, it is saved and its studies are found."""

from __future__ import annotations

import datetime
import ipaddress
import warnings
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pacs.client import PacsError
from pacs.services import SourceSpec, search_filters, source_create, studies_search
from tests.pacs.faults import TOKEN, FaultProxy

pytestmark = pytest.mark.django_db


def self_signed(folder: Path) -> Path:
    """A certificate for 127.0.0.1 signed by its own key, both in one PEM file."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    pem = folder / "proxy.pem"
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key_pem)
    return pem


def test_a_self_signed_pacs_is_refused_unless_tls_verification_is_off(
    project, ct_in_orthanc, tmp_path, orthanc
):
    proxy = FaultProxy(orthanc, tls_pem=str(self_signed(tmp_path))).start()
    try:
        assert proxy.url.startswith("https://")
        spec = SourceSpec(name="tls", base_url=proxy.url, auth="bearer", token=TOKEN)
        with pytest.raises(PacsError) as refused:
            source_create(project=project, spec=spec, user=None)
        assert (
            "TLS verification failed (certificate verify failed: self-signed certificate)"
            in refused.value.message
        )
        assert "dicom-web/studies" not in refused.value.message  # no request URL in the message
        spec.verify_tls = False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # urllib3's InsecureRequestWarning: what the manager asked for
            source = source_create(project=project, spec=spec, user=None)
            found = studies_search(source=source, filters=search_filters({"modality": "CT"}))
        assert source.verify_tls is False and [s["study_uid"] for s in found] == [ct_in_orthanc]
    finally:
        proxy.stop()
