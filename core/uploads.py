"""Upload handling tuned for multi-hundred-megabyte scan archives."""

from django.core.files.uploadhandler import TemporaryFileUploadHandler


class LargeChunkUploadHandler(TemporaryFileUploadHandler):
    """Streams every uploaded file to a temporary file (never to memory) in 2 MiB chunks: the
    multipart parser then scans for boundaries in far fewer, larger pieces than Django's 64 KiB."""

    chunk_size = 2 * 1024 * 1024
