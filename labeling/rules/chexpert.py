"""CheXpert observation lexicon: the words that mention each observation in chest X-ray reports.

Each observation has ``mention`` patterns (the assertion then comes from negation/uncertainty scope) and
optionally ``absent`` patterns, statements that themselves say the observation is not there ("heart size is
normal"), and ``uncertain`` patterns ("borderline cardiomegaly"). ``exclude`` patterns remove matches that
name something else ("pericardial effusion", "mass effect"). Patterns follow the CheXpert labeler's
mention lists, extended with common synonyms; all are matched case-insensitively on word boundaries.
"""

import re

_ADV = (
    r"(?:(?:mildly|moderately|severely|markedly|slightly|minimally|massively|significantly|somewhat|again"
    r"|still|now|stably|borderline|top|upper|at\s+least)\s+)*"
)
_HEART = (
    r"(?:heart|cardiac\s+(?:silhouette|shadow|size|contour|contours|diameter|outline)|heart\s+size|cardiac)"
)
_CM = (
    r"(?:cardiomediastinal\s+(?:silhouette|contours?|shadow|width)|mediastinum"
    r"|mediastinal\s+(?:silhouette|contours?|width|shadow))"
)
_NORMAL = (
    r"(?:normal|within\s+normal\s+limits|unremarkable|stable|not\s+enlarged|normal\s+in\s+size"
    r"|upper\s+normal)"
)
_BE = r"(?:\s+(?:is|are|appears?|remains?|looks?|seems?))?(?:\s+(?:to\s+be|again|still|now|stably))*"

