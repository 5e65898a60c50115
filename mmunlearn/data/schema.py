"""The data contract: domains, fields, document layout and QA design (SPEC section 4)."""
from __future__ import annotations

from dataclasses import dataclass

DOMAINS = ("medical", "labor")
VIEWS = ("vqa_full", "vqa_masked", "text")
FORMS = ("generation", "cloze", "classification")
SPLITS = ("forget", "retain", "holdout")
N_OPTIONS = 4

# Field order is the order on the rendered document. The first field of each domain names the person.
FIELDS = {
    "medical": ("name", "sex", "date_of_birth", "patient_id", "address", "phone", "blood_type",
                "diagnosis", "medication", "attending_doctor", "hospital", "admission_date"),
    "labor": ("name", "id_number", "address", "phone", "employer", "position", "salary",
              "start_date", "contract_term", "signature_date"),
}
MASKABLE = {
    "medical": ("name", "date_of_birth", "patient_id", "address", "phone", "blood_type",
                "diagnosis", "medication"),
    "labor": ("name", "id_number", "address", "phone", "position", "salary", "start_date"),
}
# Field that identifies the person in text questions about the name itself.
ID_FIELD = {"medical": "patient_id", "labor": "id_number"}
TITLE = {"medical": "MEDICAL REPORT", "labor": "LABOR CONTRACT"}
PERSON = {"medical": "patient", "labor": "employee"}

LABEL = {
    "name": "name", "sex": "sex", "date_of_birth": "date of birth", "patient_id": "patient ID",
    "address": "address", "phone": "phone number", "blood_type": "blood type",
    "diagnosis": "diagnosis", "medication": "medication", "attending_doctor": "attending doctor",
    "hospital": "hospital", "admission_date": "admission date", "id_number": "ID number",
    "employer": "employer", "position": "position", "salary": "salary",
    "start_date": "start date", "contract_term": "contract term", "signature_date": "signature date",
}

# QA design per profile (16 rows): PAIRED_FIELDS maskable fields are each asked in the `text` and
# `vqa_masked` views with one form (a unimodal/multimodal pair); FULL_VIEW_OF of them are asked
# again on the full document (`vqa_full`), same pair_id.
PAIRED_FIELDS = 6
PAIR_FORMS = ("generation", "generation", "cloze", "cloze", "classification", "classification")
FULL_VIEW_OF = (0, 1, 2, 4)
QA_PER_PROFILE = 2 * PAIRED_FIELDS + len(FULL_VIEW_OF)

# Image variants per profile: full, one per maskable field, fully masked.
FULL, ALL = "full", "all"


def images_per_profile(domain: str) -> int:
    return len(MASKABLE[domain]) + 2


def image_name(profile_id: str, variant: str) -> str:
    """Relative path (under data/) of a profile's document image; variant = full | all | <field>."""
    return f"images/{profile_id}_{'mask_' + variant if variant != FULL else FULL}.png"


@dataclass(frozen=True)
class Layout:
    """Pixel geometry of a document of side `size`: header band, identity cue, field boxes.

    The identity cue (an identicon) fills most of the page, as the tiny model only learns who a
    document belongs to from a large saturated cue; field boxes sit below it, so masks never cover it.
    """

    size: int
    domain: str

    columns = 3

    @property
    def header(self) -> tuple[int, int, int, int]:
        return (0, 0, self.size, self.size // 16)

    @property
    def cue(self) -> tuple[int, int, int, int]:
        return (0, self.size // 16, self.size, self.size * 3 // 4)

    def field_box(self, field: str) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), x1/y1 exclusive."""
        fields = FIELDS[self.domain]
        i = fields.index(field)
        rows = -(-len(fields) // self.columns)
        top = self.cue[3]
        h = (self.size - top) // rows
        w = self.size // self.columns
        r, c = divmod(i, self.columns)
        return (c * w, top + r * h, (c + 1) * w, top + (r + 1) * h)
