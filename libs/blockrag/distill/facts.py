"""Fact questions: training prompts shaped like factual RAG, built by code, answered by the teacher.

Served questions are mostly short factual ones ("Who designed X?") over a handful of retrieved
passages, several of them about things like X with other values. The templated questions of
data.py come from the training text and draw long explanations; the teacher's answers to these
draw what factual questions draw, a value copied from the one passage that holds it, then the end
of the answer. Each pair is (passages, question) about invented entities, so the teacher must read
the passages (a 135M model knows nothing of them); its greedy answer under full attention is the
target, as for every question example, so no label is needed or used.

Kept apart from the fidelity set (qa_set.py), which measures the adapters: other kinds of entity,
attributes, value vocabularies, sentence and question templates, first names and name syllables,
three to six passages rather than five; and no generated name can be one the held-out split
could hold (`_Names.stem`). What the two share is the task's shape: one fact in one passage,
distractor values of the same attribute in the others.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from blockrag.distill.qa_set import _split_of

_FIRST_NAMES = ("Amara", "Bertil", "Corin", "Dagny", "Eamon", "Freya", "Gideon", "Halvard", "Inga",
                "Jorun", "Kasimir", "Leona", "Mirko", "Nadia", "Orla", "Pavel", "Quirin", "Rosalind",
                "Sabine", "Teodor", "Ulla", "Vera", "Wendel", "Yara")
# short and plain: a 135M teacher copies "Tamik" far more reliably than "Glaixjast"
_ONSETS = ("c", "ch", "d", "j", "k", "p", "sh", "t", "tr", "z", "y")
_VOWELS = ("a", "e", "i", "o", "u")
_CODAS = ("", "", "k", "m", "n")
_PLACE_SUFFIXES = ("burg", "haven", "port", "field", "ton", "gate", "cliff")
_MATERIALS = ("granite", "concrete", "brick", "oak", "steel", "sandstone", "limestone", "basalt")
_FIELDS = ("chemistry", "astronomy", "geology", "botany", "physics", "mathematics", "zoology",
           "linguistics", "medicine", "economics")
_LANGUAGES = ("Dutch", "Polish", "Welsh", "Basque", "Finnish", "Czech", "Danish", "Estonian",
              "Catalan", "Hungarian", "Icelandic", "Portuguese")
_PROGRAMMING = ("Rust", "Haskell", "Fortran", "Erlang", "Pascal", "Kotlin", "Scala", "Julia",
                "Perl", "Ruby", "Elixir", "OCaml")
_LICENCES = ("MIT", "Apache", "BSD", "GPL", "LGPL", "MPL", "ISC")
_SPECIALITIES = ("mushroom risotto", "onion tart", "fish pie", "beef broth", "rice pudding",
                 "walnut bread", "duck confit", "leek soup", "fig cake", "bean stew")
_TITLE_WORDS = ("Orchard", "Harbour", "Winter", "Glass", "River", "Silence", "Mirror", "Garden",
                "Shadow", "Meadow", "Tower", "Letter")
_TITLE_ADJECTIVES = ("Silent", "Hidden", "Last", "Narrow", "Patient", "Distant", "Broken", "Golden")


class _Names:
    """Names, years and words of one item, never the same twice within it."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[str] = set()

    def fresh(self, make: Callable[[], str]) -> str:
        while True:
            value = make()
            if value.lower() not in self.used:
                self.used.add(value.lower())
                return value

    def stem(self) -> str:
        """A made-up name, never one the fidelity set's held-out split could draw: that set hashes
        each of its names' stems into one split, so a stem hashed elsewhere is no held-out name
        (places cannot meet either: the two sets' place suffixes differ)."""
        r = self.rng
        while True:
            stem = "".join(r.choice(_ONSETS) + r.choice(_VOWELS) + r.choice(_CODAS) for _ in range(2)).capitalize()
            if _split_of(stem) != "heldout":
                return stem

    def person(self) -> str:
        return self.fresh(lambda: f"{self.rng.choice(_FIRST_NAMES)} {self.stem()}")

    def place(self) -> str:
        return self.fresh(lambda: self.stem() + self.rng.choice(_PLACE_SUFFIXES))

    def number(self, lo: int, hi: int) -> str:
        return self.fresh(lambda: str(self.rng.randint(lo, hi)))

    def pick(self, pool: tuple[str, ...]) -> str:
        return self.fresh(lambda: self.rng.choice(pool))


@dataclass(frozen=True)
class _Attribute:
    questions: tuple[str, ...]  # {n}: the entity's name
    clauses: tuple[str, ...]    # {s}: the subject (name or back reference), {v}: the value
    draw: Callable[[_Names], str]


