"""The attribute table of DICOM PS3.15 Annex E, Table E.1-1 (Basic Application Level Confidentiality
Profile), as applied here with the Retain Longitudinal Temporal Information With Modified Dates and
Retain Patient Characteristics options.

Actions, per attribute:

- ``X`` remove the element;
- ``Z`` keep the element with an empty value (zero-length; an empty sequence);
- ``D`` replace the value with a dummy value of the same VR (``ANONYMIZED``, ``0``; sequences are emptied);
- ``U`` replace the UID with one derived from it (``pseudonyms.uid_remap``).

Where the profile allows several actions (``X/Z``, ``X/D``, ``X/Z/D``, ``Z/D``, ``X/Z/U*``), the table
takes the strictest one that keeps the file meaningful: ``X`` unless the attribute is needed (Type 1/2 in
the image IODs: ``Z`` or ``D``), and ``U`` (keep, remap the UIDs inside) for the image reference sequences.

Rules by VR complete the table (see ``studies.deid.core``): dates (DA, DT) are shifted and times (TM)
kept, whatever the table says, except the patient's birth date and time; every UI value that is not a
well-known DICOM UID is remapped; every person name (PN) is emptied; private elements are removed but
for ``SAFE_PRIVATE``; overlay and curve groups (60xx, 50xx) and the command group (0000) are removed.

Kept on purpose (Retain Patient Characteristics): PatientSex, PatientAge, PatientWeight, PatientSize.
Ages (every AS value) of 90 years or more become ``090Y``, whatever their unit (``1100M``, ``4700W``):
HIPAA Safe Harbor, 45 CFR 164.514(b)(2)(i)(C), lets ages over 89 be kept only as one category "90 or
older" (``AGE_CAP_YEARS``).

Coded values from private or local coding schemes are dropped (see ``STANDARD_CODING_SCHEMES``).
"""

from pydicom.datadict import tag_for_keyword
from pydicom.tag import BaseTag, Tag

X = "X"
Z = "Z"
D = "D"
U = "U"
K = "K"  # keep (an option of this profile overrides the basic action)

