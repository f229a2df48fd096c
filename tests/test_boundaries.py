"""The web tier never imports torch or MONAI. (Refusing unsafe production settings: tests/core/
test_deploy_settings.py.)"""

import os
import subprocess
import sys

from tests.conftest import REPO

PROBE = """
import sys, django
django.setup()
import config.urls, config.wsgi  # noqa: F401
from django.urls import get_resolver
get_resolver().url_patterns
from django.test import Client
from django.contrib.auth import get_user_model
heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'monai'})
print('HEAVY:' + ','.join(heavy))
"""


def test_web_tier_does_not_import_torch_or_monai():
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="config.settings")
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "HEAVY:\n" in out.stdout or out.stdout.strip().endswith("HEAVY:"), out.stdout
