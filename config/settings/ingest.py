"""Limits that protect ingest: upload size, zip bombs, worker processes."""

from config.settings.env import env_bool, env_int, env_str

# One upload request (all its files together), in bytes.
UPLOAD_MAX_BYTES = env_int("UPLOAD_MAX_BYTES", 2 * 1024**3)
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024**2
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024**2
FILE_UPLOAD_HANDLERS = ["core.uploads.LargeChunkUploadHandler"]
# Files in one multipart request: UPLOAD_MAX_FILES at the scan upload endpoint (a CT sent one file per
# slice), REQUEST_MAX_FILES (Django's default, 100) everywhere else; core.uploads counts them per view,
# Django's own DATA_UPLOAD_MAX_NUMBER_FILES is only the outer bound.
UPLOAD_MAX_FILES = env_int("UPLOAD_MAX_FILES", 10_000)
REQUEST_MAX_FILES = 100
DATA_UPLOAD_MAX_NUMBER_FILES = max(UPLOAD_MAX_FILES, REQUEST_MAX_FILES)
# One mask upload (annotation saves, anatomy masks), in bytes, refused before the body is read.
MASK_UPLOAD_MAX_BYTES = env_int("MASK_UPLOAD_MAX_BYTES", 256 * 1024**2)
# Zip archives: total uncompressed size, member count and compression ratio of any member (the ratio
# also bounds a .nii.gz scan: declared voxel bytes over file size).
ZIP_MAX_TOTAL_BYTES = env_int("ZIP_MAX_TOTAL_BYTES", 20 * 1024**3)
ZIP_MAX_MEMBERS = env_int("ZIP_MAX_MEMBERS", 200_000)
ZIP_MAX_RATIO = env_int("ZIP_MAX_RATIO", 200)
# Decoding, checked from the headers before anything is inflated: voxel bytes one NIfTI scan may
# declare, and pixels (width x height) of one PNG/JPEG (scans and masks).
NIFTI_MAX_BYTES = env_int("NIFTI_MAX_BYTES", 2 * 1024**3)
IMAGE_MAX_PIXELS = env_int("IMAGE_MAX_PIXELS", 64 * 1024**2)
# Jobs: a running job's lease, renewed while its process lives; once it lapses the reaper fails the job
# and removes its raw uploads. Raw uploads wait in JOB_SCRATCH_DIR (default MEDIA_ROOT/.scratch/jobs).
JOB_LEASE_SECONDS = env_int("JOB_LEASE_SECONDS", 300)
JOB_SCRATCH_DIR = env_str("JOB_SCRATCH_DIR", "")
# Canonical scan files: uncompressed .nii by default (fast to write, sliced and served without
# decompressing); CANONICAL_NIFTI_GZIP=true stores .nii.gz (about a third of the size for CT).
CANONICAL_NIFTI_GZIP = env_bool("CANONICAL_NIFTI_GZIP", False)
# Processes that read series in parallel (0 = one per core).
INGEST_WORKERS = env_int("INGEST_WORKERS", 0)
# Processes that decode the slices of one compressed series (JPEG, JPEG 2000, JPEG-LS, RLE): at most
# this many (0 = the cores this process may use, shared among INGEST_WORKERS; 1 = serial decoding).
INGEST_DECODE_WORKERS = env_int("INGEST_DECODE_WORKERS", 0)
# Processes that compute gaze labels of a project in parallel (0 = one per core).
GAZE_WORKERS = env_int("GAZE_WORKERS", 0)
# Review: how long an opened task stays with the person who opened it.
REVIEW_LEASE_MINUTES = env_int("REVIEW_LEASE_MINUTES", 30)
