"""A pydicom decoding plugin for JPEG Lossless (Process 14, and its selection value 1) through
libjpeg-turbo 3 (imagecodecs): 3 ms for a 512x512 16-bit CT slice where pylibjpeg-libjpeg takes 10 ms,
the same values (measured on the real CT series and pydicom's JPEG Lossless test files).

Single-component (grayscale) frames only: a colour frame raises, and pydicom's other plugins decode it.
``studies.ingest.dicom_pixels`` registers it (:func:`register`) and tries it first for these syntaxes.
"""

from __future__ import annotations

from pydicom import uid
from pydicom.pixels import get_decoder
from pydicom.pixels.decoders.base import DecodeRunner

LABEL = "imagecodecs"
SYNTAXES = (uid.JPEGLossless, uid.JPEGLosslessSV1)
DECODER_DEPENDENCIES = {syntax: ("imagecodecs>=2024.1",) for syntax in SYNTAXES}

try:
    import imagecodecs

    _AVAILABLE = bool(imagecodecs.JPEG8.available)
except (ImportError, AttributeError):  # not installed, or built without libjpeg-turbo
    _AVAILABLE = False


def is_available(syntax: str) -> bool:
    """Whether this plugin can decode ``syntax`` here (pydicom's plugin protocol)."""
    return _AVAILABLE and syntax in SYNTAXES


def decode_frame(src: bytes, runner: DecodeRunner) -> bytes:
    """One frame's stored values, as pydicom's decoders return them (little-endian, pixel-interleaved);
    the container is 8 bits for precision up to 8, else 16 (``bits_allocated`` is set to it)."""
    if runner.samples_per_pixel != 1:
        raise ValueError("only single-component JPEG Lossless frames are decoded by this plugin")
    frame = imagecodecs.jpeg8_decode(src)
    if frame.ndim != 2:
        raise ValueError(f"expected one component, the frame decoded to shape {frame.shape}")
    runner.set_option("bits_allocated", frame.dtype.itemsize * 8)
    return frame.tobytes()


def register() -> None:
    """Add the plugin to pydicom's decoders for the JPEG Lossless syntaxes (once per process)."""
    for syntax in SYNTAXES:
        decoder = get_decoder(syntax)
        if LABEL not in decoder._available and LABEL not in decoder._unavailable:
            decoder.add_plugin(LABEL, (__name__, "decode_frame"))
