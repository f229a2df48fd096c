"""Database: ``DATABASE_URL`` (PostgreSQL in production and CI), else the embedded SQLite file.

SQLite (the default, or a ``sqlite://`` URL) is set up to give the answers PostgreSQL gives when people act
at once: WAL (readers never wait for a writer, nor a writer for readers), ``synchronous=NORMAL`` (safe in
WAL; a power cut may lose the last commits, never corrupt the file), a busy timeout
(``SQLITE_BUSY_TIMEOUT`` seconds: a writer waits for the one before it instead of failing with "database
is locked"), and ``BEGIN IMMEDIATE`` for every transaction: it takes the write lock at its start, so the
transactions that write run one after another. ``SELECT … FOR UPDATE`` (``SKIP LOCKED``) is a no-op on
SQLite; this serialisation is what stands in for it there: a transaction reads what the one before it
committed (the next free task, the finding's current version). Reads outside a transaction take no lock.
"""

import dj_database_url

from config.settings.env import BASE_DIR, env_int, env_str


def _sqlite_options() -> dict:
    return {
        "timeout": env_int("SQLITE_BUSY_TIMEOUT", 30),
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
    }


_url = env_str("DATABASE_URL")
if _url:
    DATABASES = {"default": dj_database_url.parse(_url, conn_max_age=60)}
else:
    (BASE_DIR / "var").mkdir(exist_ok=True)
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "var" / "db.sqlite3"}}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {**_sqlite_options(), **DATABASES["default"].get("OPTIONS", {})}
