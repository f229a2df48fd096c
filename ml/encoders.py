"""The text encoder of a grounding model: the bundled all-MiniLM-L6-v2, or a sentence-transformers model a
user gives as a file (a zip or a folder) when registering the model.

A grounding model's network spec names its encoder in ``text_encoder``: the string
``"all-MiniLM-L6-v2"`` (the default, ``ml.engine.text``), or ``{"name", "file", "sha256", "dim"}`` for a
user's encoder stored with the model (``file``: its storage key, a zip; ``dim``: its embedding width,
which must be the network's ``text_dim``).

A user's encoder is checked as data before it is stored (``encoder_folder_check``, no torch): a
sentence-transformers folder (``modules.json``, a transformer ``config.json``, weights as
``.safetensors``) whose modules are sentence-transformers' own (Transformer, Pooling, Dense, Normalize),
with no Python file, no pickled weights (``.bin``, ``.pt``, ``.pth``, ``.pkl``, ``.ckpt``) and no
``auto_map`` (a config's pointer to code of its own). It loads offline with ``trust_remote_code=False``
and safetensors only (``ml.engine.text``). Each problem is a ``ModelError`` naming the file and the field.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from ml.specs import ModelError

BUNDLED = "all-MiniLM-L6-v2"
ALLOWED_MODULES = {
    f"sentence_transformers.models.{name}" for name in ("Transformer", "Pooling", "Dense", "Normalize")
}
REFUSED_SUFFIXES = (".py", ".pyc", ".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".h5", ".msgpack",
                    ".joblib", ".npy", ".npz", ".so", ".dll")  # fmt: skip
MAX_FILES = 200
MAX_BYTES = 2 << 30  # 2 GiB unpacked


def _json(path: Path, file: str, field: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(file, field, f"not readable JSON: {exc}") from exc


def _safetensors_ok(path: Path, file: str, field: str) -> None:
    """The file starts with a safetensors header (8-byte length, then a JSON object)."""
    with open(path, "rb") as fh:
        head = fh.read(8)
        size = int.from_bytes(head, "little") if len(head) == 8 else 0
        if not 2 <= size <= 100_000_000:
            raise ModelError(file, field, "not a safetensors file")
        try:
            header = json.loads(fh.read(size))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(file, field, f"not a safetensors file: {exc}") from exc
    if not isinstance(header, dict):
        raise ModelError(file, field, "not a safetensors file")


def encoder_folder_check(folder: Path, file: str) -> dict[str, Any]:
    """Check an unpacked sentence-transformers folder as data (see the module docstring); returns
    ``{"dim": embedding width, "modules": [types]}``."""
    folder = Path(folder)
    files = [p for p in folder.rglob("*") if p.is_file() or p.is_symlink()]
    if len(files) > MAX_FILES:
        raise ModelError(file, "text_encoder", f"{len(files)} files; at most {MAX_FILES}")
    for p in files:
        rel = p.relative_to(folder).as_posix()
        if p.is_symlink():
            raise ModelError(file, f"text_encoder/{rel}", "a link; the encoder must hold plain files")
        if p.name.lower().endswith(REFUSED_SUFFIXES):
            raise ModelError(
                file,
                f"text_encoder/{rel}",
                "code or pickled weights are refused: weights as .safetensors only",
            )
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        raise ModelError(file, "text_encoder/modules.json", "missing: not a sentence-transformers model")
    modules = _json(modules_file, file, "text_encoder/modules.json")
    if not isinstance(modules, list) or not modules:
        raise ModelError(file, "text_encoder/modules.json", "must be a non-empty list of modules")
    dim = None
    types = []
    for i, module in enumerate(modules):
        field = f"text_encoder/modules.json[{i}]"
        if not isinstance(module, dict):
            raise ModelError(file, field, "must be an object")
        kind = module.get("type")
        if kind not in ALLOWED_MODULES:
            raise ModelError(
                file, f"{field}.type", f"{kind!r}: only {', '.join(sorted(ALLOWED_MODULES))} are loaded"
            )
        rel = str(module.get("path") or "")
        if PurePosixPath(rel).is_absolute() or ".." in PurePosixPath(rel).parts or "\\" in rel:
            raise ModelError(file, f"{field}.path", f"{rel!r} must be a folder inside the encoder")
        types.append(kind)
        where = folder / rel
        if kind.endswith("Transformer"):
            config = where / "config.json"
            if not config.is_file():
                raise ModelError(file, f"text_encoder/{(PurePosixPath(rel) / 'config.json')}", "missing")
            data = _json(config, file, "text_encoder/config.json")
            if not isinstance(data, dict) or data.get("auto_map"):
                raise ModelError(
                    file, "text_encoder/config.json", "auto_map points to code of its own; refused"
                )
            weights = sorted(where.glob("*.safetensors"))
            if not weights:
                raise ModelError(file, "text_encoder", "no .safetensors weights beside config.json")
            for w in weights:
                _safetensors_ok(w, file, f"text_encoder/{w.relative_to(folder).as_posix()}")
            dim = data.get("hidden_size") or data.get("d_model") or dim
        elif kind.endswith("Pooling"):
            cfg = where / "config.json"
            if cfg.is_file():
                dim = _json(cfg, file, f"text_encoder/{rel}/config.json").get("word_embedding_dimension", dim)
        elif kind.endswith("Dense"):
            cfg = where / "config.json"
            if not cfg.is_file():
                raise ModelError(file, f"text_encoder/{rel}/config.json", "missing (a Dense module)")
            dim = _json(cfg, file, f"text_encoder/{rel}/config.json").get("out_features", dim)
            weights = sorted(where.glob("*.safetensors"))
            if not weights:
                raise ModelError(file, f"text_encoder/{rel}", "a Dense module needs .safetensors weights")
            for w in weights:
                _safetensors_ok(w, file, f"text_encoder/{w.relative_to(folder).as_posix()}")
    if not any(t.endswith("Transformer") for t in types):
        raise ModelError(file, "text_encoder/modules.json", "no Transformer module")
    if not isinstance(dim, int) or dim < 1:
        raise ModelError(file, "text_encoder", "the embedding width cannot be read from the configs")
    return {"dim": dim, "modules": types}


def unpack(path: Path, into: Path, file: str) -> Path:
    """The encoder folder of ``path`` (a folder, or a zip unpacked into ``into`` with every member checked:
    no absolute or ``..`` paths, no links, bounded size); a zip holding one top folder gives that folder."""
    path = Path(path)
    if path.is_dir():
        return path
    if not zipfile.is_zipfile(path):
        raise ModelError(file, "text_encoder", "a zip or a folder of a sentence-transformers model")
    total = 0
    with zipfile.ZipFile(path) as zf:
        members = zf.infolist()
        if len(members) > MAX_FILES * 2:
            raise ModelError(file, "text_encoder", f"{len(members)} members; at most {MAX_FILES}")
        for m in members:
            name = PurePosixPath(m.filename)
            if name.is_absolute() or ".." in name.parts or "\\" in m.filename:
                raise ModelError(file, f"text_encoder/{m.filename}", "a path outside the encoder")
            if (m.external_attr >> 16) & 0o170000 == 0o120000:
                raise ModelError(file, f"text_encoder/{m.filename}", "a link; plain files only")
            total += m.file_size
            if total > MAX_BYTES:
                raise ModelError(file, "text_encoder", f"more than {MAX_BYTES >> 20} MiB unpacked")
        zf.extractall(into)
    entries = [p for p in Path(into).iterdir() if p.name != "__MACOSX"]
    if len(entries) == 1 and entries[0].is_dir() and not (Path(into) / "modules.json").exists():
        return entries[0]
    return Path(into)


def _zip(folder: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(folder).as_posix())
    return out


def text_encoder_store(
    *, project, model_name: str, path: Path, text_dim: int | None = None
) -> dict[str, Any]:
    """Check a user's encoder (zip or folder) and store it as a zip beside the model's versions; returns the
    ``text_encoder`` entry of the network spec. ``text_dim``: the network's, which must match."""
    from core.storage import project_key, sha256_file, storage_put_file

    path = Path(path)
    file = path.name
    if not path.exists():
        raise ModelError(file, "text_encoder", "no such file or folder")
    with tempfile.TemporaryDirectory(prefix="encoder-") as tmp:
        folder = unpack(path, Path(tmp) / "unpacked", file)
        info = encoder_folder_check(folder, file)
        if text_dim is not None and int(text_dim) != info["dim"]:
            raise ModelError(
                file, "network.args.text_dim", f"{text_dim}, but the encoder gives {info['dim']}-d embeddings"
            )
        packed = _zip(folder, Path(tmp) / "text-encoder.zip")
        sha = sha256_file(packed)
        key = project_key(project, "models", model_name, "text-encoders", f"{sha[:16]}.zip")
        stored = storage_put_file(key, packed)
    name = Path(file).name.removesuffix(".zip") or "text-encoder"
    return {"name": name[:64], "file": stored, "sha256": sha, "dim": info["dim"]}


