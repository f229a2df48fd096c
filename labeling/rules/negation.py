"""Assertion of one mention inside its sentence: present, absent or uncertain (NegEx-style trigger scopes).

A pre-trigger ("no", "without", "free of", "possible", "cannot exclude" ...) covers the mentions after it up
to the end of its clause; a post-trigger ("... has resolved", "... cannot be excluded", "... is not seen")
covers the mention just before it. Clauses end at "but", "however", ";", "which", ", with", "there is" and
at a comma that opens a new positive statement (", stable ...", ", mild ..."). The trigger nearest to the
mention wins. Pseudo-triggers ("no change", "not only", "no interval change") are masked first.
"""

import re

from labeling.types import Assertion

_PSEUDO = re.compile(
    r"\b(?:no|without|not)\s+(?:significant\s+|appreciable\s+|substantial\s+|definite\s+)?(?:interval\s+)?"
    r"(?:change|increase|decrease|progression|worsening|improvement|difference)\b|\bnot\s+only\b"
    r"|\bno\s+longer\s+(?:present\s+)?(?=\w)(?!seen|visible|identified|present|evident|demonstrated|noted)"
    r"|\bgram[- ]negative\b|\bnot\s+well\s+(?:seen|visualized)\b|\bage[- ]indeterminate\b",
    re.I,
)

# Uncertainty triggers that contain negation words go first, so "cannot exclude" is never read as "not".
# Bare "compatible with" / "representing" are not hedges (CheXpert convention: "opacity compatible with
# atelectasis", "air-fluid level representing hydropneumothorax" assert the finding); only a modal makes
# them uncertain ("may be compatible with", "could represent", "possibly representing").
_PRE_UNCERTAIN = (
    r"cannot\s+(?:be\s+)?(?:entirely\s+|completely\s+|totally\s+)?(?:exclude|rule\s+out)|can\s?not\s+exclude"
    r"|can't\s+exclude|not\s+(?:entirely\s+|completely\s+)?(?:be\s+)?(?:excluded|ruled\s+out)"
    r"|possible|possibly|probable|probably|likely|may(?:\s+be)?|might|could|questionable|question\s+of"
    r"|suspicious\s+for|suspicion\s+(?:of|for)|suspected|suspect|concerning\s+for|concern\s+for"
    r"|suggestive\s+of|suggests?|suggesting|worrisome\s+for|differential|consider|considered|versus|vs\.?"
    r"|equivocal|presumed|presumably|perhaps|borderline|indeterminate|uncertain|rule\s+out|r/o|\?"
    r"|(?:may|might|could)\s+(?:represent|reflect|be\s+due\s+to)"
    r"|early|developing|evolving|potential|cannot\s+be\s+ruled\s+out"
    r"|to\s+(?:identify|exclude|evaluate\s+for|assess\s+for|detect|look\s+for)|correlat\w*\s+clinically"
    r"|clinical(?:ly)?\s+correlat\w*|symptoms?\s+of"
)
_PRE_NEGATIVE = (
    r"no|not|without|absent|absence\s+of|negative\s+for|free\s+of|clear\s+of|rather\s+than|resolution\s+of"
    r"|resolved|resolving\s+of|removal\s+of|removed|ruled\s+out|rules\s+out|deny|denies|never|nor|none"
    r"|interval\s+clearing\s+of|cleared|clearing\s+of|disappearance\s+of|no\s+evidence\s+of"
    r"|no\s+radiographic\s+evidence\s+of|no\s+longer|lack\s+of|fails?\s+to\s+(?:show|reveal|demonstrate)"
    r"|(?:is|are)\s+not|isn't|aren't|there\s+is\s+no|there\s+are\s+no"
)
_TRIGGER = re.compile(rf"\b(?:(?P<u>{_PRE_UNCERTAIN})|(?P<n>{_PRE_NEGATIVE}))(?!\w)", re.I)

