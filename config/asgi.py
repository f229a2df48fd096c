import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_asgi_application()

# A web process reaps jobs whose process died (a web process killed mid-upload runs none itself).
from core.jobs import jobs_reaper_start  # noqa: E402 - after Django is set up

jobs_reaper_start()