def check_encoder_spec(spec: Any, file: str = "network") -> None:
    """The ``text_encoder`` entry of a network spec, checked as data."""
    if spec is None or spec == BUNDLED:
        return
    if isinstance(spec, dict) and set(spec) == {"name", "file", "sha256", "dim"}:
        if isinstance(spec["dim"], int) and spec["dim"] > 0 and len(str(spec["sha256"])) == 64:
            return
    raise ModelError(
        file, "network.text_encoder", f'{BUNDLED!r} or a stored encoder {{"name", "file", "sha256", "dim"}}'
    )


_CACHE = Path(tempfile.gettempdir()) / "groundlab-text-encoders"


def text_encoder_for(network: dict | None, device: str = "cpu"):
    """The ``SentenceEncoder`` a grounding model's network spec names, on ``device``: the bundled one, or
    the stored user encoder (its zip checked against its sha256, unpacked once per process host and
    checked again before loading)."""
    from ml.engine.text import SentenceEncoder

    spec = (network or {}).get("text_encoder")
    check_encoder_spec(spec)
    if spec is None or spec == BUNDLED:
        return SentenceEncoder(device)
    folder = _CACHE / spec["sha256"]
    if not (folder / ".checked").is_file():
        from core.storage import storage_local_copy

        with storage_local_copy(spec["file"]) as local:
            digest = hashlib.sha256(Path(local).read_bytes()).hexdigest()
            if digest != spec["sha256"]:
                raise ModelError(spec["name"], "text_encoder", "the stored encoder changed (sha256 differs)")
            scratch = Path(tempfile.mkdtemp(prefix="encoder-", dir=_ensure(_CACHE)))
            inner = unpack(Path(local), scratch, spec["name"])
            encoder_folder_check(inner, spec["name"])
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
            shutil.move(str(inner), folder)
            shutil.rmtree(scratch, ignore_errors=True)
            (folder / ".checked").write_text(digest)
    encoder_folder_check(folder, spec["name"])
    return SentenceEncoder(device, folder=folder, name=spec["name"], dim=spec["dim"])


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
