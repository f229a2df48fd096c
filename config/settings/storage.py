"""File storage: local files under ``MEDIA_ROOT`` by default, S3-compatible object storage when
``STORAGE_BACKEND=s3`` (django-storages; ``S3_ENDPOINT_URL`` for MinIO or any other S3 server)."""

from config.settings.env import BASE_DIR, env_str

MEDIA_ROOT = env_str("MEDIA_ROOT", str(BASE_DIR / "var" / "media"))
MEDIA_URL = "/media/"
STORAGE_BACKEND = env_str("STORAGE_BACKEND", "local")

if STORAGE_BACKEND == "s3":
    _default = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env_str("S3_BUCKET", "groundlab"),
            "endpoint_url": env_str("S3_ENDPOINT_URL") or None,
            "access_key": env_str("S3_ACCESS_KEY_ID") or None,
            "secret_key": env_str("S3_SECRET_ACCESS_KEY") or None,
            "region_name": env_str("S3_REGION", "us-east-1"),
            "file_overwrite": False,
            "default_acl": None,
            "querystring_auth": True,
        },
    }
else:
    _default = {"BACKEND": "django.core.files.storage.FileSystemStorage"}

STORAGES = {
    "default": _default,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
