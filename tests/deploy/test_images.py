"""platform/Dockerfile, read (no container engine runs here): a node stage builds the review screen's bundle
and the web image holds it where Django's static files finder looks; the web and worker images install no
torch or MONAI (their requirement files resolved through ``-r`` and through the installed packages'
dependencies); the gpu-worker image does; compose.yaml's services are built from the right targets.
The frontend stage itself is run (its COPY lines copied, its RUN lines executed) in a temporary folder."""

import os
import shlex
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.deploy.platform_files import (
    COMPOSE,
    REPO,
    dependency_closure,
    dockerfile_stages,
    image_environment,
    image_requirements,
    requirement_names,
    stage_chain,
)

HEAVY = {"torch", "monai"}  # what only ml/engine may import (tests/test_boundaries.py)
TARGETS = {  # compose service -> the Dockerfile target it must be built from
    "migrate": "web",
    "web": "web",
    "worker-default": "worker",
    "worker-llm": "worker",
    "worker-gpu": "gpu-worker",
}


def test_the_dockerfile_has_the_stages_compose_builds():
    stages = dockerfile_stages()
    assert {"frontend", "web", "worker", "gpu-worker"} <= set(stages)
    assert stages["frontend"].base.startswith("node:")
    for target in ("web", "worker", "gpu-worker"):
        chain = [s.name for s in stage_chain(stages, target)]
        assert chain[0] != "frontend" and "gpu-worker" not in chain[:-1], (target, chain)
        assert stage_chain(stages, target)[0].base.startswith("python:3.11"), chain


@pytest.mark.parametrize("target", ["web", "worker"])
def test_the_web_and_worker_images_install_no_torch_or_monai(target):
    names = set(image_requirements(target))
    assert "django" in names and "gunicorn" in names and "celery" in names
    assert not names & HEAVY, f"the {target} image installs {sorted(names & HEAVY)}"
    pulled = dependency_closure(image_requirements(target)) & HEAVY
    assert not pulled, f"a requirement of the {target} image pulls in {sorted(pulled)}"


def test_the_gpu_worker_image_installs_the_pinned_torch_and_monai():
    installed = image_requirements("gpu-worker")
    assert HEAVY <= set(installed)
    pinned = requirement_names(REPO / "requirements.txt")["torch"]
    assert installed["torch"].replace('"', "") == pinned == "torch==2.13.0"


def test_requirements_txt_is_everything_the_images_install():
    """`make test`, `make demo` and CI install requirements.txt (through requirements-dev.txt): the union
    of the web and gpu-worker images, so nothing one of them needs is missing from the tests."""
    everything = set(requirement_names(REPO / "requirements.txt"))
    in_images = set(image_requirements("web")) | set(image_requirements("gpu-worker"))
    assert everything <= in_images, (
        f"{sorted(everything - in_images)} would be in no image: add them to requirements-web.txt (or to "
        "requirements-worker.txt when only ml/engine needs them), not to requirements.txt"
    )
    assert in_images <= everything, f"{sorted(in_images - everything)} are missing from requirements.txt"
    assert everything <= set(requirement_names(REPO / "requirements-dev.txt"))


PROBE = """
import sys, django
django.setup()
import config.urls, config.wsgi, config.celery  # noqa: F401
import core.tasks, studies.tasks, labeling.tasks, releases.tasks  # noqa: F401  (default and llm queues)
from django.urls import get_resolver
get_resolver().url_patterns
print("HEAVY:" + ",".join(sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "monai"})))
"""


def test_the_web_image_holds_what_the_web_tier_and_its_workers_import(tmp_path):
    """The web tier, the Celery app and the default and llm queues' task modules import in an interpreter
    that holds only the web image's packages (others fail to import, as they would in the image)."""
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="config.settings", **image_environment("web", tmp_path))
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-4000:]
    assert out.stdout.strip().endswith("HEAVY:"), out.stdout