_POST_UNCERTAIN = re.compile(
    r"^[\s,]*(?:\w+\s+){0,3}?(?:(?:is|are|was|were)\s+)?(?:(?:can|could)\s?not\s+(?:be\s+)?(?:entirely\s+|completely\s+)?"
    r"(?:excluded|ruled\s+out)|not\s+(?:entirely\s+|completely\s+)?(?:be\s+)?(?:excluded|ruled\s+out)"
    r"|(?:is|are)\s+(?:possible|likely|suspected|questioned|not\s+excluded)|(?:is|are)\s+(?:also\s+)?possible"
    r"|(?:may|might|could)\s+be\b(?!\s+(?:due|secondary|related|from|caused))|versus|vs\b|or\s+(?:\w+\s+){0,2}?(?:atelectasis|scar"
    r"|scarring|infiltrate|pneumonia|consolidation|effusion|edema|infection|mass|nodule|lesion)|\?)",
    re.I,
)
_POST_NEGATIVE = re.compile(
    r"^[\s,]*(?:\w+\s+){0,3}?(?:(?:is|are|was|were|has|have)\s+)?(?:been\s+)?(?:not\s+(?:seen|identified|present"
    r"|visualized|visible|evident|demonstrated|appreciated|noted|detected|appreciable|apparent)|resolved"
    r"|removed|absent|cleared|ruled\s+out|excluded|no\s+longer\s+(?:seen|visible|present|identified|evident)"
    r"|(?:appears?|is|are|remains?|seems?)\s+(?:grossly\s+)?(?:within\s+(?:the\s+)?(?:limits\s+of\s+normal|normal\s+limits)"
    r"|normal|unremarkable))",
    re.I,
)

# A clause ends here: the scope of a trigger does not cross it.
_TERMINATOR = re.compile(
    r"\b(?:but|however|although|though|except|aside\s+from|apart\s+from|other\s+than|whereas|while|which"
    r"|otherwise|yet|there\s+(?:is|are|has|have)(?!\s+(?:no|not)\b)|(?:is|are)\s+(?:again\s+)?(?:seen|noted|present)"
    r"|nonetheless|nevertheless|instead"
    r"|with(?=\s+(?:a\s+)?(?:small|large|moderate|mild|trace|bilateral|left|right|new|persistent|residual)\b))\b"
    r"|[;:]|\.\s|,\s*(?:and\s+)?(?:with\s+)?(?=(?:stable|persistent|unchanged|again|mild|mildly|moderate|severe"
    r"|increasing|increased|decreased|improved|improving|chronic|there|heart|cardiac|cardiomegaly"
    r"|status|s/p|healed|old|calcified)\b)",
    re.I,
)


def _mask(text: str) -> str:
    return _PSEUDO.sub(lambda m: " " * len(m.group(0)), text)


def clause_bounds(sentence: str, start: int, end: int) -> tuple[int, int]:
    """(start, end) of the clause around the mention ``sentence[start:end]``."""
    clause_start = 0
    for m in _TERMINATOR.finditer(sentence, 0, start):
        clause_start = m.end()
    m = _TERMINATOR.search(sentence, end)
    return clause_start, (m.start() if m else len(sentence))


def assertion_of(sentence: str, start: int, end: int, masked: str | None = None) -> Assertion:
    """Assertion of the mention ``sentence[start:end]``. ``masked`` is ``mask_sentence(sentence)``
    (pass it when assessing several mentions of one sentence)."""
    s = masked if masked is not None else mask_sentence(sentence)
    clause_start, clause_end = clause_bounds(s, start, end)
    nearest = None
    negated_before = False  # "no opacity to suggest pneumonia": a negation governs a later hedge
    for m in _TRIGGER.finditer(s, clause_start, end):
        if m.start() < end:
            if nearest is not None and nearest.group("n"):
                negated_before = True
            nearest = m
    if nearest is not None and nearest.group("u") and negated_before:
        return "absent"
    post = s[end:clause_end]
    # Post-triggers bind to the mention immediately before them.
    post_neg, post_unc = _POST_NEGATIVE.match(post), _POST_UNCERTAIN.match(post)
    if post_neg and post_unc and post_unc.end() >= post_neg.end():
        return "uncertain"  # "... cannot be excluded"
    if post_neg:
        if nearest is not None and nearest.group("u"):
            return "uncertain"
        return "absent"
    if nearest is not None:
        return "uncertain" if nearest.group("u") else "absent"
    if post_unc:
        return "uncertain"
    return "present"


def mask_sentence(sentence: str) -> str:
    """The sentence with pseudo-triggers blanked out (same length, same offsets)."""
    return _mask(sentence)
