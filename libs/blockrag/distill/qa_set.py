"""A synthetic RAG question-answering set for the block-attention fidelity benchmark.

Each item asks one short question about a fictional entity (a town, company, ship, musician or
festival) and gives five passages of 2-4 sentences, one of which holds the answer. Of the other
four, two to four (three on average) describe entities of the same kind with other values of the
asked attribute, so the model has to read the right passage rather than copy the first plausible
value. Everything is invented, so
a small chat model cannot answer from memory, and everything is built by code from a seed: no
network, no data files. The same (n, seed, split) always gives the same items.

How the held-out split is held out: proper nouns (entity names, people's surnames, rivers and
towns used as values) come from a syllable generator, and every generated name belongs to
exactly one split, decided by the CRC32 of its lower-cased stem. A split only ever draws names of
its own, so no "dev" item names an entity, person or place of a "heldout" item, and tuning on dev
never sees a held-out name. The two splits also draw from separate random streams. The word pools
(exports, colours, instruments, months, ...) are shared: they are the vocabulary of the answers,
not the facts.

`is_correct` counts an answer right iff some accepted answer appears in the generated text as
whole words and none of the distractor values does, so listing every value never scores.
"""

from __future__ import annotations

import random
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass

SPLITS = ("dev", "heldout")
N_PASSAGES = 5
MIN_WORDS = 50  # passages shorter than this get another neutral sentence
# how often a later clause names the entity again instead of "it" / "the town": often enough that
# a 135M model can tie most facts to the name, rarely enough that some need the reference resolved
NAME_AGAIN = 0.8

Value = tuple[str, ...]  # accepted strings of one value, canonical (the form in the text) first


@dataclass(frozen=True)
class QAItem:
    """One question over five passages."""

    id: str                         # stable, e.g. "heldout-0042"
    question: str
    passages: tuple[str, ...]       # 5 passages, the answer passage at a random position
    answer_passage: int             # index into passages
    answers: tuple[str, ...]        # accepted answer strings, canonical first
    distractor_answers: tuple[str, ...]  # the same attribute's values in the other passages
    template: str                   # name of the question template, "<kind>.<attribute>"
    entities: tuple[str, ...] = ()  # the entity each passage describes, parallel to passages


# --- names ---------------------------------------------------------------------------------

