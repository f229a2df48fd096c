"""Which region proposals a finding starts from and which it shows as context (issue 16 item 3).

A finding's *start* is the region proposal whose mask becomes its version 1 (what the annotator corrects);
its *context* are the anatomy proposals of the place it is in, which the review screen shows as layers
beside the finding's own mask. The start is the first rule that finds one:

1. ``linked``: a proposal made for the finding's finding proposal (gaze sentences name theirs).
2. ``seed``: a ``pet-suv`` lesion grown from the SUVmax and slice the finding's sentence states.
3. ``text``: a text-grounded proposal (a grounding model's) of the finding's own sentence.
4. ``code``: a proposal of the finding's code (an anatomy proposal too: its code was set to the
   finding's on purpose), or a lesion label that names it (``LABEL_CODES``: a
   ``nodule`` label for a ReXGroundingCT ``2d`` or CheXpert ``Lung Lesion`` finding, ``pleural_effusion``
   for ``2e`` / ``Pleural Effusion`` ...).
5. ``organ``: the finding is an organ's size (``Cardiomegaly``: the heart): that organ's anatomy proposal.
6. ``overlap``: a lesion proposal (a label that names no other kind of finding) overlapping the finding's
   context, e.g. a model's ``lesion`` mask inside the right lung for "mass in the right upper lobe".

*Anatomy* proposals start a finding only by its exact code (4) or as the organ it is about (5), never by
a label or overlap: the ``lungs`` generator's, an anatomy model's
(``ModelVersion.task == "anatomy"``), and any other model's proposal whose label names an organ
(``organ_of``: left and right lung, the five lobes in their usual spellings (``lung_upper_lobe_right``,
``right upper lobe``), heart, mediastinum, trachea and airways, aorta, ...). Gaze and PET proposals are
always findings' regions.

*Place*: the side (right, left, bilateral) from the finding's laterality or location, else from its
sentence; the zone (upper, middle, lower; apex = upper, base = lower; the lingula is the left upper lobe's,
in the middle) from its location. The organ it lies in: the lungs for ReXGroundingCT lung and pleura
findings (region ``L`` or a ``1x``/``2x`` category) and CheXpert's lung observations, the heart for
cardiac ones (``CHEXPERT_ORGANS``, ``REX_REGION_ORGANS``). *Context*: the anatomy proposals of that
place: the named lobe where a model proposed lobes, and the side's lung; both lungs when the side is
bilateral or not said.

With a side and the two lungs to tell it by, the candidates of rules 3, 4 and 6 are cut to their
connected components on that side (a component is on the right when its centroid, in mm, lies nearer the
right lung's centroid along the line between the two lungs' centroids, so it works without knowing the
image's orientation, on a CT and on a radiograph; with one lung only, the components that touch its
bounding box); with a zone, to the components in that zone (the centroid's height within that lung's
extent: upper, middle, lower third; superior is the affine's +z on a CT, the image's top on a radiograph)
when any lies there (for rule 6 always: a lesion that names no finding must lie in the finding's zone).
A candidate with no component left is not the finding's. A start cut to some of its components is stored
as its own mask; the proposal stays its source (``Annotation.region_proposal``).

Everything here reads; ``annotation.findings.findings_made`` stores. Masks are read once per
call (``Matcher`` caches them per proposal, cropped to the proposal's box for the component analysis).
"""

from annotation.proposals.matcher import (
    Analysed,
    Component,
    Matched,
    Matcher,
    ScanGeometry,
    Start,
    finding_layers,
    read_mask,
)
from annotation.proposals.names import LABEL_CODES, ORGANS, label_codes, norm, organ_of
from annotation.proposals.place import Candidate, Place, candidates_of, context_of, finding_place, place_of

__all__ = [
    "LABEL_CODES", "ORGANS", "Analysed", "Candidate", "Component", "Matched", "Matcher", "Place",
    "ScanGeometry", "Start", "candidates_of", "context_of", "finding_layers", "finding_place", "label_codes",
    "norm", "organ_of", "place_of", "read_mask",
]  # fmt: skip
