"""A real PACS for the tests and the benchmark: Orthanc (Debian ``orthanc``) with its DICOMweb plugin
(``orthanc-dicomweb``), started on free loopback ports with a temporary JSON configuration and storage
folder, waited for, and stopped. Never the system service."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import requests

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
PLUGIN_CANDIDATES = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so.1.7",
)
USER, PASSWORD = "groundlab", "orthanc-test-password"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dicomweb_plugin() -> str | None:
    """The plugin's library, from ``dpkg -L orthanc-dicomweb`` (else the usual paths)."""
    try:
        listed = subprocess.run(
            ["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True, timeout=10
        )
        for line in listed.stdout.splitlines():
            if "libOrthancDicomWeb.so" in line and Path(line).is_file():
                return line.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return next((p for p in PLUGIN_CANDIDATES if Path(p).is_file()), None)


def orthanc_missing() -> str:
    """Why Orthanc cannot be started here ("" when it can)."""
    if not Path(ORTHANC).is_file():
        return "the Orthanc binary is not installed (apt-get install orthanc orthanc-dicomweb)"
    if dicomweb_plugin() is None:
        return "the Orthanc DICOMweb plugin is not installed (apt-get install orthanc-dicomweb)"
    return ""


@dataclass
class Orthanc:
    process: subprocess.Popen
    port: int
    folder: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def rest(self) -> requests.Session:
        session = requests.Session()
        session.auth = (USER, PASSWORD)
        return session

    def clear(self) -> None:
        """Delete every patient (and so every study) Orthanc holds."""
        rest = self.rest()
        for patient in rest.get(f"{self.url}/patients", timeout=30).json():
            rest.delete(f"{self.url}/patients/{patient}", timeout=30)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)


def orthanc_start(folder: Path) -> Orthanc:
    """Start Orthanc with its storage under ``folder``; raise RuntimeError (with its log) when it fails."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {
        "Name": "groundlab-test",
        "HttpPort": port,
        "DicomServerEnabled": False,
        "DicomPort": free_port(),
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "RemoteAccessAllowed": False,  # loopback only
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "OverwriteInstances": True,
        "StorageCompression": False,
        "HttpThreadsCount": 16,
        "Plugins": [dicomweb_plugin()],
        "DicomWeb": {
            "Enable": True,
            "Root": "/dicom-web/",
            "StudiesMetadata": "Full",
            "SeriesMetadata": "Full",
        },
    }
    path = folder / "orthanc.json"
    path.write_text(json.dumps(config))
    log = open(folder / "orthanc.log", "wb")  # noqa: SIM115 - the process writes to it until stopped
    process = subprocess.Popen([ORTHANC, str(path)], stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    server = Orthanc(process=process, port=port, folder=folder)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            answer = requests.get(f"{server.url}/plugins", auth=(USER, PASSWORD), timeout=2)
            if answer.ok and "dicom-web" in answer.json():
                return server
        except requests.RequestException:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"Orthanc did not start: {(folder / 'orthanc.log').read_text()[-2000:]}")
