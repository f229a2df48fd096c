"""MeSH terms of the IU X-ray reports -> CheXpert observations, for the observations with a clear counterpart.

The IU ``MeSH`` column lists findings NLM indexers assigned to a report as ``Term/qualifier/qualifier``
(``normal`` for a normal study); only positive findings are indexed. A report is truth-positive for an
observation when one of its MeSH entries maps to it.

Scored (a MeSH heading names the same finding):
- Cardiomegaly: ``Cardiomegaly``; ``Cardiac Shadow`` qualified ``enlarged``. An entry qualified
  ``borderline`` (``Cardiomegaly/borderline``, ``Cardiac Shadow/borderline``; the only qualifier of the
  vocabulary that grades certainty) is an *uncertain* truth: positive only when uncertain labels are scored
  as positive (``--uones``), as the CheXpert labeler labels "borderline heart size" uncertain (-1). Issue 3
  change (was: borderline always positive); effect on the rules labeler under U-zeros reported separately
  in bench/RESULTS.md.
- Edema: ``Pulmonary Edema``, ``Pulmonary Congestion``, ``Heart Failure`` (CheXpert's Edema mentions
  include vascular congestion and heart failure).
- Consolidation: ``Consolidation``.
- Pneumonia: ``Pneumonia``.
- Atelectasis: ``Pulmonary Atelectasis``.
- Pneumothorax: ``Pneumothorax``, ``Hydropneumothorax``.
- Pleural Effusion: ``Pleural Effusion``, ``Hydropneumothorax``.
- Fracture: ``Fractures, Bone``.
- Lung Lesion: ``Nodule`` and ``Mass`` (any site but bone/breast qualifiers); ``Cavitation`` qualified
  ``lung`` (a cavitary lung lesion: "cavitary lesion" is one of CheXpert's Lung Lesion mentions and the rules
  labeler reads "cavitation"/"cavity" as one). Issue 3 change, rules-1.2 (was: unmapped); effect reported
  separately in bench/RESULTS.md.
- Support Devices: ``Catheters, Indwelling``, ``Surgical Instruments`` (clips), ``Implanted Medical
  Device``, ``Tube, Inserted``, ``Medical Device``, ``Stents``, ``Sutures``, ``Spinal Fusion`` (hardware).

Reported but left out of the macro-F1:
- Lung Opacity: MeSH splits an opacity among ``Opacity``, ``Airspace Disease``, ``Infiltrate``, ``Density``,
  ``Markings`` and often indexes only the diagnosis it is attributed to (``Pulmonary Atelectasis``,
  ``Cicatrix``); the mapping (``Opacity``/``Density`` with a lung qualifier, ``Airspace Disease``,
  ``Infiltrate``) is shown for information only.
- Enlarged Cardiomediastinum: an enlarged cardiomediastinal silhouette is indexed as ``Cardiomegaly`` or
  ``Cardiac Shadow``; ``Mediastinum/prominent`` is rare (8 reports) and mixes paratracheal findings.
- Pleural Other: ``Thickening/pleura`` and ``Cicatrix/pleura`` (shown for information: about a dozen
  reports, and apical pleural scarring is often indexed as lung ``Cicatrix``).
- No Finding: MeSH ``normal`` excludes findings outside the 13 observations (degenerative spine, tortuous
  aorta, granulomas), so it is not CheXpert's "No Finding"; shown for information.

Reports indexed ``No Indexing`` (never indexed) are left out of scoring.
"""

SCORED = (
    "Cardiomegaly", "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
    "Fracture", "Lung Lesion", "Support Devices",
)  # fmt: skip
INFORMATION = ("Lung Opacity", "Enlarged Cardiomediastinum", "Pleural Other", "No Finding")

_HEADINGS = {
    "Cardiomegaly": "Cardiomegaly",
    "Pulmonary Edema": "Edema",
    "Pulmonary Congestion": "Edema",
    "Heart Failure": "Edema",
    "Consolidation": "Consolidation",
    "Pneumonia": "Pneumonia",
    "Pulmonary Atelectasis": "Atelectasis",
    "Pneumothorax": "Pneumothorax",
    "Pleural Effusion": "Pleural Effusion",
    "Fractures, Bone": "Fracture",
    "Catheters, Indwelling": "Support Devices",
    "Surgical Instruments": "Support Devices",
    "Implanted Medical Device": "Support Devices",
    "Tube, Inserted": "Support Devices",
    "Medical Device": "Support Devices",
    "Stents": "Support Devices",
    "Sutures": "Support Devices",
    "Spinal Fusion": "Support Devices",
    "Airspace Disease": "Lung Opacity",
    "Infiltrate": "Lung Opacity",
}
_LUNG_SITES = {"lung", "retrocardiac", "costophrenic angle", "pleural sinus"}
_NON_LUNG = {
    "ribs",
    "thoracic vertebrae",
    "mediastinum",
    "heart",
    "mitral valve",
    "breast",
    "humerus",
    "spine",
}


def observations(mesh: str, *, uncertain_positive: bool = False) -> set[str] | None:
    """CheXpert observations named by one report's MeSH column; None for a report never indexed.
    Entries qualified ``borderline`` count only when ``uncertain_positive`` (U-ones scoring)."""
    out: set[str] = set()
    entries = [e.strip() for e in (mesh or "").split(";") if e.strip()]
    if not entries or any(e.lower() == "no indexing" for e in entries):
        return None
    if any(e.lower() == "normal" for e in entries):
        out.add("No Finding")
    for entry in entries:
        head, *quals = [q.strip() for q in entry.split("/")]
        quals_l = {q.lower() for q in quals}
        if "borderline" in quals_l and not uncertain_positive:
            continue
        if head in _HEADINGS:
            out.add(_HEADINGS[head])
        if head == "Hydropneumothorax":
            out |= {"Pneumothorax", "Pleural Effusion"}
        if head == "Cardiac Shadow" and quals_l & {"enlarged", "borderline"}:
            out.add("Cardiomegaly")
        if head in ("Nodule", "Mass") and not quals_l & _NON_LUNG:
            out.add("Lung Lesion")
        if head == "Cavitation" and "lung" in quals_l:
            out.add("Lung Lesion")
        if (
            head in ("Opacity", "Density")
            and not quals_l & _NON_LUNG
            and (quals_l & _LUNG_SITES or not quals_l)
        ):
            out.add("Lung Opacity")
        if head == "Mediastinum" and quals_l & {"enlarged", "prominent"}:
            out.add("Enlarged Cardiomediastinum")
        if head in ("Thickening", "Cicatrix") and "pleura" in quals_l:
            out.add("Pleural Other")
    return out
