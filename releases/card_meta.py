"""The machine-readable head of the dataset card: the Hugging Face Hub's YAML metadata block and the
licence identifiers behind it.

``front_matter`` gives the ``---`` ... ``---`` block the Hub reads from a README.md (``license``,
``license_name``, ``pretty_name``, ``language``, ``size_categories``, ``task_categories``, ``task_ids``,
``annotations_creators``, ``tags``; see https://github.com/huggingface/hub-docs/blob/main/datasetcard.md).
Each export adds its format's ``configs`` (``export_readme``): the data files the ``datasets`` library and
the Hub's viewer load, with their builder parameters (``field`` picks a list inside a JSON file).

The YAML is written here (block style, every string double-quoted as JSON, which YAML reads as the same
string), so the output is deterministic and needs no YAML library.
"""

from __future__ import annotations

import json
import re
from typing import Any

# The Hub's licence identifiers (https://huggingface.co/docs/hub/repositories-licenses) a free-text
# dataset licence can name; anything else is ``other`` with a ``license_name``.
HUB_LICENCES = frozenset(
    """
    apache-2.0 mit afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc
    cc0-1.0 cc-by-2.0 cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0
    cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0
    cc-by-nc-sa-4.0 cdla-sharing-1.0 cdla-permissive-1.0 cdla-permissive-2.0 odc-by odbl pddl gpl-3.0
    lgpl-3.0 mpl-2.0 unlicense
    """.split()
)
_CC = re.compile(r"\bcc[\s_-]*by((?:[\s_-]*(?:nc|nd|sa))*)[\s_-]*v?(\d\.\d)")
_CC_WORDS = (
    (r"creative\s+commons\s+attribution", "cc by"),
    (r"non[\s-]*commercial", "nc"),
    (r"no[\s-]*derivatives?|no[\s-]*derivs", "nd"),
    (r"share[\s-]*alike", "sa"),
)
_OTHER = (
    (re.compile(r"\bcc0\b|cc[\s-]*zero|public\s+domain\s+dedication"), "cc0-1.0"),
    (re.compile(r"\bapache(?:\s+license)?[\s,-]*(?:version\s*)?2(?:\.0)?\b"), "apache-2.0"),
    (re.compile(r"\bmit\b(?:\s+licen[cs]e)?"), "mit"),
    (re.compile(r"\bodbl\b|open\s+database\s+licen[cs]e"), "odbl"),
    (re.compile(r"\bpddl\b"), "pddl"),
    (re.compile(r"\bodc[\s-]*by\b"), "odc-by"),
)
CC_URL = "https://creativecommons.org/licenses/{kind}/{version}/"


def licence_parts(text: str) -> list[tuple[str, str | None]]:
    """The dataset's licence statement split at ``;`` (one part per source, e.g. "CC BY 4.0 (CT, TCIA)"),
    each with the Hub identifier it names (None when it names none)."""
    return [(part, hub_licence(part)) for part in (p.strip() for p in (text or "").split(";")) if part]


def hub_licence(text: str) -> str | None:
    """The Hub licence identifier a licence text names: "CC BY-NC-ND 4.0", "Creative Commons Attribution
    4.0", "cc-by-4.0" -> ``cc-by-nc-nd-4.0`` / ``cc-by-4.0``; None when it names none the Hub lists."""
    low = text.lower()
    for pattern, word in _CC_WORDS:
        low = re.sub(pattern, word, low)
    found = _CC.search(low)
    if found:
        mods = re.findall(r"nc|nd|sa", found.group(1))
        ident = "-".join(["cc-by", *mods, found.group(2)])
        return ident if ident in HUB_LICENCES else None
    for pattern, ident in _OTHER:
        if pattern.search(low):
            return ident
    return None


def licence_url(ident: str) -> str | None:
    """The licence's canonical URL (Creative Commons ones), else None."""
    found = re.fullmatch(r"cc-(by(?:-nc)?(?:-nd|-sa)?)-(\d\.\d)", ident)
    if found:
        return CC_URL.format(kind=found.group(1), version=found.group(2))
    if ident == "cc0-1.0":
        return "https://creativecommons.org/publicdomain/zero/1.0/"
    return None


def licence_fields(slug: str, text: str) -> dict[str, Any]:
    """``license`` (an identifier, or a list of them for several sources) and, where some part names no
    identifier the Hub lists, ``license: other`` with ``license_name``; ``unknown`` when none is stated."""
    parts = licence_parts(text)
    if not parts:
        return {"license": "unknown"}
    ids = list(dict.fromkeys(ident for _, ident in parts if ident))
    if not all(ident for _, ident in parts):
        return {"license": "other", "license_name": f"{slug}-licence"}
    return {"license": ids[0] if len(ids) == 1 else ids}


def size_category(n: int) -> str:
    """The Hub's size bucket for ``n`` examples."""
    buckets = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"))
    for top, name in buckets:
        if n < top:
            return name
    return "1M<n<10M" if n < 10_000_000 else "10M<n<100M"