# Dates and times are not listed: they follow the Retain Longitudinal Temporal Information With Modified
# Dates option (DA/DT shifted, TM kept), by VR, wherever they occur.
_REMOVE = """
AcquisitionComments AcquisitionContextSequence AcquisitionDeviceProcessingDescription
AcquisitionProtocolDescription ActualHumanPerformersSequence AdditionalPatientHistory AddressTrial
AdmissionID AdmittingDiagnosesCodeSequence AdmittingDiagnosesDescription Allergies
AnnotationGroupDescription Arbitrary AuthorObserverSequence BarcodeValue BeamDescription
BolusDescription BranchOfService CameraOwnerName CassetteID CertifiedTimestamp
ClinicalTrialProtocolEthicsCommitteeApprovalNumber ClinicalTrialSeriesDescription ClinicalTrialSeriesID
ClinicalTrialTimePointDescription CommentsOnRadiationDose CommentsOnThePerformedProcedureStep
CompensatorDescription ConfidentialityConstraintOnPatientDataDescription
ConsultingPhysicianIdentificationSequence ContainerComponentID ContainerDescription
ContentCreatorIdentificationCodeSequence ContributionDescription CountryOfResidence
CurrentObserverTrial CurrentPatientLocation CustodialOrganizationSequence DataSetTrailingPadding
DecompositionDescription DerivationDescription DetectorID DeviceDescription DeviceSerialNumber
DeviceSettingDescription DigitalSignaturesSequence DischargeDiagnosisDescription
DisplacementReferenceLabel DistributionAddress DistributionName DoseReferenceDescription
EncryptedAttributesSequence EntityDescription EntityName EquipmentFrameOfReferenceDescription
EthnicGroup FilterLookupTableDescription FixationDeviceDescription FractionGroupDescription
FrameComments GantryID GeneratorID GPSAltitude GPSAltitudeRef GPSAreaInformation GPSDOP
GPSDateStamp GPSDestBearing GPSDestBearingRef GPSDestDistance GPSDestDistanceRef GPSDestLatitude
GPSDestLatitudeRef GPSDestLongitude GPSDestLongitudeRef GPSDifferential GPSImgDirection
GPSImgDirectionRef GPSLatitude GPSLatitudeRef GPSLongitude GPSLongitudeRef GPSMapDatum
GPSMeasureMode GPSProcessingMethod GPSSatellites GPSSpeed GPSSpeedRef GPSStatus GPSTimeStamp
GPSTrack GPSTrackRef GPSVersionID HumanPerformerName HumanPerformerOrganization IconImageSequence
IdentifyingComments ImageComments ImagePresentationComments ImagingServiceRequestComments Impressions
InstanceOriginStatus InstitutionAddress InstitutionCodeSequence InstitutionName
InstitutionalDepartmentName InstitutionalDepartmentTypeCodeSequence InsurancePlanIdentification
IntendedRecipientsOfResultsIdentificationSequence InterpretationApproverSequence InterpretationAuthor
InterpretationDiagnosisDescription InterpretationID InterpretationIDIssuer InterpretationRecorder
InterpretationText InterpretationTranscriber IssuerOfAdmissionID IssuerOfAdmissionIDSequence
IssuerOfClinicalTrialProtocolID IssuerOfClinicalTrialSeriesID IssuerOfClinicalTrialSiteID
IssuerOfClinicalTrialSubjectID IssuerOfClinicalTrialSubjectReadingID IssuerOfClinicalTrialTimePointID
IssuerOfPatientID IssuerOfPatientIDQualifiersSequence IssuerOfServiceEpisodeID
IssuerOfServiceEpisodeIDSequence LabelText LensMake LensModel LensSerialNumber LensSpecification
LongDeviceDescription MAC MACParametersSequence MakerNote MedicalAlerts MedicalRecordLocator
MilitaryRank ModifiedAttributesSequence ModifiedImageDescription ModifyingDeviceID
MultienergyAcquisitionDescription NameOfPhysiciansReadingStudy NamesOfIntendedRecipientsOfResults
NetworkID NonconformingDataElementValue NonconformingModifiedAttributesSequence Occupation
OperatorIdentificationSequence OperatorsName OrderCallbackPhoneNumber OrderCallbackTelecomInformation
OrderEnteredBy OrderEntererLocation OriginalAttributesSequence Originator
OtherClinicalTrialProtocolIDsSequence OtherPatientIDs OtherPatientIDsSequence OtherPatientNames
ParticipantSequence PatientBirthDateInAlternativeCalendar PatientBirthName PatientBirthTime
PatientComments PatientDeathDateInAlternativeCalendar PatientAlternativeCalendar
PatientInstitutionResidence PatientInsurancePlanCodeSequence PatientMotherBirthName
PatientPrimaryLanguageCodeSequence PatientPrimaryLanguageModifierCodeSequence
PatientReligiousPreference PatientSetupPhotoDescription PatientSexNeutered PatientState
PatientTelecomInformation PatientTelephoneNumbers PatientTransportArrangements
PatientTreatmentPreparationMethodDescription PatientTreatmentPreparationProcedureParameterDescription
PatientAddress PerformedLocation PerformedProcedureStepDescription PerformedProcedureStepID
PerformedStationAETitle PerformedStationGeographicLocationCodeSequence PerformedStationName
PerformedStationNameCodeSequence PerformingPhysicianIdentificationSequence PerformingPhysicianName
PersonAddress PersonTelecomInformation PersonTelephoneNumbers PhysicianApprovingInterpretation
PhysiciansReadingStudyIdentificationSequence PhysiciansOfRecord PhysiciansOfRecordIdentificationSequence
PlateID PositionAcquisitionTemplateDescription PositionAcquisitionTemplateName PreMedication
PregnancyStatus PrescriptionDescription PriorTreatmentDoseDescription ProtocolName PyramidDescription
PyramidLabel ROICreatorSequence ROIDescription ROIGenerationDescription ROIInterpreterSequence
ROIObservationDescription ROIObservationLabel RTPlanDescription RTPlanName
ReasonForOmissionDescription ReasonForRequestedProcedureCodeSequence ReasonForStudy ReasonForVisit
ReasonForVisitCodeSequence ReasonForTheImagingServiceRequest ReasonForTheRequestedProcedure
ReceivingAE ReferencedDigitalSignatureSequence ReferencedPatientAliasSequence
ReferencedPatientPhotoSequence ReferencedPatientSequence ReferencedPerformedProcedureStepSequence
ReferencedSOPInstanceMACSequence ReferencedStudySequence ReferringPhysicianAddress
ReferringPhysicianIdentificationSequence ReferringPhysicianTelephoneNumbers RegionOfResidence
RequestAttributesSequence RequestedContrastAgent RequestedProcedureComments
RequestedProcedureDescription RequestedProcedureID RequestedProcedureLocation
RequestedSeriesDescription RequestingAE RequestingPhysician RequestingService
RespiratoryMotionCompensationTechniqueDescription ResponsibleOrganization ResponsiblePerson
ResultsComments ResultsDistributionListSequence ResultsID ResultsIDIssuer RetrieveAETitle
RetrieveURI RetrieveURL ReviewerName ScheduledHumanPerformersSequence
ScheduledPatientInstitutionResidence ScheduledPerformingPhysicianIdentificationSequence
ScheduledPerformingPhysicianName ScheduledProcedureStepDescription ScheduledProcedureStepID
ScheduledProcedureStepLocation ScheduledStationAETitle ScheduledStationGeographicLocationCodeSequence
ScheduledStationName ScheduledStationNameCodeSequence ScheduledStudyLocation
ScheduledStudyLocationAETitle SeriesDescription ServiceEpisodeDescription ServiceEpisodeID
SetupTechniqueDescription ShieldingDeviceDescription SlideIdentifier SmokingStatus SourceManufacturer
SourceSerialNumber SpecialNeeds SpecimenAccessionNumber SpecimenDetailedDescription
SpecimenShortDescription StationAETitle StationName StorageMediaFileSetID StructureSetDescription
StructureSetName StudyComments StudyDescription StudyIDIssuer TelephoneNumberTrial TemplateLocalVersion
TemplateVersion TextComments TextString TimezoneOffsetFromUTC TopicAuthor TopicKeywords TopicSubject
TopicTitle TransducerIdentificationSequence TreatmentMachineName TreatmentSites UDISequence
UniqueDeviceIdentifier VerbalSourceTrial VerbalSourceIdentifierCodeSequenceTrial VisitComments
WaveformFilterDescription XRayDetectorLabel RTTreatmentApproachLabel TreatmentSite
SourceApplicationEntityTitle SendingApplicationEntityTitle ReceivingApplicationEntityTitle
PrivateInformationCreatorUID PrivateInformation
"""