@dataclass(frozen=True)
class _Kind:
    name: Callable[[_Names], str]
    references: tuple[str, ...]  # later mentions: "it", "the bridge"
    attributes: tuple[_Attribute, ...]
    fillers: tuple[str, ...]     # sentences with no value in them


_BRIDGE = _Kind(
    lambda d: d.fresh(lambda: f"the {d.stem()} Bridge"), ("it", "the bridge"),
    (_Attribute(("When was {n} completed?", "In what year was {n} finished?"),
                ("{s} was completed in {v}.", "Work on {s} ended in {v}."), lambda d: d.number(1700, 1985)),
     _Attribute(("Who designed {n}?", "Which engineer drew up the plans for {n}?"),
                ("{s} was designed by the engineer {v}.", "The plans for {s} were drawn up by {v}."),
                lambda d: d.person()),
     _Attribute(("How long is {n}?", "What is the length of {n} in metres?"),
                ("{s} is {v} metres long.", "{s} spans {v} metres from bank to bank."),
                lambda d: d.number(40, 990)),
     _Attribute(("What is {n} built from?", "Which material was {n} made of?"),
                ("{s} is built of {v}.", "{s} was made almost entirely of {v}."), lambda d: d.pick(_MATERIALS))),
    ("{s} carries a narrow road and a footpath.", "Traffic on {s} is light outside the summer.",
     "{s} was repaired after a flood.", "{s} appears on many old postcards."))

_SCIENTIST = _Kind(
    lambda d: d.person(), ("she", "the scientist"),
    (_Attribute(("Which field did {n} work in?", "What was the field of {n}?"),
                ("{s} worked in {v}.", "{s} spent a long career in {v}."), lambda d: d.pick(_FIELDS)),
     _Attribute(("In which year was {n} born?", "When was {n} born?"),
                ("{s} was born in {v}.", "The records give {v} as the year {s} was born."),
                lambda d: d.number(1820, 1975)),
     _Attribute(("In which city did {n} teach?", "Where did {n} hold a professorship?"),
                ("{s} taught at the university in {v}.", "{s} held a chair in {v} for many years."),
                lambda d: d.place()),
     _Attribute(("Who was the doctoral adviser of {n}?", "Under whom did {n} study?"),
                ("{s} wrote a thesis under {v}.", "The doctoral adviser of {s} was {v}."), lambda d: d.person())),
    ("{s} published widely.", "Students remember {s} as a careful teacher.",
     "{s} kept detailed notebooks.", "{s} rarely gave interviews."))

_BOOK = _Kind(
    lambda d: d.fresh(lambda: f'"The {d.rng.choice(_TITLE_ADJECTIVES)} {d.rng.choice(_TITLE_WORDS)}"'),
    ("it", "the novel"),
    (_Attribute(("Who wrote {n}?", "Who is the author of {n}?"),
                ("{s} was written by {v}.", "The author of {s} is {v}."), lambda d: d.person()),
     _Attribute(("When was {n} published?", "In which year did {n} first appear?"),
                ("{s} was published in {v}.", "{s} first appeared in print in {v}."), lambda d: d.number(1850, 2015)),
     _Attribute(("In which language was {n} written?", "What is the original language of {n}?"),
                ("{s} was written in {v}.", "The original text of {s} is in {v}."), lambda d: d.pick(_LANGUAGES)),
     _Attribute(("Where is {n} set?", "In which city does {n} take place?"),
                ("{s} is set in {v}.", "The story of {s} takes place in {v}."), lambda d: d.place())),
    ("{s} was translated into several languages.", "{s} sold slowly at first.",
     "Critics were divided about {s}.", "{s} has never been out of print."))

_MOUNTAIN = _Kind(
    lambda d: d.fresh(lambda: f"Mount {d.stem()}"), ("it", "the mountain"),
    (_Attribute(("How high is {n}?", "What is the height of {n} in metres?"),
                ("{s} rises to {v} metres.", "The summit of {s} stands {v} metres above the sea."),
                lambda d: d.number(1200, 4800)),
     _Attribute(("Who first climbed {n}?", "Who made the first ascent of {n}?"),
                ("{s} was first climbed by {v}.", "The first ascent of {s} was made by {v}."), lambda d: d.person()),
     _Attribute(("When was {n} first climbed?", "In what year was the first ascent of {n}?"),
                ("{s} was first climbed in {v}.", "Nobody reached the top of {s} before {v}."),
                lambda d: d.number(1786, 1960)),
     _Attribute(("Which town lies at the foot of {n}?", "What is the nearest town to {n}?"),
                ("The town of {v} lies at the foot of {s}.", "Walkers set out for {s} from {v}."),
                lambda d: d.place())),
    ("{s} is often covered in cloud.", "The paths up {s} are steep in places.",
     "{s} can be seen from far away.", "Snow stays on {s} until early summer."))