def tasks(kinds: set[str]) -> tuple[list[str], list[str]]:
    """``task_categories`` and ``task_ids`` for labels of ``kinds`` (mask, box, none)."""
    categories, ids = [], []
    if "mask" in kinds:
        categories.append("image-segmentation")
        ids += ["semantic-segmentation", "instance-segmentation"]
    if "box" in kinds:
        categories.append("object-detection")
    if "none" in kinds:
        categories.append("image-classification")
        ids.append("multi-label-image-classification")
    if kinds & {"mask", "box"}:
        categories.append("image-to-text")  # grounded report generation: findings with their regions
    return categories, ids


# --- YAML -------------------------------------------------------------------------------------------------

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return json.dumps(str(value))  # ASCII with escapes: a YAML double-quoted scalar of the same text


def _key(key: Any) -> str:
    return str(key) if _PLAIN_KEY.match(str(key)) else json.dumps(str(key))


def yaml_lines(value: Any, indent: int = 0) -> list[str]:
    """Block-style YAML of dicts, lists and scalars (nested lists of lists are not needed here)."""
    pad = "  " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                lines.append(f"{pad}{_key(key)}:")
                lines += yaml_lines(item, indent + 1)
            else:
                lines.append(f"{pad}{_key(key)}: {_scalar(item)}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict) and item:
                sub = yaml_lines(item, indent + 1)
                sub[0] = f"{pad}- {sub[0].lstrip()}"
                lines += sub
            else:
                lines.append(f"{pad}- {_scalar(item)}")
    else:
        lines.append(pad + _scalar(value))
    return lines


def front_matter(meta: dict[str, Any]) -> str:
    return "---\n" + "\n".join(yaml_lines(meta)) + "\n---\n"


# --- Per export ------------------------------------------------------------------------------------------

# split name in a release -> the Hub's split name
HUB_SPLITS = {"train": "train", "val": "validation", "test": "test"}


def hub_configs(fmt_name: str, splits: list[str]) -> list[dict[str, Any]]:
    """The ``configs`` of an export in ``fmt_name`` whose release has cases in ``splits``: per config its
    data files (paths in the export) and the JSON ``field`` that holds the rows."""

    def per_split(path: str, field_of: dict[str, str]) -> list[dict[str, Any]]:
        out = []
        for s in splits:
            name = HUB_SPLITS.get(s, s)
            out.append(
                {
                    "config_name": name,
                    "data_files": [{"split": name, "path": path}],
                    "field": field_of.get(s, s),
                }
            )
        return out

    if fmt_name == "rexgroundingct":
        configs = per_split("dataset.json", {})
    elif fmt_name == "monai":
        configs = per_split("dataset.json", {"train": "training", "val": "validation", "test": "test"})
    elif fmt_name == "dicom-seg":
        configs = [{"config_name": "cases", "data_files": "index.json", "field": "cases"}]
    elif fmt_name == "chexpert":
        csv = {"train": "train.csv", "val": "valid.csv", "test": "test.csv"}
        files = [{"split": HUB_SPLITS[s], "path": f"chexpert/{csv[s]}"} for s in splits if s in csv]
        configs = [{"config_name": "labels", "data_files": files}] if files else []
    elif fmt_name == "radfact":
        configs = [{"config_name": "grounded_reports", "data_files": "radfact/grounded_reports.json"}]
    elif fmt_name == "fgcxr":
        configs = [{"config_name": "studies", "data_files": "fgcxr/manifest.json", "field": "studies"}]
    elif fmt_name == "iai":
        csv = {"train": "train.csv", "val": "dev.csv", "test": "test.csv"}
        files = [{"split": HUB_SPLITS[s], "path": f"iai/{csv[s]}"} for s in splits if s in csv]
        configs = [{"config_name": "table", "data_files": files}] if files else []
    else:
        return []
    if configs:
        configs[0] = {**configs[0], "default": True}
    return configs


def export_readme(card: str, fmt_name: str, splits: list[str], fallback_head: str) -> str:
    """The README.md of an export: the release's card with the format's ``configs`` added to its YAML
    block (a card frozen before cards had one gets ``fallback_head``) and a line naming the format."""
    if card.startswith("---\n") and "\n---\n" in card[4:]:
        head, body = card[4:].split("\n---\n", 1)
        head = "---\n" + head + "\n"
    else:
        head, body = fallback_head[: -len("---\n")], card
    configs = hub_configs(fmt_name, splits)
    if configs:
        head += "\n".join(yaml_lines({"configs": configs})) + "\n"
    from releases.card_formats import FORMATS_BY_NAME

    where = 'under "Files and loading" below, ' if fmt_name in FORMATS_BY_NAME else ""
    note = (
        f"\n> This folder is the `{fmt_name}` export of this release: its files are described {where}in "
        "`croissant.json` (Croissant 1.0, for `mlcroissant`) and in `SHA256SUMS`.\n"
    )
    first, _, rest = body.partition("\n")
    return head + "---\n" + first + "\n" + note + rest