LEXICON: dict[str, dict[str, str]] = {
    "Enlarged Cardiomediastinum": {
        "mention": rf"{_CM}{_BE}\s+{_ADV}(?:enlarged|widened|wide|prominent|increased)|(?:enlarged"
        rf"|widened|wide|prominent)\s+"
        rf"(?:cardio)?mediastin\w*|mediastinal\s+(?:widening|enlargement|prominence|mass|adenopathy"
        rf"|lymphadenopathy)"
        r"|widening\s+of\s+the\s+mediastinum|enlargement\s+of\s+the\s+cardiomediastinal\s+silhouette"
        r"|enlarged\s+cardiomediastinal|cardiomediastinal\s+enlargement",
        "absent": rf"{_CM}{_BE}\s+{_NORMAL}|normal\s+(?:size\s+(?:of\s+the\s+)?)?(?:cardio)?mediastin\w*"
        rf"|(?:cardio)?mediastinal\s+(?:silhouette|contours?)\s+(?:and\s+[\w\s]{{0,30}}?)?(?:is"
        rf"|are)\s+{_NORMAL}",
    },
    "Cardiomegaly": {
        "mention": rf"cardiomegaly|cardiac\s+enlargement|enlarged\s+(?:heart|cardiac\s+(?:silhouette"
        rf"|shadow|size))"
        rf"|enlargement\s+of\s+the\s+(?:heart|cardiac\s+silhouette)|{_HEART}{_BE}\s+{_ADV}(?:enlarged"
        rf"|large|increased|prominent)"
        r"|(?:heart|cardiac)\s+(?:size\s+)?(?:is\s+)?(?:at\s+the\s+)?upper\s+limits?\s+of\s+normal"
        r"|(?:heart|cardiac\s+silhouette)\s+(?:size\s+)?(?:is\s+)?(?:top|high)[- ]normal"
        r"|borderline\s+heart\s+size"
        r"|cardiomyopathy|(?:left|right)\s+ventricular\s+(?:enlargement|hypertrophy)|(?:left"
        r"|right)\s+atrial\s+enlargement",
        "absent": rf"{_HEART}{_BE}\s+(?:normal|within\s+normal\s+limits|unremarkable|normal\s+in\s+size)"
        rf"|normal\s+(?:heart|cardiac)\s*(?:size|silhouette|contour)?"
        rf"|heart\s+(?:size\s+)?(?:is\s+)?not\s+enlarged"
        rf"|(?:heart|cardiac\s+silhouette)\s+(?:and\s+[\w\s]{{0,40}}?)?(?:is|are)\s+(?:normal"
        rf"|within\s+normal\s+limits)",
        "uncertain": r"borderline|upper\s+limits?\s+of\s+normal|top[- ]normal|high[- ]normal",
    },
    "Lung Lesion": {
        "mention": r"nodules?|nodular\s+(?:[a-z]+\s+)?(?:densit(?:y|ies)|opacit(?:y|ies)|opacification"
        r"|lesions?)|masse?s?|lesions?"
        r"|tumou?rs?|neoplasms?"
        r"|carcinoma|malignan\w+|metasta\w+|cavitary\s+lesion|cavitation|cavity|lump|granulomas?",
        "exclude": r"mass\s+effect|soft\s+tissue\s+mass|(?:bone|bony|osseous|lytic|blastic|sclerotic"
        r"|skin|breast|liver|renal"
        r"|hepatic|adrenal|spine|spinal|vertebral|rib)\s+(?:\w+\s+)?(?:lesion|mass|nodule|metasta\w+)s?"
        r"|(?:lesion|mass|nodule)s?\s+(?:of|in|within|involving)\s+the\s+(?:[\w-]+\s+){0,3}(?:bones?|ribs?|spine"
        r"|liver|clavicle|humerus|scapula|vertebra\w*|sternum|breast|soft\s+tissues?)|body\s+mass|nipple"
        r"|calcified\s+granulomas?"
        r"|granulomas?|granulomatous|calcified\s+(?:\w+\s+)?nodules?",
        # Read right after the mention: a nodule the report puts on a rib/nipple or attributes to bone, an
        # old granuloma or an artifact is not a lung lesion ("nodular density projecting over the left 4th
        # rib", "... may represent a healing fracture").
        "attributed": r"[^;]{0,80}?\b(?:represents?|representing|reflects?|reflecting|consistent\s+with"
        r"|compatible\s+with|due\s+to|secondary\s+to|corresponds?\s+to|likely|probably|may|could|might)"
        r"\s+(?:\w+\s+){0,4}?(?:(?:healing|healed|old)\s+(?:\w+\s+)?fractures?|callus|artifacts?|nipples?"
        r"|granulomas?|overlying|superimposed|telemetry|bone\s+islands?)\b",
        # ... and one only located over a rib/nipple (not attributed) may be in the bone: uncertain.
        "over_bone": r"[^;]{0,20}?\b(?:projecting|projects|projected|overlying|overlies|superimposed)"
        r"\s+(?:over|on|upon|through)?\s*(?:the\s+)?(?:[\w-]+\s+){0,7}?(?:ribs?|clavicles?|scapulae?|nipples?"
        r"|breasts?)\b",
    },
    "Lung Opacity": {
        "mention": r"opacit(?:y|ies)|opacification|opacified|infiltrat(?:e|es|ion|ive)"
        r"|air\s*-?space\s+(?:disease|process|opacit\w+)"
        r"|densit(?:y|ies)|haziness|hazy|interstitial\s+(?:markings?|prominence|opacit\w+|disease"
        r"|pattern|thickening"
        r"|changes?|process|lung\s+disease|abnormality)|reticular|reticulonodular|reticulation"
        r"|ground[- ]glass"
        r"|increased\s+(?:lung\s+|pulmonary\s+|interstitial\s+|bronchovascular\s+)?markings"
        r"|parenchymal\s+disease"
        r"|airspace\s+consolidation|alveolar\s+(?:disease|process|opacit\w+)|patchy\s+(?:disease|changes)"
        r"|infiltrates?|streaky\s+(?:changes|markings)",
        "exclude": r"(?:bone|bony|osseous|bone\s+mineral)\s+densit(?:y|ies)|densit(?:y"
        r"|ies)\s+of\s+the\s+(?:bones?|ribs?)"
        r"|calcified\s+densit(?:y|ies)|nodular\s+densit\w+|nipple|breast\s+(?:tissue|shadow)"
        r"|soft\s+tissue\s+densit\w+",
    },
    "Edema": {
        "mention": r"edema|oedema|heart\s+failure|chf|(?:pulmonary\s+)?(?:vascular|venous)\s+congestion"
        r"|pulmonary\s+congestion"
        r"|congestive|cephalization|cephalisation|kerley\s+b|fluid\s+overload|volume\s+overload"
        r"|(?:vascular|venous)\s+(?:engorgement|redistribution)"
        r"|indistinct(?:ness)?\s+(?:of\s+the\s+)?(?:pulmonary\s+)?"
        r"(?:vessels|vasculature|vascular)|(?:pulmonary\s+)?vascular(?:ity)?\s+(?:is\s+)?(?:indistinct"
        r"|congested|engorged)"
        r"|congestion|(?:pulmonary\s+)?vascular\s+prominence|prominen(?:t"
        r"|ce\s+of\s+the)\s+(?:pulmonary\s+|lung\s+)?"
        r"(?:vasculature|vascularity|vessels|vascular\s+markings)"
        r"|increased\s+(?:pulmonary\s+)?vascular(?:ity)?"
        r"|(?:pulmonary|lung)\s+vascularity\s+(?:is\s+)?(?:prominent|increased)",
        "exclude": r"(?:soft\s+tissue|subcutaneous|extremity|leg|facial|peripheral)\s+edema"
        r"|nasal\s+congestion",
    },
    "Consolidation": {
        "mention": r"consolidat(?:ion|ions|ive|ed|ing)",
    },
    "Pneumonia": {
        "mention": r"pneumonias?|bronchopneumonia|pneumonitis|infection|infectious(?:\s+process)?"
        r"|infective|aspiration"
        r"|(?:lobar|multilobar)\s+pneumonia",
        "exclude": r"(?:urinary|urinary\s+tract|skin|wound|granulomatous|old|prior|previous|remote"
        r"|healed)\s+infection"
        r"|aspiration\s+(?:precautions|risk)",
    },
    "Atelectasis": {
        "mention": r"atelecta\w*|(?:lobar|lobe|lung|segmental|subsegmental)\s+collapse"
        r"|collapse\s+of\s+the\s+[\w\s]{0,25}?"
        r"(?:lobe|lung|lingula)|collapsed\s+(?:lobe|lung)|(?:lobe|lung)\s+(?:is\s+)?collapsed"
        r"|plate-?like\s+(?:opacit\w+|"
        r"densit\w+)|discoid",
    },
    "Pneumothorax": {
        "mention": r"pneumothora(?:x|ces|xes)|hydropneumothora\w+|ptx|pneumothoraces",
    },
    "Pleural Effusion": {
        "mention": r"(?:pleural\s+)?effusions?|pleural\s+fluid|hydrothorax|hydropneumothora\w+"
        r"|fluid\s+(?:in|within|tracking\s+along)"
        r"\s+the\s+(?:\w+\s+)?(?:fissure|pleural\s+space)|pleural\s+collection",
        "exclude": r"pericardial\s+effusions?|joint\s+effusions?|(?:knee|shoulder)\s+effusions?",
    },
    "Pleural Other": {
        "mention": r"pleural\s+(?:thickening|scar\w*|plaques?|calcifications?|fibrosis|reaction"
        r"|based\s+(?:scar\w*|"
        r"thickening))|pleuro-?parenchymal\s+(?:scar\w*|thickening|changes?)|fibrothorax"
        r"|apical\s+(?:pleural\s+)?"
        r"(?:cap|capping|thickening)|pleural\s+(?:and\s+parenchymal\s+)?(?:scarring|thickening)"
        r"|thickening\s+of\s+the\s+(?:\w+\s+)?pleura|calcified\s+pleural\s+plaques?",
    },
    "Fracture": {
        "mention": r"fractur\w*|fracture-dislocations?|fx|broken\s+(?:rib|ribs|clavicle|bone)",
    },
    "Support Devices": {
        "mention": r"pacemakers?|pacer|aicd|icd|defibrillator|(?:central\s+(?:venous\s+)?|venous\s+"
        r"|picc\s+|dialysis\s+|"
        r"swan[- ]ganz\s+|port\s+|jugular\s+|subclavian\s+|midline\s+|arterial\s+)(?:line|catheter)s?"
        r"|picc|catheters?"
        r"|port-?a-?cath|(?:chest\s+|mediport|power\s*port|infusion\s+)port|endotracheal\s+tube|et\s+tube|ett"
        r"|(?:nasogastric|orogastric|enteric|feeding|chest|tracheostomy|gastrostomy|dobhoff|ng|og)\s+tubes?"
        r"|tracheostomy|drains?|surgical\s+clips?|clips?|sternotomy\s+wires?|sternal\s+wires?"
        r"|(?:cerclage\s+)?wires?|(?:neuro|spinal\s+cord\s+|nerve\s+)?stimulators?|shunts?|tubing"
        r"|(?:spinal|cervical|thoracic|lumbar|thoracolumbar|anterior|posterior)\s+(?:\w+\s+)?fusion"
        r"|tip\s+(?:\w+\s+){0,5}?(?:svc|superior\s+vena\s+cava|right\s+atrium|cavoatrial|cavo-atrial|atriocaval)"
        r"|hardware|prosthe(?:sis|ses|tic)|(?:valve\s+)?replacement|stents?|(?:pacemaker"
        r"|pacer|icd)\s+leads?"
        r"|leads?|generator|devices?|fixation|(?:surgical\s+)?plates?|screws?|rods?|sutures?"
        r"|suture\s+material|staples?"
        r"|coils?|ivc\s+filter|filter|electrodes?|monitoring\s+leads|implants?|implanted|tubes?|lines",
        "exclude": r"(?:pleural|septal|fissural|kerley\s+b|skin|nipple|azygos|paraspinal|paratracheal"
        r"|mediastinal|"
        r"costophrenic|midline|junction|pleuro)\s+(?:lines?|stripe)|lines?\s+of\s+\w+|(?:breast"
        r"|nipple)\s+implants?"
        r"|(?:breast|nipple)\s+(?:\w+\s+)?prosthe(?:sis|ses|tic)|device\s+of\s+the\s+day|tubes?\s+(?:feeding\s+)?(?:are|is)\s+not|lead\s+(?:poisoning|point)",
    },
}

