"""Laterality, anatomical location (lobe, zone) and size in millimetres from one sentence."""

import re

_LOBE = re.compile(
    r"\b(?P<side>right|left|rt|lt|r|l)?\s*(?P<part>upper|middle|mid|lower)\s+(?:lung\s+)?lobes?\b"
    r"|\b(?P<ling>lingula|lingular)\b"
    r"|\b(?P<side2>right|left)?\s*(?:lung\s+)?(?P<zone>apex|apices|apical|base|bases|basilar|basal|hilum|hila"
    r"|hilar|perihilar|retrocardiac|costophrenic|upper\s+lung|lower\s+lung|mid\s+lung|upper\s+zone|lower\s+zone)"
    r"(?:\s+(?:zone|region|field)s?)?\b"
    r"|\b(?P<biz>bibasilar|bibasal|biapical|bilateral\s+(?:lower|upper)\s+lobes?)\b",
    re.I,
)
_LATERALITY = re.compile(
    r"\b(?P<bi>bilateral|bilaterally|both|bibasilar|bibasal|biapical|bilobar|right\s+and\s+left"
    r"|left\s+and\s+right)\b|\b(?P<r>right|rt)\b|\b(?P<l>left|lt)\b",
    re.I,
)
_SIZE = re.compile(
    r"(?<![\w.])(?P<a>\d+(?:\.\d+)?)\s*(?:(?:x|by|×)\s*(?P<b>\d+(?:\.\d+)?)\s*)?(?:(?:x|by|×)\s*\d+(?:\.\d+)?\s*)?"
    r"(?P<unit>mm|millimeters?|millimetres?|cm|centimeters?|centimetres?)\b",
    re.I,
)
_PART = {"upper": "upper", "middle": "middle", "mid": "middle", "lower": "lower"}
_ZONE = {
    "apices": "apex", "apical": "apex", "bases": "base", "basilar": "base", "basal": "base", "hila": "hilum",
    "hilar": "hilum",
}  # fmt: skip


def _side(word: str | None) -> str:
    if not word:
        return ""
    w = word.lower().rstrip(".")
    return "right" if w in {"right", "rt", "r"} else "left" if w in {"left", "lt", "l"} else ""


def laterality(text: str) -> str:
    """left, right, bilateral or "" for the words of ``text`` (both sides named -> bilateral)."""
    found = set()
    for m in _LATERALITY.finditer(text):
        found.add("bilateral" if m.group("bi") else "right" if m.group("r") else "left")
    if "bilateral" in found or {"left", "right"} <= found:
        return "bilateral"
    return found.pop() if found else ""


def location(text: str) -> str:
    """The first lobe or lung zone named in ``text``: "right upper lobe", "lingula", "left base", ..."""
    m = _LOBE.search(text)
    if not m:
        return ""
    if m.group("part"):
        side = _side(m.group("side"))
        part = _PART[m.group("part").lower()]
        if not side and part == "middle":
            side = "right"
        return f"{side} {part} lobe".strip()
    if m.group("ling"):
        return "lingula"
    if m.group("biz"):
        word = m.group("biz").lower()
        return "bilateral " + ("apex" if "apic" in word else "upper lobes" if "upper" in word else "base")
    zone = " ".join(m.group("zone").lower().split())
    zone = _ZONE.get(zone, zone)
    return f"{_side(m.group('side2'))} {zone}".strip()


def size_mm(text: str) -> float | None:
    """The largest dimension stated in ``text`` in millimetres (1.2 cm -> 12.0; 3 x 4 mm -> 4.0)."""
    best = None
    for m in _SIZE.finditer(text):
        values = [float(m.group("a"))] + ([float(m.group("b"))] if m.group("b") else [])
        factor = 10.0 if m.group("unit").lower().startswith("c") else 1.0
        value = round(max(values) * factor, 3)
        if value > 0 and (best is None or value > best):
            best = value
    return best
