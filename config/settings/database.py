"""Database: ``DATABASE_URL`` (PostgreSQL in production and CI), else the embedded SQLite file."""

import dj_database_url

from config.settings.env import BASE_DIR, env_str

_url = env_str("DATABASE_URL")
if _url:
    DATABASES = {"default": dj_database_url.parse(_url, conn_max_age=60)}
else:
    (BASE_DIR / "var").mkdir(exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": BASE_DIR / "var" / "db.sqlite3",
            "OPTIONS": {"timeout": 30},
        }
    }
