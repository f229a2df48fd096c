"""PET/CT lesion seeds: sentences that state exactly one SUVmax and one axial slice (image) number become
seeds (``code="suv"``, ``extra={"suvmax": x, "slice": n}``); SUVmax below 2.5 is dropped."""

import re

from labeling.rules.attributes import laterality, location, size_mm
from labeling.rules.negation import assertion_of, mask_sentence
from labeling.types import ProposedFinding

MIN_SUVMAX = 2.5
_SUV = re.compile(
    r"\b(?:suv\s*[-_ ]?\s*max|max(?:imum)?\s+suv|suv)\b(?:\s*(?:of|is|was|measuring|measures|up\s+to|=|:"
    r"|approximately|about"
    r"|~)\s*)*\s*(?P<v>\d{1,3}(?:\.\d+)?|\.\d+)",
    re.I,
)
_SLICE = re.compile(
    r"\b(?:image|img|slice|im|series\s+\d+\s*,?\s*image|axial\s+image|ser\s*\d+\s*im)\s*(?:#|no\.?"
    r"|number|:)?\s*"
    r"(?P<n>\d{1,4})\b",
    re.I,
)


def pet_label(sentences: list[tuple[str, str, int, int]]) -> list[ProposedFinding]:
    out: list[ProposedFinding] = []
    for name, text, start, end in sentences:
        sentence = text[start:end]
        suvs = list(_SUV.finditer(sentence))
        slices = {int(m.group("n")) for m in _SLICE.finditer(sentence)}
        if len(suvs) != 1 or len(slices) != 1:
            continue
        value = float(suvs[0].group("v"))
        if value < MIN_SUVMAX:
            continue
        low = sentence.lower()
        assertion = assertion_of(low, suvs[0].start(), suvs[0].end(), mask_sentence(low))
        if assertion == "absent":
            continue
        out.append(
            ProposedFinding(
                phrase=sentence,
                section=name,
                start=start,
                end=end,
                assertion=assertion,
                code="suv",
                laterality=laterality(sentence),
                location=location(sentence),
                size_mm=size_mm(sentence),
                extra={"suvmax": value, "slice": slices.pop()},
            )
        )
    return out