_RESTAURANT = _Kind(
    lambda d: d.fresh(lambda: f"the {d.stem()} Inn"), ("it", "the inn"),
    (_Attribute(("Who is the chef at {n}?", "Who runs the kitchen of {n}?"),
                ("The chef at {s} is {v}.", "The kitchen of {s} is run by {v}."), lambda d: d.person()),
     _Attribute(("What is {n} known for?", "Which dish should you order at {n}?"),
                ("{s} is known for its {v}.", "Guests of {s} come back for the {v}."), lambda d: d.pick(_SPECIALITIES)),
     _Attribute(("When did {n} open?", "In which year did {n} first open its doors?"),
                ("{s} opened in {v}.", "{s} first opened its doors in {v}."), lambda d: d.number(1890, 2020)),
     _Attribute(("In which town is {n}?", "Where can you find {n}?"),
                ("{s} stands in the centre of {v}.", "{s} is in {v}, near the station."), lambda d: d.place())),
    ("{s} has a garden at the back.", "Tables at {s} are hard to get on Fridays.",
     "{s} changes its menu every season.", "{s} seats about forty guests."))

_LIBRARY = _Kind(
    lambda d: d.fresh(lambda: d.stem().lower() + d.rng.choice(("lib", "kit", "db", "js", "io"))),
    ("it", "the project"),
    (_Attribute(("Which language is {n} written in?", "What programming language does {n} use?"),
                ("{s} is written in {v}.", "The source of {s} is mostly {v}."), lambda d: d.pick(_PROGRAMMING)),
     _Attribute(("Under which licence is {n} released?", "What is the licence of {n}?"),
                ("{s} is released under the {v} licence.", "{s} is distributed under the {v} licence."),
                lambda d: d.pick(_LICENCES)),
     _Attribute(("Who maintains {n}?", "Who is the maintainer of {n}?"),
                ("{s} is maintained by {v}.", "The maintainer of {s} is {v}."), lambda d: d.person()),
     _Attribute(("When was {n} first released?", "In which year did {n} have its first release?"),
                ("{s} was first released in {v}.", "The first release of {s} came out in {v}."),
                lambda d: d.number(1990, 2024))),
    ("{s} has a small but active community.", "{s} ships with extensive tests.",
     "Bug reports for {s} are answered quickly.", "{s} keeps its interface stable."))

_KINDS = (_BRIDGE, _SCIENTIST, _BOOK, _MOUNTAIN, _RESTAURANT, _LIBRARY)


def _passage(rng: random.Random, kind: _Kind, name: str, values: list[str]) -> str:
    """The entity's attributes (and a filler or two) as sentences in random order; the first
    names the entity, later ones name it again or refer back to it."""
    sentences = [(rng.choice(a.clauses), v) for a, v in zip(kind.attributes, values)]
    sentences += [(f, "") for f in rng.sample(kind.fillers, rng.randint(1, 2))]
    rng.shuffle(sentences)
    out = []
    for i, (template, value) in enumerate(sentences):
        subject = name if i == 0 or rng.random() < 0.6 else rng.choice(kind.references)
        text = template.replace("{s}", subject).replace("{v}", value)
        out.append(text[0].upper() + text[1:])
    return " ".join(out)


def fact_question(rng: random.Random) -> tuple[list[str], str]:
    """One (passages, question): 3-6 passages, one of them holds the answer; most of the others
    describe entities of the same kind, with other values of the asked attribute."""
    names = _Names(rng)
    kind = rng.choice(_KINDS)
    asked = rng.randrange(len(kind.attributes))
    count = rng.randint(3, 6)
    kinds = [kind if i == 0 or rng.random() < 0.75 else rng.choice(_KINDS) for i in range(count)]
    described = []
    for k in kinds:
        name = k.name(names)
        described.append((k, name, [a.draw(names) for a in k.attributes]))
    target = described[0]
    passages = [_passage(rng, k, n, v) for k, n, v in described]
    order = list(range(count))
    rng.shuffle(order)
    question = rng.choice(kind.attributes[asked].questions).replace("{n}", target[1])
    question = question[0].upper() + question[1:]
    return [passages[i] for i in order], question


def fact_questions(seed: int) -> Iterator[tuple[list[str], str]]:
    """An endless, seeded stream of fact questions."""
    rng = random.Random(f"blockrag-facts/{seed}")
    while True:
        yield fact_question(rng)