_EMPTY = """
AccessionNumber ClinicalTrialCoordinatingCenterName ClinicalTrialProtocolName ClinicalTrialSiteID
ClinicalTrialSiteName ClinicalTrialTimePointID ConceptualVolumeCombinationDescription
ConceptualVolumeDescription ConsultingPhysicianName ContentCreatorName ContrastBolusAgent
DeviceAlternateIdentifier FillerOrderNumberImagingServiceRequest FractionationNotes
IssuerOfTheContainerIdentifierSequence IssuerOfTheSpecimenIdentifierSequence
ManufacturerDeviceIdentifier PatientBirthDate PatientName PlacerOrderNumberImagingServiceRequest
PrescriptionNotes PrescriptionNotesSequence ROIInterpreter ROIName RTAccessoryDeviceSlotID
RTAccessoryHolderSlotID RTPhysicianIntentNarrative RadiationGenerationModeDescription
ReasonForSuperseding ReferringPhysicianName SourceOfPreviousValues SpecimenPreparationSequence
StudyID TreatmentTechniqueNotes VerifyingObserverIdentificationCodeSequence
"""

_DUMMY = """
AcquisitionFieldOfViewLabel AnnotationGroupLabel CertificateOfSigner
ClinicalTrialProtocolEthicsCommitteeName ClinicalTrialProtocolID ClinicalTrialSponsorName
ClinicalTrialSubjectID ClinicalTrialSubjectReadingID ContainerIdentifier ContentSequence
ContextGroupLocalVersion DestinationAE DeviceLabel EncapsulatedDocument EntityLabel EntityLongLabel
FlowIdentifier FlowIdentifierSequence FrameOriginTimestamp GraphicAnnotationSequence InterlockDescription
InterlockOriginDescription ModifyingSystem PatientID PersonIdentificationCodeSequence PersonName
RTPlanLabel RTPrescriptionLabel RTToleranceSetLabel RadiationDoseIdentificationLabel
RadiationDoseInVivoMeasurementLabel RadiationGenerationModeLabel ReasonForTheAttributeModification
SelectorAEValue SelectorASValue SelectorLOValue SelectorLTValue SelectorOBValue SelectorPNValue
SelectorSHValue SelectorSTValue SelectorUNValue SelectorURValue SelectorUTValue SourceIdentifier
SpecimenIdentifier StructureSetLabel TreatmentPositionGroupLabel TreatmentToleranceViolationDescription
UserContentLabel UserContentLongLabel VerifyingObserverName VerifyingObserverSequence
VerifyingOrganization XRayDetectorID XRaySourceID
"""