def test_the_image_interpreter_refuses_packages_the_image_lacks(tmp_path):
    env = dict(os.environ, **image_environment("web", tmp_path))
    code = "import numpy, django\ntry:\n    import torch\nexcept ModuleNotFoundError as e:\n    print(e)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "No module named 'torch' (not installed in the web image)", out
    env = dict(os.environ, **image_environment("gpu-worker", tmp_path))
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout == "", out


def test_the_frontend_bundle_lands_where_django_finds_static_files():
    stages = dockerfile_stages()
    frontend = stages["frontend"]
    workdir = frontend.all("WORKDIR")[-1].args
    runs = " && ".join(r.args for r in frontend.all("RUN"))
    assert "npm ci" in runs and "npm run build" in runs
    web = stage_chain(stages, "web")
    app_dir = [w.args for s in web for w in s.all("WORKDIR")][-1]
    copies = [c.args.split() for c in web[-1].all("COPY") if c.args.startswith("--from=frontend ")]
    assert copies, "the web image copies nothing from the frontend stage: /review/ would load no review.js"
    (_, source, target) = copies[0]
    assert source.rstrip("/") == f"{workdir.rstrip('/')}/dist"  # vite.config.ts: outDir "dist"
    # config/settings/base.py: STATICFILES_DIRS holds BASE_DIR / "frontend" / "dist" (BASE_DIR: the app dir)
    base_py = (REPO / "config" / "settings" / "base.py").read_text()
    assert 'STATICFILES_DIRS = [d for d in [BASE_DIR / "frontend" / "dist"]' in base_py
    assert target.rstrip("/") == f"{app_dir}/frontend/dist"
    assert '"dist"' in (REPO / "frontend" / "vite.config.ts").read_text()
    # a bundle from the build context would be stale: the dockerignore keeps it out
    ignored = (REPO / "platform" / "Dockerfile.dockerignore").read_text().split()
    assert "frontend/dist" in ignored and "**/node_modules" in ignored


def test_compose_builds_each_service_from_its_target():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    stages = dockerfile_stages()
    images: dict[str, str] = {}
    for name, target in TARGETS.items():
        build = services[name]["build"]
        assert build["target"] == target, (name, build)
        assert build["dockerfile"] == "platform/Dockerfile" and build["context"] == ".."
        assert build["target"] in stages
        image = services[name]["image"]
        assert images.setdefault(image, target) == target, f"{image} would be built from two targets"
        images[image] = target
    gpu = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"] and gpu["count"] == 1
    for name, queue in (("worker-default", "default"), ("worker-llm", "llm"), ("worker-gpu", "gpu")):
        command = services[name]["command"]
        assert (
            command[:4] == ["celery", "-A", "config", "worker"] and command[command.index("-Q") + 1] == queue
        )


@pytest.mark.slow
def test_the_frontend_stage_builds_review_js(tmp_path):
    """The frontend stage, run without a container engine: its COPY lines copy from the repository into a
    folder standing for its WORKDIR, its RUN lines run there (npm ci: the npm registry or npm's cache)."""
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed (Node 20: see the README)")
    stage = dockerfile_stages()["frontend"]
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    for instruction in stage.instructions:
        if instruction.keyword == "COPY":
            *sources, dest = shlex.split(instruction.args)
            target = workdir / dest
            for source in sources:
                path = REPO / source
                if path.is_dir():
                    shutil.copytree(path, target, dirs_exist_ok=True)
                else:  # files are copied into a folder ("COPY a b ./")
                    assert dest.endswith("/"), instruction
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy(path, target / path.name)
        elif instruction.keyword == "RUN":
            env = dict(os.environ, npm_config_prefer_offline="true", npm_config_update_notifier="false")
            done = subprocess.run(
                ["sh", "-c", instruction.args],
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert done.returncode == 0, (
                f"RUN {instruction.args}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
    bundle = workdir / "dist" / "review.js"
    assert bundle.is_file() and bundle.stat().st_size > 100_000
    assert not (workdir / "templates").exists()  # only what the stage copies
