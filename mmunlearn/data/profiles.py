"""Fictitious private profiles of two domains, deterministic from a seed.

Values come from small closed pools (names, streets, diagnoses, ...) combined at random, so a
profile is an arbitrary combination that a model can only know by memorising it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from mmunlearn.data.schema import DOMAINS, FIELDS

FIRST = ("Alma", "Bruno", "Clara", "Dario", "Elena", "Felix", "Greta", "Hugo", "Ines", "Jonas",
         "Karin", "Lukas", "Mira", "Nico", "Olga", "Pavel", "Quinn", "Rosa", "Sven", "Tara",
         "Ulla", "Viktor", "Wanda", "Xaver", "Yara", "Zeno", "Ada", "Boris", "Cora", "Emil",
         "Freya", "Gil", "Hanna", "Ivo", "Jana", "Kai", "Lena", "Milo", "Nora", "Otto")
LAST = ("Adler", "Berger", "Castell", "Dorn", "Eckart", "Falk", "Gruber", "Hahn", "Iversen",
        "Jansen", "Keller", "Lorenz", "Moser", "Novak", "Ostrow", "Pohl", "Quast", "Riedel",
        "Sauer", "Thiel", "Ulrich", "Vogt", "Wendt", "Zander", "Amsel", "Brand", "Crone",
        "Dietz", "Engel", "Fuchs", "Gerber", "Holm", "Imhof", "Jost", "Kranz", "Lang", "Marx",
        "Nagel", "Orth", "Prinz")
STREETS = ("Oak", "Maple", "Birch", "Cedar", "Elm", "Willow", "Pine", "Ash", "Linden", "Alder",
           "Hazel", "Poplar", "Rowan", "Spruce", "Yew", "Larch")
SUFFIXES = ("St", "Rd", "Ave", "Ln", "Way")
CITIES = ("Arden", "Belmont", "Corvin", "Dunmore", "Elston", "Fairhaven", "Glenrock", "Harrow",
          "Ironwood", "Juniper", "Kestrel", "Lakemont")
BLOOD = ("A+", "A-", "B+", "B-", "AB+", "AB-", "O+", "O-")
DIAGNOSES = ("asthma", "migraine", "gastritis", "anemia", "bronchitis", "eczema", "gout",
             "hypertension", "insomnia", "psoriasis", "sinusitis", "tendinitis", "vertigo",
             "arthritis", "diabetes", "pneumonia", "scoliosis", "tinnitus", "angina", "colitis")
MEDICATIONS = ("ibuprofen", "metformin", "amoxicillin", "lisinopril", "omeprazole", "salbutamol",
               "sertraline", "atorvastatin", "prednisone", "cetirizine", "naproxen", "warfarin",
               "allopurinol", "levothyroxine", "diclofenac", "loratadine")
HOSPITALS = ("St. Mary Hospital", "Northgate Clinic", "Riverside Hospital", "Hillcrest Clinic",
             "Lakeview Hospital", "Westbrook Clinic", "Summit Hospital", "Greenfield Clinic")
EMPLOYERS = ("Arcline Ltd", "Bluefin Corp", "Cobalt Works", "Delta Foods", "Evergreen Labs",
             "Foxglove Media", "Granite Build", "Harbor Logistics", "Ion Energy", "Juno Textiles")
POSITIONS = ("accountant", "engineer", "nurse", "chef", "designer", "analyst", "technician",
             "driver", "teacher", "cashier", "electrician", "editor", "welder", "clerk",
             "pharmacist", "architect")
TERMS = ("6 months", "1 year", "2 years", "3 years", "permanent")


def _date(rng: np.random.Generator, lo: int, hi: int) -> str:
    return f"{int(rng.integers(lo, hi + 1))}-{int(rng.integers(1, 13)):02d}-{int(rng.integers(1, 29)):02d}"


def _pick(rng: np.random.Generator, pool: tuple[str, ...]) -> str:
    return pool[int(rng.integers(len(pool)))]


def _address(rng: np.random.Generator) -> str:
    return f"{int(rng.integers(1, 200))} {_pick(rng, STREETS)} {_pick(rng, SUFFIXES)}, {_pick(rng, CITIES)}"


def _phone(rng: np.random.Generator) -> str:
    return f"555-{int(rng.integers(0, 10000)):04d}"


def _medical(rng: np.random.Generator, name: str) -> dict:
    return {
        "name": name,
        "sex": _pick(rng, ("female", "male")),
        "date_of_birth": _date(rng, 1940, 2005),
        "patient_id": f"MRN-{int(rng.integers(10000, 100000))}",
        "address": _address(rng),
        "phone": _phone(rng),
        "blood_type": _pick(rng, BLOOD),
        "diagnosis": _pick(rng, DIAGNOSES),
        "medication": _pick(rng, MEDICATIONS),
        "attending_doctor": f"Dr. {_pick(rng, LAST)}",
        "hospital": _pick(rng, HOSPITALS),
        "admission_date": _date(rng, 2018, 2025),
    }


def _labor(rng: np.random.Generator, name: str) -> dict:
    return {
        "name": name,
        "id_number": f"ID-{int(rng.integers(100000, 1000000))}",
        "address": _address(rng),
        "phone": _phone(rng),
        "employer": _pick(rng, EMPLOYERS),
        "position": _pick(rng, POSITIONS),
        "salary": f"${int(rng.integers(24, 121))},000",
        "start_date": _date(rng, 2010, 2025),
        "contract_term": _pick(rng, TERMS),
        "signature_date": _date(rng, 2010, 2025),
    }


def generate_profiles(per_domain: int, seed: int, prefix: str = "p",
                      exclude_names: frozenset[str] = frozenset(),
                      exclude_cues: frozenset[int] = frozenset()) -> pd.DataFrame:
    """`per_domain` profiles of each domain; names are unique across the whole set.

    Columns: profile_id, domain, cue (identicon code), then every field of both domains (a field
    that a domain lacks is null). `prefix` and `exclude_names` let other stages draw disjoint
    *public* profiles from the same pools, with names and identity cues no private profile has.
    """
    rng = np.random.default_rng([seed, 0x1CB])
    n = 2 * per_domain
    all_names = [f"{f} {l}" for f in FIRST for l in LAST if f"{f} {l}" not in exclude_names]
    if n > len(all_names):
        raise ValueError(f"profiles: {n} requested but only {len(all_names)} distinct names exist")
    names = [all_names[i] for i in rng.choice(len(all_names), size=n, replace=False)]
    cues = _identicon_codes(rng, n, exclude_cues)
    columns = ["profile_id", "domain", "cue"] + list(dict.fromkeys(FIELDS["medical"] + FIELDS["labor"]))
    rows = []
    for i in range(n):
        domain = DOMAINS[i % 2]
        values = (_medical if domain == "medical" else _labor)(rng, names[i])
        rows.append({"profile_id": f"{prefix}{i:05d}", "domain": domain, "cue": cues[i], **values})
    return pd.DataFrame(rows, columns=columns)


def _identicon_codes(rng: np.random.Generator, n: int, exclude: frozenset[int] = frozenset()) -> list[int]:
    """Distinct 19-bit identicon codes: 15 bits of a mirrored 5x5 pattern and 4 bits of hue."""
    codes: list[int] = []
    seen: set[int] = set(exclude)
    while len(codes) < n:
        c = int(rng.integers(0, 1 << 19))
        pattern = c & 0x7FFF
        if c in seen or bin(pattern).count("1") < 5 or bin(pattern).count("1") > 11:
            continue
        seen.add(c)
        codes.append(c)
    return codes