# X/Z/U*: references to other images stay, with their UIDs remapped.
_KEEP_REMAP = """
ReferencedImageSequence SourceImageSequence
"""

# The profile says X or Z; Retain Patient Characteristics keeps them.
_PATIENT_CHARACTERISTICS = """
PatientSex PatientAge PatientWeight PatientSize
"""


def _resolve(block: str, action: str) -> dict[BaseTag, str]:
    table: dict[BaseTag, str] = {}
    for keyword in block.split():
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise LookupError(f"de-identification table: {keyword} is not a DICOM keyword")
        table[Tag(tag)] = action
    return table


BASIC_PROFILE: dict[BaseTag, str] = {
    **_resolve(_REMOVE, X),
    **_resolve(_EMPTY, Z),
    **_resolve(_DUMMY, D),
    **_resolve(_KEEP_REMAP, U),
    **_resolve(_PATIENT_CHARACTERISTICS, K),
}

# Dates whose shift would still identify: removed or emptied by the table above, never shifted.
BIRTH_TAGS: frozenset[BaseTag] = frozenset(
    Tag(tag_for_keyword(k)) for k in ("PatientBirthDate", "PatientBirthTime")
)

# Private elements that survive: (group, private creator, element offset within the block).
# Philips PET: SUV scale factor (7053,xx00) and activity concentration scale factor (7053,xx09).
SAFE_PRIVATE: frozenset[tuple[int, str, int]] = frozenset(
    {(0x7053, "Philips PET Private Group", 0x00), (0x7053, "Philips PET Private Group", 0x09)}
)

# Removed whole: overlays (60xx), curves (50xx), the command group (0000).
REMOVED_GROUP_RANGES: tuple[tuple[int, int], ...] = ((0x0000, 0x0000), (0x5000, 0x50FF), (0x6000, 0x60FF))

METHOD_CODES: tuple[tuple[str, str], ...] = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    ("113108", "Retain Patient Characteristics Option"),
    ("113111", "Retain Safe Private Option"),
)

# Ages of this many years or more are all written as AGE_CAP (HIPAA Safe Harbor: "90 or older").
AGE_CAP_YEARS = 90
AGE_CAP = "090Y"

# Coding Scheme Designators (0008,0102) of the standard coding schemes: DICOM PS3.16 Chapter 8, Table 8-1
# "Coding Schemes" (with the retired designators still found in older files: SRT, SNM3, RFC3066).
# A code item is dropped when its designator is not one of these: in particular designators beginning
# with "99" and "L" (PS3.3 Section 8.2: "Coding scheme designators beginning with "99" and the coding
# scheme designator "L" are defined in HL7 V2 to be private or local coding schemes"; PS3.16 Chapter 8:
# "local or private coding schemes shall be identified by an alphanumeric identifier beginning with the
# characters "99""). Private codes are an institution's own vocabulary (its protocol, department and
# procedure names) and can point back to the site. Standard schemes registered with HL7 but missing
# here are dropped too: a lost code is the safe side.
STANDARD_CODING_SCHEMES: frozenset[str] = frozenset(
    """
    ACR ASTM-sigpurpose BARI BI C4 C5 CD2 DC DCM DCMUID FMA HPC I10 I10P I9 I9C IBSI ICDO3 ISO3166_1
    ISO639_1 ISO639_2 ISO_OID ITIS_TSN LN MA MAYONEURO MDC MDNS MGI MSH NCDR NCIt NDC NEU NICIP NYUMCCG
    POS PUBCHEM_CID RADELEMENT RADLEX RFC3066 RFC5646 RXNORM SCT SNM3 SRT UBERON UCUM UMLS UPC ZFIN
    """.split()
)
