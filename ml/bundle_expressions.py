"""``$`` expressions of a MONAI bundle's config read as data (``ml.bundle_pipeline``): never evaluated.

A short list of exact idioms is recognised by meaning after whitespace normalisation (``IDIOMS``,
``REFERENCE_IDIOM``), and literal expressions (numbers, strings, lists, ``@`` references, ``a if @flag
else b``, ``+`` of lists or numbers, unary minus, ``len(@list)``) are interpreted from their syntax tree
(``ast.parse`` builds it; this module walks it: no names, no calls but ``len``, no attributes). Anything
else is a ``ModelError`` naming the file and the key path. No torch here.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from ml.bundle_config import _Reader, _short

SCRIPTS_NOTE = "the bundle's scripts/ folder is never imported (its code would run in the worker)"

# exact $ idioms (whitespace normalised by normalise) and their meaning as data
IDIOMS: dict[str, Any] = {
    "monai.utils.CommonKeys.IMAGE": "image",
    "monai.utils.CommonKeys.LABEL": "label",
    "monai.utils.CommonKeys.PRED": "pred",
    "None": None,
    "True": True,
    "False": False,
    **{f"{mod}.{dt}": dt for mod in ("torch", "numpy", "np") for dt in (
        "float32", "float16", "float64", "int8", "int16", "int32", "int64", "uint8", "bool")},
}  # fmt: skip
# a copy of a reference: what the platform makes of every reference anyway
REFERENCE_IDIOM = re.compile(r"^(?:@([A-Za-z0-9_:#]+)|copy\.deepcopy\(@([A-Za-z0-9_:#]+)\))$")


def normalise(raw: str) -> str:
    """The text after ``$`` with whitespace collapsed and removed next to punctuation (``@a or b`` keeps
    its spaces: words stay apart), double quotes as single."""
    text = re.sub(r"\s+", " ", raw[1:]).strip().replace('"', "'")
    return re.sub(r"\s*([^\w\s])\s*", r"\1", text)


def expression(reader: _Reader, raw: str, path: str, depth: int) -> Any:
    """The meaning of a ``$`` string (see the module docstring), or a refusal naming ``path``."""
    text = normalise(raw)
    if text in IDIOMS:
        return IDIOMS[text]
    if m := REFERENCE_IDIOM.match(text):
        return reader.reference(m.group(1) or m.group(2), raw, path, depth=depth)
    if "scripts." in text or text.startswith("importscripts"):
        raise reader.fail(path, f"{_short(raw)}: {SCRIPTS_NOTE}")
    return _literal(reader, raw, path, depth)


_REF = re.compile(r"@([A-Za-z0-9_]+(?:(?:::|#)[A-Za-z0-9_]+)*)")


def _literal(reader: _Reader, raw: str, path: str, depth: int) -> Any:
    """A literal expression interpreted from its syntax tree: constants, lists/tuples, ``@`` references,
    ``a if c else b``, ``+``, unary ``-`` and ``len``. Nothing is evaluated: ``ast.parse`` only builds the
    tree and this function walks it; a name, a call other than ``len``, an attribute, a subscript, a
    comprehension or a lambda is refused."""
    refs: list[str] = []

    def placeholder(m: re.Match) -> str:
        refs.append(m.group(1))
        return f" __ref{len(refs) - 1}__ "

    source = _REF.sub(placeholder, raw[1:].strip())
    refused = reader.fail(
        path, f"{_short(raw)}: $ expressions are never evaluated and this is not one the platform "
        "recognises as data; give the value"
    )  # fmt: skip
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        raise refused from exc

    def walk(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            return [walk(e) for e in node.elts]
        if isinstance(node, ast.Name) and (m := re.fullmatch(r"__ref(\d+)__", node.id)):
            return reader.reference(refs[int(m.group(1))], raw, path, depth=depth)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = walk(node.operand)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = walk(node.left), walk(node.right)
            if type(left) is type(right) and isinstance(left, (list, str)):
                return left + right
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (left, right)):
                return left + right
        if (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "len"
            and len(node.args) == 1 and not node.keywords
        ):  # fmt: skip
            value = walk(node.args[0])
            if isinstance(value, (list, str, dict)):
                return len(value)
        if isinstance(node, ast.IfExp):
            test = walk(node.test)
            if isinstance(test, bool):
                return walk(node.body) if test else walk(node.orelse)
        raise refused

    return walk(tree.body)
