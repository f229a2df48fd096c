"""MONAI bundle configs and network specs read as data: nothing in them is evaluated or imported.

MONAI's own ``ConfigParser`` evaluates ``$`` expressions as Python and calls whatever ``_target_`` names,
so a bundle's ``configs/inference.json`` is code. The platform never hands an uploaded config to it. This
module walks the config as plain JSON (or YAML through ``yaml.safe_load`` when PyYAML is installed) and:

* resolves ``@id`` references (``@dims``, ``@net::channels``, ``@net#channels``, list indices as ids) and
  same-file ``%id`` macros with its own code: a copy of the referenced value, cycle-safe and depth-limited;
* refuses every ``$`` expression (a string starting with ``$`` or holding ``$@``), macros into other files,
  relative ids, and the ``_requires_`` / ``_disabled_`` / ``_mode_`` keys;
* allows one ``_target_``, the network's own (a string: checked against the allow-list of
  ``monai.networks.nets`` classes by ``ml.engine.loading``, which is the only part that needs MONAI); a
  ``_target_`` anywhere in the arguments is refused. Arguments are numbers, strings, booleans, null and
  lists/objects of those (MONAI's string and ``["name", {...}]`` forms for ``act``/``norm`` are data).

Every refusal is a ``ModelError`` naming the file and the key path. No torch here: the web tier checks an
upload with it before storing anything, and the worker checks again before building the network.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml.specs import ModelError

CONFIG_NAMES = ("configs/inference.json", "configs/inference.yaml", "configs/inference.yml")
WEIGHTS_NAME = "models/model.pt"
TORCHSCRIPT_NAME = "models/model.ts"  # what model-zoo bundles also ship (some only that)
METADATA_NAME = "configs/metadata.json"
MAX_CONFIG_BYTES = 4 * 1024 * 1024  # a network config is a few kilobytes
MAX_DEPTH = 32  # nesting of values plus chained references
MAX_NODES = 100_000  # values visited, references expanded included (YAML aliases, reference fan-out)
# a _target_: a bare class name, monai.networks.nets.<Class> or monai.networks.nets.<module>.<Class>
TARGET_FORM = re.compile(r"^(?:monai\.networks\.nets\.(?:[a-z_][a-z0-9_]*\.)?)?[A-Za-z][A-Za-z0-9_]*$")
SPECIAL_KEYS_DROPPED = {"_desc_"}  # documentation only
_ID_SPLIT = re.compile(r"::|#")


@dataclass
class NetworkDef:
    """A network to build: ``target`` (as written; resolved against the allow-list by the engine) and its
    keyword arguments as plain data."""

    target: str
    args: dict[str, Any]
    file: str
    field: str


def read_bundle_files(path: Path, wanted: tuple[str, ...] = CONFIG_NAMES) -> dict[str, bytes]:
    """The members of a bundle (folder or zip, the bundle possibly in a top folder of the zip) whose
    last two path parts are one of ``wanted``. A config larger than ``MAX_CONFIG_BYTES`` is refused
    before it is read."""
    name = path.name
    found: dict[str, bytes] = {}
    if path.is_dir():
        for member in wanted:
            if (path / member).is_file():
                if member.startswith("configs/") and (path / member).stat().st_size > MAX_CONFIG_BYTES:
                    raise ModelError(name, member, f"larger than {MAX_CONFIG_BYTES} bytes")
                found[member] = (path / member).read_bytes()
        return found
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                parts = Path(info.filename).parts
                member = "/".join(parts[-2:])
                if len(parts) < 2 or member not in wanted or member in found:
                    continue
                small = member.startswith("configs/")
                if small and info.file_size > MAX_CONFIG_BYTES:
                    raise ModelError(name, member, f"larger than {MAX_CONFIG_BYTES} bytes")
                with zf.open(info) as fh:
                    found[member] = fh.read(MAX_CONFIG_BYTES + 1 if small else -1)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelError(name, "bundle", "not a zip file or folder") from exc
    return found


def bundle_members(path: Path) -> set[str]:
    """The members of a bundle (folder or zip) by their last two path parts (``models/model.pt``), without
    reading them."""
    if path.is_dir():
        return {"/".join(p.relative_to(path).parts[-2:]) for p in path.rglob("*") if p.is_file()}
    try:
        with zipfile.ZipFile(path) as zf:
            return {"/".join(Path(i.filename).parts[-2:]) for i in zf.infolist() if not i.is_dir()}
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelError(path.name, "bundle", "not a zip file or folder") from exc


def parse_config(data: bytes, file: str, member: str) -> dict[str, Any]:
    """A config file's content as plain data (JSON, or YAML with ``yaml.safe_load``)."""
    if member.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError as exc:
            raise ModelError(file, member, "YAML configs need PyYAML; give configs/inference.json") from exc
        try:
            config = yaml.safe_load(io.BytesIO(data))
        except yaml.YAMLError as exc:
            raise ModelError(file, member, f"not YAML: {exc}") from exc
    else:
        try:
            config = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelError(file, member, f"not JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise ModelError(file, member, "must be an object at the top")
    return config


def bundle_network_def(path: Path) -> NetworkDef:
    """The ``network_def`` of the bundle at ``path`` (folder or zip), read as data."""
    files = read_bundle_files(path)
    member = next((m for m in CONFIG_NAMES if m in files), None)
    if member is None:
        raise ModelError(path.name, "configs/inference.json", "missing from the MONAI bundle")
    config = parse_config(files[member], path.name, member)
    return network_def(config, file=path.name, member=member)


def network_def(
    config: dict[str, Any], *, file: str, member: str = "configs/inference.json", expressions: Any = None
) -> NetworkDef:
    """``config["network_def"]`` with its references resolved, checked to be data (see the module).
    ``expressions``: the meaning of the few ``$`` idioms ``ml.bundle_pipeline`` recognises (default: every
    ``$`` string refused)."""
    reader = _Reader(config, file, expressions=expressions)
    if "network_def" not in config:
        raise ModelError(file, member, "needs a network_def with a _target_")
    definition = reader.value(config["network_def"], "network_def", depth=0, top=True)
    if not isinstance(definition, dict) or "_target_" not in definition:
        raise ModelError(file, "network_def", "needs a _target_ (a class of monai.networks.nets)")
    target = definition.pop("_target_")
    if isinstance(target, str) and target.startswith("scripts."):
        raise ModelError(
            file, "network_def._target_", f"{target!r}: the bundle's scripts/ folder is never imported "
            "(its code would run in the worker); only classes of monai.networks.nets can be built"
        )  # fmt: skip
    if not isinstance(target, str) or not TARGET_FORM.match(target):
        raise ModelError(
            file, "network_def._target_", f"{target!r}: only classes of monai.networks.nets can be built"
        )
    return NetworkDef(target=target, args=definition, file=file, field="network_def")


def check_spec_args(args: Any, file: str, field: str = "network.args") -> dict[str, Any]:
    """A state-dict network spec's ``args``: plain data, no ``_target_``, no expressions or references
    (nothing in a spec is resolved)."""
    if args is None:
        return {}
    if not isinstance(args, dict):
        raise ModelError(file, field, "must be an object")
    return _Reader({}, file, references=False).value(args, field, depth=0)


class _Reader:
    def __init__(
        self, root: dict[str, Any], file: str, *, references: bool = True, expressions: Any = None
    ) -> None:
        self.root, self.file, self.references = root, file, references
        # ``expressions(reader, raw, path, depth)``: what a ``$`` string means, for the few exact idioms a
        # caller recognises (``ml.bundle_pipeline``); None: every ``$`` string is refused
        self.expressions = expressions
        self.nodes = 0
        self.resolving: list[str] = []  # ids being resolved, for cycles

    def fail(self, path: str, reason: str) -> ModelError:
        return ModelError(self.file, path, reason)

    def value(self, raw: Any, path: str, *, depth: int, top: bool = False) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.fail(path, f"more than {MAX_NODES} values (references included)")
        if depth > MAX_DEPTH:
            raise self.fail(path, f"nested or referenced deeper than {MAX_DEPTH} levels")
        if isinstance(raw, str):
            return self.string(raw, path, depth=depth, top=top)
        if isinstance(raw, bool) or raw is None or isinstance(raw, (int, float)):
            return raw
        if isinstance(raw, list):
            return [self.value(v, f"{path}[{i}]", depth=depth + 1) for i, v in enumerate(raw)]
        if isinstance(raw, dict):
            out: dict[str, Any] = {}
            for key, v in raw.items():
                if not isinstance(key, str):
                    raise self.fail(path, f"key {key!r} is not a string")
                where = f"{path}.{key}"
                if key == "_target_":
                    if not top:
                        raise self.fail(
                            where,
                            "a _target_ inside the arguments is not built: give the argument as data "
                            '(for example "act": "PRELU" or ["prelu", {"init": 0.2}])',
                        )
                    if not isinstance(v, str):
                        raise self.fail(where, "must be a class name")
                    if v.startswith(("$", "@", "%")):
                        raise self.fail(where, f"{v!r}: must name a class of monai.networks.nets")
                    out[key] = v
                    continue
                if key in SPECIAL_KEYS_DROPPED:
                    continue
                if key.startswith("_") and key.endswith("_") and len(key) > 2:
                    raise self.fail(where, f"{key} is not supported: the network is built from data only")
                out[key] = self.value(v, where, depth=depth + 1)
            return out
        raise self.fail(path, f"{type(raw).__name__} values are not plain data")

    def string(self, raw: str, path: str, *, depth: int, top: bool) -> Any:
        if raw.startswith("$") and self.expressions is not None:
            return self.expressions(self, raw, path, depth)
        if raw.startswith("$") or "$@" in raw:
            raise self.fail(path, f"{_short(raw)}: $ expressions are never evaluated; give the value as data")
        if not raw.startswith(("@", "%")):
            return raw
        if not self.references:
            raise self.fail(path, f"{_short(raw)}: references are not resolved here; give the value")
        sigil, ref = raw[0], raw[1:]
        if sigil == "%" and (re.search(r"[/\\]|\.(json|ya?ml)\b", ref) or ref.startswith(("::", "#"))):
            raise self.fail(path, f"{_short(raw)}: a macro may only point inside this file")
        if not ref or ref.startswith(("::", "#")):
            raise self.fail(path, f"{_short(raw)}: relative or empty ids are not supported")
        if ref in self.resolving:
            chain = " -> ".join([*self.resolving, ref])
            raise self.fail(path, f"{_short(raw)}: the references form a cycle ({chain})")
        target = self.lookup(ref, raw, path)
        self.resolving.append(ref)
        try:
            # a referenced value is resolved like one written in place: still data, no _target_ unless
            # it is the network_def itself
            return self.value(target, path, depth=depth + 1, top=top)
        finally:
            self.resolving.pop()

    def reference(self, ref: str, raw: str, path: str, *, depth: int) -> Any:
        """The value ``@ref`` names, resolved like one written in place (cycle-safe)."""
        if not ref or ref.startswith(("::", "#")):
            raise self.fail(path, f"{_short(raw)}: relative or empty ids are not supported")
        if ref in self.resolving:
            chain = " -> ".join([*self.resolving, ref])
            raise self.fail(path, f"{_short(raw)}: the references form a cycle ({chain})")
        target = self.lookup(ref, raw, path)
        self.resolving.append(ref)
        try:
            return self.value(target, path, depth=depth + 1)
        finally:
            self.resolving.pop()

    def lookup(self, ref: str, raw: str, path: str) -> Any:
        node: Any = self.root
        for part in _ID_SPLIT.split(ref):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise self.fail(path, f"{_short(raw)}: no entry {part!r} in this config")
        return node


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")