_COMPILED = {
    obs: {
        kind: re.compile(
            pat if kind in ("attributed", "over_bone") else rf"(?<![\w-])(?:{pat})(?![\w-])", re.I
        )
        for kind, pat in spec.items()
    }
    for obs, spec in LEXICON.items()
}


def mentions(sentence: str) -> list[tuple[str, int, int, str]]:
    """(observation, start, end, kind) of every mention in ``sentence``; ``kind`` is "mention", "absent" or
    "uncertain-mention" (an uncertain phrase overlapping a mention). Excluded matches are dropped, and a
    mention inside an ``absent`` phrase is dropped in favour of the phrase."""
    out = []
    for obs, pats in _COMPILED.items():
        excl = [(m.start(), m.end()) for m in pats["exclude"].finditer(sentence)] if "exclude" in pats else []
        absent = [(m.start(), m.end()) for m in pats["absent"].finditer(sentence)] if "absent" in pats else []
        for a, b in absent:
            out.append((obs, a, b, "absent"))
        unc = pats.get("uncertain")
        attributed, over_bone = pats.get("attributed"), pats.get("over_bone")
        for m in pats["mention"].finditer(sentence):
            a, b = m.start(), m.end()
            if any(x <= a and b <= y for x, y in excl) or any(x <= a < y or x < b <= y for x, y in absent):
                continue
            if attributed is not None and attributed.match(sentence, b):
                continue
            kind = "mention"
            if unc is not None and unc.search(sentence, a, b) or over_bone and over_bone.match(sentence, b):
                kind = "uncertain-mention"
            out.append((obs, a, b, kind))
    return out
