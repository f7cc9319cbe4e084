"""A synthetic named-entity corpus in CoNLL-2003 format, generated deterministically.

Sentences are built from clause templates with entity slots (PER, ORG, LOC, MISC).
Training and evaluation use disjoint clause templates and disjoint name lists, so the
evaluation score measures generalisation to unseen contexts and names. Difficulty
comes from what real NER finds hard: organisations named after people and places
("Bank of Lima", "Keller Motors"), nationalities (MISC) beside countries (LOC),
lower-case and upper-case sentences, and entities next to each other.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from quantsweep.files import atomic_write_text

GENERATOR_VERSION = 1
SPLITS = {"train": 3000, "validation": 600, "test": 600}
LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")

FIRST_NAMES = [
    "Anna",
    "Peter",
    "Maria",
    "John",
    "Lena",
    "Omar",
    "Yuki",
    "Carlos",
    "Fatima",
    "Ivan",
    "Sofia",
    "David",
    "Amara",
    "Lars",
    "Mei",
    "Pedro",
    "Nadia",
    "Tomas",
    "Elena",
    "Hassan",
    "Grace",
    "Kenji",
    "Olga",
    "Samuel",
    "Ines",
    "Marco",
    "Aisha",
    "Henrik",
    "Lucia",
    "Ahmed",
    "Clara",
    "Viktor",
    "Rosa",
    "Daniel",
    "Hana",
    "Felix",
    "Leila",
    "Jonas",
    "Priya",
    "Mateo",
    "Sara",
    "Andrei",
    "Noor",
    "Paul",
    "Chloe",
    "Emil",
    "Zara",
    "Rafael",
    "Irene",
    "Oskar",
    "Layla",
    "Hugo",
    "Mira",
    "Bruno",
    "Alma",
    "Tariq",
    "Ida",
]
LAST_NAMES = [
    "Keller",
    "Okafor",
    "Lindqvist",
    "Moreau",
    "Tanaka",
    "Silva",
    "Novak",
    "Haddad",
    "Becker",
    "Rossi",
    "Kowalski",
    "Jensen",
    "Ortega",
    "Petrov",
    "Schmidt",
    "Nakamura",
    "Costa",
    "Dubois",
    "Fischer",
    "Nilsson",
    "Mendes",
    "Horvat",
    "Aziz",
    "Bauer",
    "Ricci",
    "Wagner",
    "Castro",
    "Yilmaz",
    "Larsen",
    "Vargas",
    "Meyer",
    "Fontaine",
    "Sato",
    "Duarte",
    "Kovacs",
    "Berg",
    "Hoffmann",
    "Romero",
    "Ivanova",
    "Lund",
    "Marin",
    "Adeyemi",
    "Suzuki",
    "Weber",
    "Esposito",
    "Eriksen",
    "Navarro",
    "Popescu",
    "Hansen",
    "Ferrari",
    "Kaya",
    "Vogel",
    "Santos",
    "Olsen",
    "Richter",
    "Moretti",
    "Sandberg",
    "Quinn",
    "Barros",
    "Falk",
]
CITIES = [
    "Lima",
    "Oslo",
    "Berlin",
    "Nairobi",
    "Osaka",
    "Lisbon",
    "Denver",
    "Krakow",
    "Tunis",
    "Perth",
    "Bergen",
    "Quito",
    "Leeds",
    "Porto",
    "Hanoi",
    "Zagreb",
    "Austin",
    "Dakar",
    "Malmo",
    "Seville",
    "Tbilisi",
    "Cork",
    "Adelaide",
    "Valencia",
    "Graz",
    "Bilbao",
    "Accra",
    "Turin",
    "Gdansk",
    "Halifax",
    "Bremen",
    "Kyoto",
    "Lyon",
    "Manila",
    "Riga",
    "Toledo",
    "Durban",
    "Utrecht",
    "Geneva",
    "Tampa",
    "Aarhus",
    "Naples",
    "Leipzig",
    "Calgary",
    "Medellin",
    "Bruges",
    "Minsk",
    "Sapporo",
]
COUNTRIES = [
    "Peru",
    "Norway",
    "Kenya",
    "Japan",
    "Portugal",
    "Croatia",
    "Senegal",
    "Sweden",
    "Spain",
    "Georgia",
    "Ireland",
    "Australia",
    "Ghana",
    "Italy",
    "Poland",
    "Canada",
    "Germany",
    "France",
    "Vietnam",
    "Latvia",
    "Belarus",
    "Chile",
    "Austria",
    "Morocco",
    "Finland",
    "Egypt",
    "Mexico",
    "Iceland",
    "Nepal",
    "Brazil",
]
NATIONALITIES = [
    "Peruvian",
    "Norwegian",
    "Kenyan",
    "Japanese",
    "Portuguese",
    "Croatian",
    "Senegalese",
    "Swedish",
    "Spanish",
    "Georgian",
    "Irish",
    "Australian",
    "Ghanaian",
    "Italian",
    "Polish",
    "Canadian",
    "German",
    "French",
    "Vietnamese",
    "Latvian",
    "Chilean",
    "Austrian",
    "Moroccan",
    "Finnish",
    "Egyptian",
]
ORG_SUFFIXES = (
    "Motors",
    "Holdings",
    "Group",
    "Industries",
    "Airlines",
    "Labs",
    "Partners",
    "Bank",
    "Energy",
    "Media",
)
ORG_WORDS = (
    "Northern",
    "United",
    "Global",
    "Pacific",
    "Atlas",
    "Summit",
    "Vertex",
    "Harbor",
    "Crown",
    "Nova",
    "Delta",
    "Apex",
)
EVENTS = ("Open", "Marathon", "Film Festival", "Grand Prix", "Cup", "Games", "Jazz Festival", "Book Fair")

TRAIN_CLAUSES = (
    "{PER} said on Tuesday that {ORG} would cut jobs in {LOC} .",
    "{PER} , a spokesman for {ORG} , declined to comment .",
    "shares in {ORG} rose 3 percent in {LOC} trading .",
    "{PER} won the {MISC} after beating {PER} in the final .",
    "the {MISC} minister met {PER} in {LOC} on Monday .",
    "{ORG} agreed to buy a stake in {ORG} for 40 million dollars .",
    "police in {LOC} arrested two men , {PER} told reporters .",
    "{PER} scored twice as {ORG} beat {ORG} 2-1 .",
    "floods hit northern {LOC} , officials said .",
    "{ORG} reported a loss of 12 million euros for the quarter .",
    "the talks in {LOC} ended without agreement .",
    "{PER} will lead the {MISC} delegation to {LOC} next week .",
    "a court in {LOC} fined {ORG} for breaking competition rules .",
    "{PER} joined {ORG} from {ORG} last year .",
    "prices fell sharply on Friday .",
    "{MISC} fans gathered outside the stadium in {LOC} .",
    "{PER} of {LOC} finished third in the {MISC} .",
    "the {MISC} government denied the report .",
    "analysts expect {ORG} to raise its forecast .",
    "{PER} told a news conference in {LOC} that the plan would work .",
    "{ORG} said it would open a new plant near {LOC} .",
    "the weather was cold and the roads were closed .",
    "{PER} and {PER} signed the agreement in {LOC} .",
    "the {MISC} team arrived in {LOC} on Sunday .",
)
EVAL_CLAUSES = (
    "according to {PER} , {ORG} plans to expand into {LOC} .",
    "{ORG} chief executive {PER} resigned after the vote .",
    "in {LOC} , {PER} opened the {MISC} with a short speech .",
    "the deal values {ORG} at about 2 billion dollars , {PER} estimated .",
    "{PER} , who coaches {ORG} , praised the {MISC} squad .",
    "troops withdrew from the border between {LOC} and {LOC} .",
    "investors sold {ORG} shares after the warning .",
    "{MISC} exports to {LOC} doubled this year .",
    "no one was hurt in the fire , a witness said .",
    "{PER} visited {LOC} and {LOC} before returning home .",
    "a {MISC} court cleared {PER} of all charges .",
    "{ORG} and {ORG} will merge their {LOC} operations .",
)

POS = {
    "said": "VBD",
    "would": "MD",
    "will": "MD",
    "cut": "VB",
    "in": "IN",
    "on": "IN",
    "a": "DT",
    "the": "DT",
    "for": "IN",
    "to": "TO",
    "of": "IN",
    "from": "IN",
    "and": "CC",
    "after": "IN",
    "as": "IN",
    "that": "IN",
    "with": "IN",
    "about": "IN",
    "between": "IN",
    "into": "IN",
    "near": "IN",
    "outside": "IN",
    "before": "IN",
    ",": ",",
    ".": ".",
    "who": "WP",
    "its": "PRP$",
    "it": "PRP",
    "their": "PRP$",
    "no": "DT",
    "all": "DT",
}


@dataclass(frozen=True)
class Sentence:
    tokens: tuple[str, ...]
    tags: tuple[str, ...]


def _split_pool(items: tuple[str, ...] | list[str], part: str) -> list[str]:
    """Every fourth name goes to evaluation, the rest to training: the two never share one."""
    return [x for i, x in enumerate(items) if (i % 4 == 3) == (part == "eval")]


class _Names:
    def __init__(self, part: str) -> None:
        self.first = _split_pool(FIRST_NAMES, part)
        self.last = _split_pool(LAST_NAMES, part)
        self.cities = _split_pool(CITIES, part)
        self.countries = _split_pool(COUNTRIES, part)
        self.nationalities = _split_pool(NATIONALITIES, part)
        self.org_words = _split_pool(ORG_WORDS, part)
        # acronyms of a length the other part never uses, so no acronym is shared
        self.acronym_lengths = (2, 3) if part == "train" else (4,)

    def person(self, rng: random.Random) -> list[str]:
        form = rng.random()
        if form < 0.5:
            return [rng.choice(self.first), rng.choice(self.last)]
        if form < 0.8:
            return [rng.choice(self.last)]
        return [rng.choice(self.first), rng.choice(self.first)[0] + ".", rng.choice(self.last)]

    def organisation(self, rng: random.Random) -> list[str]:
        form = rng.randrange(6)
        if form == 0:
            return [rng.choice(self.last), rng.choice(ORG_SUFFIXES)]
        if form == 1:
            return ["Bank", "of", rng.choice(self.cities + self.countries)]
        if form == 2:
            return [rng.choice(self.cities), rng.choice(("United", "Rovers", "City", "Athletic"))]
        if form == 3:
            return [rng.choice(self.org_words), rng.choice(ORG_SUFFIXES)]
        if form == 4:
            return [
                "".join(rng.choice("ABCDEFGHKLMNPRSTVW") for _ in range(rng.choice(self.acronym_lengths)))
            ]
        return ["University", "of", rng.choice(self.cities)]

    def location(self, rng: random.Random) -> list[str]:
        form = rng.random()
        if form < 0.5:
            return [rng.choice(self.cities)]
        if form < 0.85:
            return [rng.choice(self.countries)]
        return [rng.choice(("North", "South", "West", "East")), rng.choice(self.countries)]

    def misc(self, rng: random.Random) -> list[str]:
        form = rng.random()
        if form < 0.6:
            return [rng.choice(self.nationalities)]
        if form < 0.85:
            return [rng.choice(self.cities), *rng.choice(EVENTS).split()]
        return [rng.choice(self.nationalities), *rng.choice(("Cup", "Open", "Championship")).split()]


def _fill(template: str, names: _Names, rng: random.Random) -> tuple[list[str], list[str]]:
    tokens: list[str] = []
    tags: list[str] = []
    makers = {
        "{PER}": names.person,
        "{ORG}": names.organisation,
        "{LOC}": names.location,
        "{MISC}": names.misc,
    }
    for word in template.split():
        if word in makers:
            entity = makers[word](rng)
            kind = word.strip("{}")
            tokens.extend(entity)
            tags.extend([f"B-{kind}"] + [f"I-{kind}"] * (len(entity) - 1))
        else:
            tokens.append(word)
            tags.append("O")
    return tokens, tags


def _casing(tokens: list[str], rng: random.Random) -> list[str]:
    roll = rng.random()
    if roll < 0.12:
        return [t.lower() for t in tokens]
    if roll < 0.2:
        return [t.upper() for t in tokens]
    return [tokens[0][:1].upper() + tokens[0][1:], *tokens[1:]]


def generate_split(split: str, count: int, seed: int = 0) -> list[Sentence]:
    part = "train" if split == "train" else "eval"
    clauses = TRAIN_CLAUSES if part == "train" else EVAL_CLAUSES
    names = _Names(part)
    rng = random.Random(f"{seed}-{split}")
    sentences: list[Sentence] = []
    while len(sentences) < count:
        tokens, tags = _fill(rng.choice(clauses), names, rng)
        if rng.random() < 0.25:  # two clauses joined: up to four entities
            more_tokens, more_tags = _fill(rng.choice(clauses), names, rng)
            tokens = [*tokens[:-1], rng.choice((",", ";", "and")), *more_tokens]
            tags = [*tags[:-1], "O", *more_tags]
        if sum(t.startswith("B-") for t in tags) > 4:
            continue
        sentences.append(Sentence(tuple(_casing(tokens, rng)), tuple(tags)))
    return sentences


def _pos(token: str, tag: str) -> tuple[str, str]:
    if tag != "O":
        pos = "JJ" if tag.endswith("MISC") and token.lower().endswith(("an", "ish", "ese", "ch")) else "NNP"
        return pos, ("B-NP" if tag.startswith("B-") else "I-NP")
    pos = POS.get(
        token.lower(), "CD" if token[:1].isdigit() else "VBD" if token.lower().endswith("ed") else "NN"
    )
    chunk = (
        "O"
        if pos in (",", ".")
        else "B-VP"
        if pos.startswith(("VB", "MD"))
        else "B-PP"
        if pos == "IN"
        else "B-NP"
    )
    return pos, chunk


def conll_lines(sentences: list[Sentence]) -> Iterator[str]:
    yield "-DOCSTART- -X- -X- O"
    yield ""
    for sentence in sentences:
        for token, tag in zip(sentence.tokens, sentence.tags, strict=True):
            pos, chunk = _pos(token, tag)
            yield f"{token} {pos} {chunk} {tag}"
        yield ""


def corpus_key(seed: int = 0) -> str:
    spec = f"v{GENERATOR_VERSION}-seed{seed}-" + ",".join(f"{k}={v}" for k, v in SPLITS.items())
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


def write_corpus(folder: Path, seed: int = 0) -> Path:
    """Write ``train.txt``, ``validation.txt`` and ``test.txt`` unless this version is already there."""
    marker = folder / "CORPUS_KEY"
    key = corpus_key(seed)
    if (
        marker.is_file()
        and marker.read_text().strip() == key
        and all((folder / f"{s}.txt").is_file() for s in SPLITS)
    ):
        return folder
    for split, count in SPLITS.items():
        atomic_write_text(
            folder / f"{split}.txt", "\n".join(conll_lines(generate_split(split, count, seed))) + "\n"
        )
    atomic_write_text(marker, key + "\n")
    return folder
