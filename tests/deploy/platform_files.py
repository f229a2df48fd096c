"""Readers of platform/'s files for the deployment tests: env.example (the settings it lists), compose.yaml
(the variables it interpolates) and the Dockerfile (stages and their instructions), and the settings
names the code reads from the environment (found with ``ast``)."""

import ast
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PLATFORM = REPO / "platform"
ENV_EXAMPLE = PLATFORM / "env.example"
COMPOSE = PLATFORM / "compose.yaml"
DOCKERFILE = PLATFORM / "Dockerfile"
NGINX_CONF = PLATFORM / "nginx.conf"

_ASSIGNMENT = re.compile(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")


# --- env.example ----------------------------------------------------------------------------------------
@dataclass
class EnvEntry:
    name: str
    value: str
    commented: bool  # "# NAME=value": an optional setting, shown with an example value
    documented: bool  # a comment above it, in its paragraph, says what it is
    line: int


def env_example_entries(path: Path = ENV_EXAMPLE) -> list[EnvEntry]:
    """Every ``NAME=value`` line of ``path``, commented out or not. A name is documented when the nearest
    line above it that is not an assignment, in the same paragraph (no blank line between), is a comment
    other than a ``# --- section ---`` header."""
    entries: list[EnvEntry] = []
    last_comment: str | None = None  # the paragraph's nearest explanatory comment so far
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line:
            last_comment = None
            continue
        match = _ASSIGNMENT.match(line)
        if match:
            commented, name, value = match.groups()
            entries.append(EnvEntry(name, value, bool(commented), last_comment is not None, number))
        elif line.startswith("#"):
            text = line.lstrip("#").strip()
            last_comment = None if text.startswith("---") or not text else text
        else:
            raise AssertionError(f"{path.name} line {number} is neither NAME=value nor a comment: {raw!r}")
    return entries


def env_example_values(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    """The environment docker compose gives the app containers (``env_file``): uncommented lines only."""
    return {e.name: e.value for e in env_example_entries(path) if not e.commented}


# --- what the code reads ----------------------------------------------------------------------------------
# Code of the platform (not tests, benchmarks or build output).
CODE_EXCLUDE = {".venv", "tests", "bench", "frontend", "var", "node_modules", "migrations", "test-artifacts"}
# Names the code reads that are not settings of the platform.
NOT_SETTINGS = {"PYTHONPATH": "the interpreter's module path, handed on to child processes"}


@dataclass
class EnvReads:
    names: dict[str, list[str]] = field(default_factory=dict)  # name -> "file:line" where read
    patterns: dict[str, list[str]] = field(default_factory=dict)  # regex of a name built at run time

    def add(self, name: str, where: str) -> None:
        self.names.setdefault(name, []).append(where)

    def matches(self, name: str) -> bool:
        return name in self.names or any(re.fullmatch(p, name) for p in self.patterns)


def _is_environ(node: ast.AST) -> bool:
    """``os.environ``, or a name/attribute called ``environ`` (a mapping passed in place of it)."""
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
        isinstance(node, ast.Name) and node.id == "environ"
    )


def _string_pattern(node: ast.AST, assigned: dict[str, ast.AST]) -> str | None:
    """A regex for a string expression built at run time (``prefix + "BASE_URL"`` with
    ``prefix = f"LLM_{name.upper()}_"``), or None when it is not one."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return re.escape(node.value)
    if isinstance(node, ast.JoinedStr):
        return "".join(
            re.escape(v.value) if isinstance(v, ast.Constant) else "[A-Z0-9_]+" for v in node.values
        )
    if isinstance(node, ast.Name) and node.id in assigned:
        return _string_pattern(assigned[node.id], {})
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _string_pattern(node.left, assigned), _string_pattern(node.right, assigned)
        return left + right if left is not None and right is not None else None
    return None


def env_reads(root: Path = REPO) -> EnvReads:
    """Every environment variable the platform's code reads: ``env_str/env_int/env_bool/env_list`` (and
    any ``env_*``/``_env_*`` helper) with a literal name, ``os.environ.get``, ``os.environ[...]``,
    ``os.environ.setdefault``, ``os.getenv``, ``<mapping named environ>.get``, and names built at run
    time from literal parts (kept as patterns)."""
    found = EnvReads()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if CODE_EXCLUDE & set(rel.parts[:-1]) or rel.parts[0].startswith("."):
            continue
        tree = ast.parse(path.read_text(), filename=str(rel))
        assigned = {
            t.id: node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign)
            for t in node.targets
            if isinstance(t, ast.Name)
        }
        for node in ast.walk(tree):
            where = f"{rel}:{getattr(node, 'lineno', 0)}"
            arg: ast.AST | None = None
            if isinstance(node, ast.Call) and node.args:
                func = node.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                if isinstance(func, ast.Name) and re.fullmatch(r"_?env_\w+", name):
                    arg = node.args[0]
                elif isinstance(func, ast.Attribute) and name == "getenv":
                    arg = node.args[0]
                elif (
                    isinstance(func, ast.Attribute)
                    and name in {"get", "setdefault", "pop"}
                    and _is_environ(func.value)
                ):
                    arg = node.args[0]
            elif (
                isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and _is_environ(node.value)
            ):
                arg = node.slice
            if arg is None:
                continue
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.add(arg.value, where)
            elif (pattern := _string_pattern(arg, assigned)) is not None and "[" in pattern:
                found.patterns.setdefault(pattern, []).append(where)
    for name in NOT_SETTINGS:
        found.names.pop(name, None)
    return found


# --- compose.yaml and nginx.conf ----------------------------------------------------------------------------
_INTERPOLATION = re.compile(r"\$\$?\{([A-Za-z_][A-Za-z0-9_]*)")


def interpolated_names(path: Path) -> set[str]:
    """Variables ``${NAME...}`` (filled by docker compose, or by the nginx image's template step) and
    ``$${NAME...}`` (left for the container's shell, from its env_file) in ``path``."""
    return set(_INTERPOLATION.findall(path.read_text()))


# --- Dockerfile -------------------------------------------------------------------------------------------
@dataclass
class Instruction:
    keyword: str  # FROM, RUN, COPY, ...
    args: str  # the rest, continuation lines joined
    line: int


@dataclass
class Stage:
    name: str
    base: str  # the image or the stage it is built FROM
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def dockerfile_stages(path: Path = DOCKERFILE) -> dict[str, Stage]:
    """The stages of a Dockerfile by name (``FROM image AS name``), each with its instructions. Comments
    and line continuations (``\\``) are handled; JSON (exec) forms are kept as written."""
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    pending, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if not pending:
            start = number
        pending += " " + stripped
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        keyword, _, args = pending.strip().partition(" ")
        keyword, args, pending = keyword.upper(), " ".join(args.split()), ""
        if keyword == "FROM":
            words = args.split()
            base = words[0]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else f"stage{len(stages)}"
            current = stages[name] = Stage(name=name, base=base, instructions=[])
        elif current is None:
            if keyword != "ARG":  # ARG before the first FROM is allowed
                raise AssertionError(f"{path.name} line {start}: {keyword} before FROM")
        else:
            current.instructions.append(Instruction(keyword, args, start))
    return stages


def stage_chain(stages: dict[str, Stage], name: str) -> list[Stage]:
    """The stage and the stages it is built FROM, the first one first."""
    chain = [stages[name]]
    while chain[0].base in stages:
        chain.insert(0, stages[chain[0].base])
    return chain


def pip_requirement_files(stage_list: list[Stage]) -> tuple[list[str], list[str]]:
    """What the stages' ``pip install`` commands install: (requirement files, packages named directly)."""
    files: list[str] = []
    packages: list[str] = []
    for stage in stage_list:
        for run in stage.all("RUN"):
            for command in re.split(r"&&|;|\|\|", run.args):
                words = shlex.split(command)
                if len(words) < 2 or words[0] not in {"pip", "pip3"} and words[:3] != ["python", "-m", "pip"]:
                    continue
                if "install" not in words:
                    continue
                rest = words[words.index("install") + 1 :]
                skip_next = False
                for i, word in enumerate(rest):
                    if skip_next:
                        skip_next = False
                        continue
                    if word in {"-r", "--requirement"}:
                        files.append(rest[i + 1])
                        skip_next = True
                    elif word in {"--index-url", "-i", "--extra-index-url", "-c", "--constraint", "-f"}:
                        skip_next = True
                    elif not word.startswith("-"):
                        packages.append(word)
    return files, packages


def requirement_names(path: Path, _seen: set[Path] | None = None) -> dict[str, str]:
    """The distributions a requirements file names, following ``-r`` includes: {normalised name: line}."""
    seen = _seen if _seen is not None else set()
    if path in seen:
        return {}
    seen.add(path)
    names: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith(("-r ", "--requirement ")):
            names.update(requirement_names(path.parent / line.split(None, 1)[1], seen))
        elif not line.startswith("-"):
            names[normalise(re.split(r"[\s<>=!~\[;@]", line, maxsplit=1)[0])] = line
    return names


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# --- what an image holds ----------------------------------------------------------------------------------
def image_requirements(target: str) -> dict[str, str]:
    """The requirements the pip installs of Dockerfile stage ``target`` (and the stages it is built FROM)
    name, requirement files followed through ``-r``: {normalised name: requirement line}."""
    stages = dockerfile_stages()
    chain = stage_chain(stages, target)
    files, packages = pip_requirement_files(chain)
    copied = [c.args.split() for s in chain for c in s.all("COPY") if not c.args.startswith("--from")]
    names: dict[str, str] = {}
    for file in files:
        if not (REPO / file).is_file():
            raise AssertionError(f"{DOCKERFILE.name}: {target} installs {file}, which does not exist")
        if not any(file in args[:-1] or args[0] == "." for args in copied):
            raise AssertionError(f"{DOCKERFILE.name}: {target} installs {file} before copying it in")
        names.update(requirement_names(REPO / file))
    for package in packages:
        names[normalise(re.split(r"[<>=!~\[;@]", package, maxsplit=1)[0])] = package
    return names


def dependency_closure(requirements: dict[str, str]) -> set[str]:
    """The distributions ``requirements`` ({name: requirement line}) install: themselves and, from the
    installed packages' metadata, everything they depend on (extras such as ``psycopg[binary]`` followed,
    markers evaluated here): a requirement that pulls in torch (sentence-transformers does) is found."""
    import importlib.metadata

    from packaging.requirements import InvalidRequirement, Requirement

    wanted: list[tuple[str, frozenset[str]]] = []
    for name, line in requirements.items():
        try:
            wanted.append((name, frozenset(Requirement(line).extras)))
        except InvalidRequirement:
            wanted.append((name, frozenset()))
    seen: set[tuple[str, frozenset[str]]] = set()
    found: set[str] = set()
    while wanted:
        name, extras = wanted.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        found.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for text in requires:
            req = Requirement(text)
            if req.marker is not None and not any(
                req.marker.evaluate({"extra": extra}) for extra in (*extras, "")
            ):
                continue
            wanted.append((normalise(req.name), frozenset(req.extras)))
    return found


IMAGE_SITE = Path(__file__).resolve().parent / "image_site"


def image_environment(target: str, folder: Path) -> dict[str, str]:
    """Environment variables under which a Python process of this virtualenv can import only what the
    ``target`` image installs (tests/deploy/image_site/sitecustomize.py; a listing written to ``folder``)."""
    import json

    listing = folder / f"image-{target}.json"
    listing.write_text(
        json.dumps({"image": target, "distributions": sorted(dependency_closure(image_requirements(target)))})
    )
    return {"PYTHONPATH": str(IMAGE_SITE), "GROUNDLAB_TEST_IMAGE_PACKAGES": str(listing)}