# plain syllables: a 135M model copies "Tenamoor" far more reliably than "Krenvuvthorpe"
_ONSETS = ("b", "br", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w")
_VOWELS = ("a", "e", "i", "o", "u")
_CODAS = ("", "", "l", "n", "r", "s")
_PLACE_SUFFIXES = ("moor", "wick", "holt", "ford", "stead", "mere", "by", "dale", "thorpe")
_FIRST_NAMES = ("Ilse", "Tomas", "Maren", "Oskar", "Greta", "Anselm", "Petra", "Emil", "Hedda",
                "Jonas", "Liv", "Matthias", "Runa", "Sven", "Tilde", "Viktor", "Agnes", "Bruno",
                "Clara", "Dario", "Elke", "Felix", "Ida", "Lukas")
_CORP_SUFFIXES = ("Works", "Company", "Brothers", "Manufacturing", "Industries")
_FESTIVAL_THEMES = ("Lantern", "Harvest", "Kite", "Bell", "Candle", "Mask", "Ribbon", "Drum")


def _split_of(stem: str) -> str:
    """The one split a generated name belongs to; a fixed function, so the splits never share."""
    return SPLITS[zlib.crc32(stem.lower().encode()) & 1]


# --- value pools (accepted strings, canonical first) ----------------------------------------

def _plural_pool(*words: str) -> tuple[Value, ...]:
    # a model may answer "clock" for "clocks": both count, and both count against as distractors
    return tuple((w, w[:-1]) for w in words)


_EXPORTS: tuple[Value, ...] = tuple((w,) for w in (
    "wool", "timber", "salt", "copper", "barley", "cheese", "honey", "slate", "linen", "flax",
    "tin", "cider", "leather", "iron", "marble", "rye"))
_PRODUCTS = _plural_pool("clocks", "bicycles", "typewriters", "lamps", "telescopes", "umbrellas",
                         "compasses", "barometers", "stoves", "tiles", "buttons", "kettles")
_COLOURS: tuple[Value, ...] = tuple((w,) for w in (
    "red", "blue", "green", "yellow", "white", "black", "purple", "grey", "brown", "crimson",
    "violet", "scarlet"))
_INSTRUMENTS: tuple[Value, ...] = tuple((w,) for w in (
    "violin", "cello", "oboe", "flute", "clarinet", "harp", "trumpet", "bassoon", "accordion",
    "piano", "organ", "viola", "guitar", "mandolin", "trombone", "lute"))
# no "May": as a word it turns up in answers that do not name a month
_MONTHS: tuple[Value, ...] = tuple((m,) for m in (
    "January", "February", "March", "April", "June", "July", "August", "September", "October",
    "November", "December"))
_DISHES: tuple[Value, ...] = tuple((f"{a} {b}", b) for a, b in (
    ("roast", "chestnuts"), ("plum", "dumplings"), ("smoked", "eel"), ("fried", "trout"),
    ("apple", "pancakes"), ("pickled", "herring"), ("lamb", "stew"), ("pear", "tarts"),
    ("cabbage", "rolls"), ("sweet", "buns"), ("potato", "soup"), ("almond", "biscuits")))


# a generated name that is also an answer word ("Viola", "Linen") would blur whole-word matching
_POOL_WORDS = frozenset(w.lower() for pool in (_EXPORTS, _PRODUCTS, _COLOURS, _INSTRUMENTS, _MONTHS,
                                               _DISHES) for v in pool for s in v for w in s.split())


def _place_stem(place: str) -> str:
    return next(place[: -len(x)] for x in _PLACE_SUFFIXES if place.endswith(x))


class _Draw:
    """Draws the values of one item, never the same name, year or word twice within it."""

    def __init__(self, rng: random.Random, split: str):
        self.rng, self.split = rng, split
        self.used: set[str] = set()

    def _fresh(self, make: Callable[[], str], stem: Callable[[str], str] | None = None) -> str:
        """A string from make() not used yet in this item; a name (stem given) of this split."""
        while True:
            s = make()
            if s.lower() in self.used or s.lower() in _POOL_WORDS:
                continue
            if stem is None or _split_of(stem(s)) == self.split:
                self.used.add(s.lower())
                return s

    def _syllables(self) -> str:
        r = self.rng
        return "".join(r.choice(_ONSETS) + r.choice(_VOWELS) + r.choice(_CODAS) for _ in range(2))

    def stem(self) -> str:
        return self._fresh(lambda: self._syllables().capitalize(), stem=lambda s: s)

    def place(self) -> Value:
        # hashed on the stem: "Bralmoor" and "Bralwick" always fall in the same split
        return (self._fresh(lambda: self._syllables().capitalize() + self.rng.choice(_PLACE_SUFFIXES),
                            stem=_place_stem),)

    def person(self) -> Value:
        surname = self.stem()
        return (f"{self.rng.choice(_FIRST_NAMES)} {surname}", surname)

    def year(self, lo: int, hi: int) -> Value:
        return (self._fresh(lambda: str(self.rng.randint(lo, hi))),)

    def pick(self, pool: tuple[Value, ...]) -> Value:
        free = [v for v in pool if not any(s.lower() in self.used for s in v)]
        value = self.rng.choice(free)
        self.used.update(s.lower() for s in value)
        return value


# --- entity kinds ----------------------------------------------------------------------------
# Clause templates: {S} the subject, {P} its possessive, {v} the value. The first clause of a
# passage names the entity; later ones name it again or refer back ("it", "the town", a surname).

@dataclass(frozen=True)
class _Attr:
    key: str
    question: str                   # with {n}, the entity's name
    clauses: tuple[str, ...]
    draw: Callable[[_Draw], Value]


@dataclass(frozen=True)
class _Kind:
    key: str
    name: Callable[[_Draw], tuple[str, str]]  # (name, short name used in later references)
    first: tuple[tuple[str, str], ...]        # (subject, possessive) of the first mention
    later: tuple[tuple[str, str], ...]
    attrs: tuple[_Attr, ...]
    fillers: tuple[str, ...]                  # neutral clauses with no values in them


_TOWN = _Kind(
    "town", lambda d: (d.place()[0],) * 2,
    (("{n}", "{n}'s"), ("the town of {n}", "{n}'s")), (("it", "its"), ("the town", "the town's")),
    (_Attr("founded", "In which year was the town of {n} founded?", (
        "{S} was founded in {v}, when the valley was still mostly forest",
        "records show that {S} was founded in {v}",
        "{S} dates from {v}, the year its first houses were built"), lambda d: d.year(1150, 1899)),
     _Attr("founder", "Who founded the town of {n}?", (
         "{S} was founded by {v}, a former miller from the coast",
         "{P} founder was {v}, whose statue stands by the well",
         "the settlement that became {S} was started by {v}"), lambda d: d.person()),
     _Attr("river", "On which river does the town of {n} stand?", (
         "{S} lies on the river {v}", "{S} stands on the banks of the {v}",
         "{P} old mill is still driven by the waters of the {v}"), lambda d: d.place()),
     _Attr("export", "What is the main export of {n}?", (
         "{P} main export is {v}", "{S} earns most of its income by exporting {v}",
         "most of the {v} sold in the region comes from {S}, its main export"),
         lambda d: d.pick(_EXPORTS))),
    ("{S} has a small market square and a stone bridge",
     "visitors come to {S} for its quiet streets and old houses",
     "a weekly market is held in the square of {S}",
     "{S} keeps a small museum of local history"))

_COMPANY = _Kind(
    "company", lambda d: (f"{d.stem()} {d.rng.choice(_CORP_SUFFIXES)}",) * 2,
    (("{n}", "{n}'s"),), (("it", "its"), ("the company", "the company's"), ("the firm", "the firm's")),
    (_Attr("founded", "In which year was {n} founded?", (
        "{S} was established in {v}", "{S} has been in business since {v}",
        "{S} opened its first workshop in {v}"), lambda d: d.year(1800, 1990)),
     _Attr("founder", "Who founded {n}?", (
         "{S} was founded by {v}", "{P} founder, {v}, started it with borrowed money",
         "{v} started {S} in a rented shed"), lambda d: d.person()),
     _Attr("headquarters", "In which town is {n} headquartered?", (
         "{S} has its headquarters in {v}", "{P} head office is in the town of {v}",
         "{S} is based in {v}"), lambda d: d.place()),
     _Attr("product", "What does {n} make?", (
         "{S} makes {v}", "{S} is known for the {v} it produces",
         "{P} factory turns out {v} by the thousand"), lambda d: d.pick(_PRODUCTS))),
    ("{S} employs a few hundred people", "{S} remains a family business to this day",
     "{S} sells most of its goods abroad", "{S} moved into a larger building after the war"))

_SHIP = _Kind(
    "ship", lambda d: (d.stem(),) * 2,
    (("the {n}", "the {n}'s"), ("the ship {n}", "the {n}'s")),
    (("it", "its"), ("the ship", "the ship's"), ("the vessel", "the vessel's")),
    (_Attr("captain", "Who is the captain of the ship {n}?", (
        "{S} is captained by {v}", "{P} captain is {v}",
        "{v} is the captain of {S}"), lambda d: d.person()),
     _Attr("home_port", "What is the home port of the ship {n}?", (
         "{P} home port is {v}", "{S} sails out of its home port, {v}",
         "{S} is registered in the port of {v}"), lambda d: d.place()),
     _Attr("launched", "In which year was the ship {n} launched?", (
         "{S} was launched in {v}", "{S} first put to sea in {v}",
         "{S} was built and launched in {v}"), lambda d: d.year(1820, 1990)),
     _Attr("hull", "What colour is the hull of the ship {n}?", (
         "{P} hull is painted {v}", "{S} has a {v} hull",
         "{S} is easy to spot by its {v} hull"), lambda d: d.pick(_COLOURS))),
    ("{S} carries a crew of about twenty", "{S} is one of the oldest ships still in service",
     "{S} spends the winter months in dry dock", "{S} was refitted with a new engine last year"))

_MUSICIAN = _Kind(
    "musician", lambda d: d.person(),
    (("{n}", "{n}'s"),), (("{short}", "{short}'s"), ("the musician", "the musician's")),
    (_Attr("instrument", "Which instrument does {n} play?", (
        "{S} plays the {v}", "{S} is known for playing the {v}",
        "{S} performs on the {v}"), lambda d: d.pick(_INSTRUMENTS)),
     _Attr("birthplace", "In which town was {n} born?", (
         "{S} was born in {v}", "{S} was born and raised in {v}",
         "{P} birthplace is the town of {v}"), lambda d: d.place()),
     _Attr("teacher", "Who was the teacher of {n}?", (
         "{S} studied with {v}", "{P} teacher was {v}",
         "{S} was taught by {v}"), lambda d: d.person()),
     _Attr("debut", "In which year did {n} first perform in public?", (
         "{S} first performed in public in {v}", "{P} first public concert was in {v}",
         "{S} made a public debut in {v}"), lambda d: d.year(1900, 1995))),
    ("{S} tours widely but records rarely", "critics praise {S} for a warm and patient sound",
     "{S} also teaches a small class of students", "{S} has played in most of the large halls"))

_FESTIVAL = _Kind(
    "festival", lambda d: (f"{d.stem()} {d.rng.choice(_FESTIVAL_THEMES)} Festival",) * 2,
    (("the {n}", "the {n}'s"),), (("it", "its"), ("the festival", "the festival's")),
    (_Attr("month", "In which month is the {n} held?", (
        "{S} is held every year in {v}", "{S} takes place each {v}",
        "every {v}, {S} fills the streets"), lambda d: d.pick(_MONTHS)),
     _Attr("town", "In which town is the {n} held?", (
         "{S} is held in the town of {v}", "{S} takes place in {v}",
         "the people of {v} host {S}"), lambda d: d.place()),
     _Attr("dish", "Which dish is the {n} famous for?", (
         "{S} is famous for its {v}", "the dish most people link with {S} is {v}",
         "{P} traditional dish is {v}"), lambda d: d.pick(_DISHES)),
     _Attr("banner", "What colour is the banner of the {n}?", (
         "{P} banner is {v}", "{S} flies a {v} banner",
         "the banners of {S} are {v}"), lambda d: d.pick(_COLOURS))),
    ("{S} draws visitors from across the region", "{S} ends with a long procession at dusk",
     "{S} lasts three days", "{S} began as a small gathering of farmers"))

_KINDS = (_TOWN, _COMPANY, _SHIP, _MUSICIAN, _FESTIVAL)
TEMPLATES = tuple(f"{k.key}.{a.key}" for k in _KINDS for a in k.attrs)


# --- passages --------------------------------------------------------------------------------

def _possessive(name: str) -> str:
    return name + ("'" if name.endswith("s") else "'s")


def _render(template: str, subject: tuple[str, str], value: str, name: str, short: str,
            lower_start: bool) -> str:
    """One clause; lower_start when it continues a sentence (templates start with no name)."""
    if lower_start and not template.startswith("{"):
        template = template[0].lower() + template[1:]
    subj, poss = (s.replace("{n}'s", _possessive(name)).replace("{short}'s", _possessive(short))
                  .replace("{n}", name).replace("{short}", short) for s in subject)
    return template.replace("{S}", subj).replace("{P}", poss).replace("{v}", value)


def _join(clauses: list[str]) -> str:
    """Clauses into one sentence: "A." / "A, and b." / "A; b, and c."."""
    text = clauses[0] if len(clauses) == 1 else "; ".join(clauses[:-1]) + ", and " + clauses[-1]
    return text[0].upper() + text[1:] + "."


def _sentence_bounds(rng: random.Random, n_clauses: int) -> list[tuple[int, int]]:
    """A random cut of n clauses into 2-4 sentences of at most 3 clauses each."""
    n_sent = rng.randint(max(2, -(-n_clauses // 3)), min(4, n_clauses))
    while True:
        cuts = [0, *sorted(rng.sample(range(1, n_clauses), n_sent - 1)), n_clauses]
        if all(b - a <= 3 for a, b in zip(cuts, cuts[1:])):
            return list(zip(cuts, cuts[1:]))


def _subject(rng: random.Random, kind: _Kind, clause: int) -> tuple[str, str]:
    """The entity's name in the first clause and often later; else a back reference."""
    if clause == 0 or rng.random() < NAME_AGAIN:
        return rng.choice(kind.first)
    return rng.choice(kind.later)


def _passage(rng: random.Random, kind: _Kind, name: str, short: str,
             values: dict[str, Value]) -> str:
    """2-4 sentences naming the entity up front, attributes and fillers in random order."""
    fillers = rng.sample(kind.fillers, len(kind.fillers))
    slots = [(rng.choice(a.clauses), values[a.key][0]) for a in kind.attrs]
    rng.shuffle(slots)
    while True:
        sentences = [_join([_render(slots[i][0], _subject(rng, kind, i), slots[i][1], name, short,
                                    lower_start=i > a)
                            for i in range(a, b)])
                     for a, b in _sentence_bounds(rng, len(slots))]
        text = " ".join(sentences)
        if len(text.split()) >= MIN_WORDS or not fillers:
            return text
        slots.insert(rng.randint(1, len(slots)), (fillers.pop(), ""))


# --- items -----------------------------------------------------------------------------------

def _norm(text: str) -> str:
    """Lower case, punctuation to spaces, single spaces."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())


def _has(normed_text: str, phrase: str) -> bool:
    """Whether phrase occurs in the (normalised) text as whole words: "1843" not in "18430"."""
    p = _norm(phrase)
    return bool(p) and f" {p} " in f" {normed_text} "


def _make_item(rng: random.Random, split: str, item_id: str) -> QAItem | None:
    """One item, or None when a rare clash (a value showing up in another passage) spoils it."""
    d = _Draw(rng, split)
    kind = rng.choice(_KINDS)
    attr = rng.choice(kind.attrs)
    # mostly the same kind, so every distractor passage offers a value for the same question
    n_other = rng.choice((0, 1, 1, 2))
    others = [k for k in _KINDS if k is not kind]
    kinds = [kind] * (N_PASSAGES - n_other) + [rng.choice(others) for _ in range(n_other)]
    described = []
    for k in kinds:
        name, short = k.name(d)
        values = {a.key: a.draw(d) for a in k.attrs}
        described.append((k, name, short, values))
    target, rest = described[0], described[1:]
    rng.shuffle(rest)
    pos = rng.randrange(N_PASSAGES)
    described = rest[:pos] + [target] + rest[pos:]
    passages = tuple(_passage(rng, k, n, s, v) for k, n, s, v in described)
    answers = target[3][attr.key]
    distractors = tuple(s for k, _, _, v in rest if k is kind for s in v[attr.key])
    question = attr.question.replace("{n}", target[1])
    if not _consistent(question, passages, pos, answers, distractors):
        return None
    return QAItem(item_id, question, passages, pos, answers,
                  distractors, f"{kind.key}.{attr.key}", tuple(n for _, n, _, _ in described))


def _consistent(question: str, passages: tuple[str, ...], pos: int, answers: Value,
                distractors: Value) -> bool:
    """The answer is in its passage only, answer and distractor strings never overlap, and the
    question names neither (an answer echoing the question must not count for or against)."""
    if any(_has(_norm(question), x) for x in answers + distractors):
        return False
    normed = [_norm(p) for p in passages]
    if not _has(normed[pos], answers[0]):
        return False
    if any(_has(t, a) for i, t in enumerate(normed) if i != pos for a in answers):
        return False
    return not any(_has(_norm(a), x) or _has(_norm(x), a) for a in answers for x in distractors)


def build_qa_set(n: int = 300, seed: int = 0, split: str = "heldout") -> list[QAItem]:
    """n distinct questions of one split, deterministic in (n, seed, split).

    Items come one after another from one random stream, so a smaller n gives a prefix of a
    larger one.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    # a string seed is hashed with SHA-512 by random, independent of PYTHONHASHSEED
    rng = random.Random(f"blockrag-qa/{split}/{seed}")
    items: list[QAItem] = []
    seen: set[str] = set()
    while len(items) < n:
        item = _make_item(rng, split, f"{split}-{len(items):04d}")
        if item is not None and item.question not in seen:
            seen.add(item.question)
            items.append(item)
    return items


def is_correct(generated: str, item: QAItem) -> bool:
    """Some accepted answer appears as whole words and no distractor value does.

    Case, punctuation and spacing are ignored ("ANSELM KOVAR." matches "Anselm Kovar").
    """
    text = _norm(generated)
    return (any(_has(text, a) for a in item.answers)
            and not any(_has(text, x) for x in item.distractor_answers))
