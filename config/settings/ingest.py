"""Limits that protect ingest: upload size, zip bombs, worker processes."""

from config.settings.env import env_bool, env_int

# One upload request (all its files together), in bytes.
UPLOAD_MAX_BYTES = env_int("UPLOAD_MAX_BYTES", 2 * 1024**3)
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024**2
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024**2
FILE_UPLOAD_HANDLERS = ["core.uploads.LargeChunkUploadHandler"]
# Zip archives: total uncompressed size, member count and compression ratio of any member.
ZIP_MAX_TOTAL_BYTES = env_int("ZIP_MAX_TOTAL_BYTES", 20 * 1024**3)
ZIP_MAX_MEMBERS = env_int("ZIP_MAX_MEMBERS", 200_000)
ZIP_MAX_RATIO = env_int("ZIP_MAX_RATIO", 200)
# Canonical scan files: uncompressed .nii by default (fast to write, sliced and served without
# decompressing); CANONICAL_NIFTI_GZIP=true stores .nii.gz (about a third of the size for CT).
CANONICAL_NIFTI_GZIP = env_bool("CANONICAL_NIFTI_GZIP", False)
# Processes that read series in parallel (0 = one per core).
INGEST_WORKERS = env_int("INGEST_WORKERS", 0)
# Processes that compute gaze labels of a project in parallel (0 = one per core).
GAZE_WORKERS = env_int("GAZE_WORKERS", 0)
# Review: how long an opened task stays with the person who opened it.
REVIEW_LEASE_MINUTES = env_int("REVIEW_LEASE_MINUTES", 30)
