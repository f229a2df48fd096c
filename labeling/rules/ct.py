"""ReXGroundingCT steps on a chest CT report: sentences coded F0…/I0…, findings sorted into the 7 regions
(L lungs/airways/pleura, H heart/vessels, M mediastinum/hila, C chest wall/axilla, N lower neck, B bones,
A upper abdomen) with their source codes, abnormal Y/N and refers-to-prior Y/N, and positive lung/pleura
findings categorised 1a–1f / 2a–2h. Findings with no category are proposed with code "" (non-lung)."""

import re

from labeling.rules.attributes import laterality, location, size_mm
from labeling.rules.negation import assertion_of, clause_bounds, mask_sentence
from labeling.types import ProposedFinding

# Category -> pattern (first match wins, so specific ones come first).
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("1a", r"bronchial\s+wall\s+thicken\w*|peribronchial\s+thicken\w*|bronchial\s+thicken\w*"),
    ("1b", r"bronchiectas\w*|bronchiolectas\w*"),
    ("1c", r"emphysema\w*|bullae|bullous|bulla"),
    ("1d", r"(?:interlobular\s+)?septal\s+thicken\w*|interstitial\s+thicken\w*"),
    ("1e", r"micronodul\w*|tree[- ]in[- ]bud|centrilobular\s+nodul\w*|miliary"),
    ("2f", r"honeycomb\w*"),
    ("2g", r"pneumothora\w+"),
    (
        "2e",
        r"pleural\s+(?:effusion|fluid|thickening|plaques?)|effusions?|hydrothorax|pleural\s+calcification",
    ),
    ("2c", r"ground[- ]glass(?:\s+(?:opacit\w+|densit\w+|areas?|attenuation|infiltrat\w+))?|ggos?"),
    (
        "2a",
        r"linear\s+(?:opacit\w+|densit\w+|atelecta\w+|scar\w*)|band[- ]like|fibrotic\s+bands?"
        r"|atelectatic\s+bands?"
        r"|parenchymal\s+bands?|scarring|fibrotic\s+(?:strands?|changes?)",
    ),
    ("2b", r"atelecta\w+|consolidat\w+|collapse"),
    ("2d", r"nodules?|nodular\s+(?:lesions?|opacit\w+)|mass(?:es)?|tumou?rs?|neoplasm|lesions?"),
    (
        "1f",
        r"mosaic\s+attenuation|air\s+trapping|reticula\w+|interstitial\s+(?:changes?|opacit\w+)|fibrosis"
        r"|traction\s+bronchiectasis|mucus\s+plug\w*",
    ),
    ("2h", r"opacit\w+|infiltrat\w+|densit\w+|cavit\w+|pneumonia|infection|aspiration|cysts?"),
)
_CATS = [(code, re.compile(rf"(?<![\w-])(?:{pat})(?![\w-])", re.I)) for code, pat in CATEGORIES]

REGIONS: tuple[tuple[str, str], ...] = (
    (
        "L",
        r"lungs?|lobes?|pulmonary|pleura\w*|bronch\w*|trachea\w*|airways?|parenchym\w*|lingula\w*|alveol\w*"
        r"|fissure|emphysema|nodul\w+|ground[- ]glass|consolidat\w+|atelecta\w+|pneumothora\w+|effusion"
        r"|septal",
    ),
    (
        "H",
        r"heart|cardiac|cardiomegaly|pericardi\w*|aort\w+|coronary|pulmonary\s+arter\w+|ventric\w+|atri\w+"
        r"|vascular|vessels?|valve",
    ),
    (
        "M",
        r"mediastin\w*|hil(?:ar|um|a)|lymph\s+nodes?|lymphadenopathy|esophag\w+|thymus|paratracheal"
        r"|subcarinal",
    ),
    ("C", r"chest\s+wall|axill\w+|breast|subcutaneous|pectoral\w*|soft\s+tissues?"),
    ("N", r"thyroid|neck|supraclavicular"),
    (
        "B",
        r"bones?|osseous|vertebra\w*|spine|spinal|ribs?|sternum|clavicle|scapula|osteo\w+|fractur\w+"
        r"|lytic|sclerotic",
    ),
    (
        "A",
        r"liver|hepatic|spleen|splenic|kidney|renal|adrenal|gallbladder|pancrea\w+|stomach|abdomen|abdominal"
        r"|hiatal\s+hernia|cholelithiasis",
    ),
)
_REGIONS = [(code, re.compile(rf"\b(?:{pat})\b", re.I)) for code, pat in REGIONS]

_PRIOR = re.compile(
    r"\b(?:stable|unchanged|again|previously|prior|previous|persistent|redemonstrat\w+|known|compared"
    r"|interval"
    r"|no\s+(?:significant\s+)?change|as\s+before|increased|decreased|progress\w*|regress\w*|resolved|new)\b",
    re.I,
)
_NORMAL = re.compile(
    r"\b(?:normal|unremarkable|within\s+normal\s+limits|no\s+(?:significant\s+)?(?:abnormalit\w+"
    r"|pathology))\b",
    re.I,
)
_FINDING_WORD = re.compile(
    r"(?<![\w-])(?:" + "|".join(p for _, p in CATEGORIES) + r"|enlarg\w+|dilat\w+|calcifi\w+|lymphadenopathy"
    r"|cardiomegaly|hernia|fractur\w+|cysts?|stones?|plaques?|aneurysm\w*|thicken\w*|hypertroph\w+"
    r"|degenerat\w+)"
    r"(?![\w-])",
    re.I,
)


def region_of(text: str) -> str:
    """The first region whose words occur in ``text`` (earliest match wins); "" if none."""
    best, pos = "", None
    for code, rx in _REGIONS:
        m = rx.search(text)
        if m and (pos is None or m.start() < pos):
            best, pos = code, m.start()
    return best


def category_of(text: str) -> str:
    for code, rx in _CATS:
        if rx.search(text):
            return code
    return ""


def ct_label(sentences: list[tuple[str, str, int, int]]) -> list[ProposedFinding]:
    """Proposals for a chest CT report: one per finding word per sentence (F codes for findings sections,
    I codes for impressions, numbered per prefix in reading order)."""
    out: list[ProposedFinding] = []
    counters = {"F": 0, "I": 0}
    for name, text, start, end in sentences:
        prefix = "I" if name.lower().startswith("impression") else "F"
        code = f"{prefix}{counters[prefix]}"
        counters[prefix] += 1
        sentence = text[start:end]
        low = sentence.lower()
        masked = mask_sentence(low)
        seen = set()
        for m in _FINDING_WORD.finditer(low):
            c0, c1 = clause_bounds(masked, m.start(), m.end())
            clause = sentence[c0:c1]
            assertion = assertion_of(low, m.start(), m.end(), masked)
            region = region_of(clause) or region_of(sentence)
            category = category_of(m.group(0)) if region == "L" else ""
            key = (category or m.group(0).lower(), assertion)
            if key in seen:
                continue
            seen.add(key)
            abnormal = assertion != "absent" and not _NORMAL.search(clause)
            out.append(
                ProposedFinding(
                    phrase=clause.strip(" ,.;") or sentence[m.start() : m.end()],
                    section=name,
                    start=start,
                    end=end,
                    assertion=assertion,
                    code=category if abnormal else "",
                    laterality=laterality(clause),
                    location=location(clause),
                    size_mm=size_mm(clause),
                    extra={
                        "region": region or "L",
                        "source_codes": [code],
                        "abnormal": abnormal,
                        "refers_to_prior": bool(_PRIOR.search(clause)),
                    },
                )
            )
    return out
