"""Makes this interpreter hold only the packages of one image (tests/deploy): with
``GROUNDLAB_TEST_IMAGE_PACKAGES`` naming a JSON list of distributions, importing a top-level module that
belongs only to other installed distributions fails as it would in that image (``ModuleNotFoundError``);
the standard library and the repository's own packages import as usual. Put this folder first on
``PYTHONPATH``; child processes (gunicorn and Celery workers, ``manage.py`` children) inherit it."""

import importlib.abc
import importlib.metadata
import json
import os
import re
import sys

_listing = os.environ.get("GROUNDLAB_TEST_IMAGE_PACKAGES")


class _ImageFinder(importlib.abc.MetaPathFinder):
    def __init__(self, allowed: set[str], image: str):
        self.allowed, self.image = allowed, image
        self.owners = importlib.metadata.packages_distributions()

    def find_spec(self, fullname, path=None, target=None):
        if "." in fullname or fullname in sys.stdlib_module_names:
            return None
        owners = {re.sub(r"[-_.]+", "-", d).lower() for d in self.owners.get(fullname, [])}
        if owners and not owners & self.allowed:
            raise ModuleNotFoundError(
                f"No module named {fullname!r} (not installed in the {self.image} image)"
            )
        return None


if _listing:
    with open(_listing) as fh:
        _spec = json.load(fh)
    sys.meta_path.insert(0, _ImageFinder(set(_spec["distributions"]), _spec.get("image", "test")))
