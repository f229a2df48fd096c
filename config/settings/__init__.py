"""Settings, split by topic; every value comes from the environment with an embedded default.

With no environment at all the platform runs embedded: SQLite and files under ``var/``, Celery tasks
executed in-process. See ``platform/env.example`` for the full setup.
"""

from config.settings.base import *  # noqa: F401,F403
from config.settings.celery import *  # noqa: F401,F403
from config.settings.database import *  # noqa: F401,F403
from config.settings.ingest import *  # noqa: F401,F403
from config.settings.llm import *  # noqa: F401,F403
from config.settings.pacs import *  # noqa: F401,F403
from config.settings.security import *  # noqa: F401,F403
from config.settings.storage import *  # noqa: F401,F403
