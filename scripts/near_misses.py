"""Near misses and faithful rewrites of a question, made by rules (issue 9's second goal).

A near miss changes the meaning while keeping almost every word: another number or date, a
negation, another named entity, a reversed relation ("from A to B" -> "from B to A").  A faithful
rewrite keeps the meaning: case and punctuation, contractions, "How do I" <-> "How can I"; a
faithful swap moves every word and still keeps it ("between A and B" -> "between B and A",
"A or B?" -> "B or A?"); so does typing without apostrophes ("didn't" -> "didnt", "today's" ->
"todays"), a small number in words ("5" -> "five") and the other side of the Atlantic's spelling
("color" <-> "colour", from a fixed word list).
Rule-made sets are easy in one way (the edits are the only differences) and biased in another
(the guards in ``verify_experiments.py`` look for the same kinds of edits), so the refusal rates
measured on them are an upper bound for the guards; they are a fair test of a plain threshold.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

NUMBER = re.compile(r"\b\d+\b")
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
MONTH = re.compile(r"\b(" + "|".join(MONTHS) + r")\b")
AUXILIARY = re.compile(r"\b(is|are|was|were|can|could|should|would|will|do|does|did)\b", re.I)
CONTRACTED = {"can": "can't", "will": "won't"}
ENTITY_SWAPS = ["India", "China", "Google", "Microsoft", "Python", "Java", "London", "Paris", "Obama",
                "Trump", "Apple", "Samsung", "Canada", "Germany", "Facebook", "Amazon"]
RELATIONS = [
    re.compile(r"\b(from) (\w+) (to) (\w+)\b", re.I),
    re.compile(r"\b(convert|converting|change|changing|move|moving|switch|switching|translate|migrate|"
               r"migrating|transfer|transferring) (\w+) (to|into) (\w+)\b", re.I),
]
COMPARISON = re.compile(r"\b(\w+) ((?:is |are )?(?:better|worse|bigger|smaller|faster|slower|cheaper|harder|"
                        r"easier|stronger|safer|richer) than) (\w+)\b", re.I)


def near_misses(question: str) -> Iterator[tuple[str, str]]:
    """(kind, changed question) for every kind of edit that applies to ``question``."""
    if m := NUMBER.search(question):
        yield "number", question[:m.start()] + str(int(m.group()) + 1) + question[m.end():]
    if m := MONTH.search(question):
        other = MONTHS[(MONTHS.index(m.group()) + 5) % 12]
        yield "date", question[:m.start()] + other + question[m.end():]
    if m := AUXILIARY.search(question):
        word = m.group()
        negated = CONTRACTED.get(word.lower(), word + "n't")
        negated = negated[:1].upper() + negated[1:] if word[:1].isupper() else negated
        yield "negation", question[:m.start()] + negated + question[m.end():]
    words = re.findall(r"\b[A-Z][a-z]+\b", question)
    names = [w for w in words[1:] if w in ENTITY_SWAPS]
    if names:
        other = next(e for e in ENTITY_SWAPS if e != names[0] and e not in question)
        yield "entity", re.sub(rf"\b{names[0]}\b", other, question, count=1)
    for pattern in RELATIONS:
        if (m := pattern.search(question)) and m.group(2).lower() != m.group(4).lower():
            swapped = f"{m.group(1)} {m.group(4)} {m.group(3)} {m.group(2)}"
            yield "relation", question[:m.start()] + swapped + question[m.end():]
            break
    else:
        if (m := COMPARISON.search(question)) and m.group(1).lower() != m.group(3).lower():
            yield "relation", question[:m.start()] + f"{m.group(3)} {m.group(2)} {m.group(1)}" + question[m.end():]


REWRITES = [
    (re.compile(r"^How do I\b"), "How can I"),
    (re.compile(r"^How can I\b"), "How do I"),
    (re.compile(r"^What is\b"), "What's"),
    (re.compile(r"^What are some\b"), "What are a few"),
    (re.compile(r"^Is it\b"), "Would you say it is"),
]


def faithful_rewrite(question: str) -> str:
    """The same question reworded by the first rule that applies, else lower-cased without '?'."""
    for pattern, replacement in REWRITES:
        if pattern.search(question):
            return pattern.sub(replacement, question, count=1)
    return question.rstrip("?").lower()


BETWEEN = re.compile(r"\b(between) ((?:[^ ?]+ ){0,3}[^ ?]+) (and) ((?:[^ ?]+ ){0,3}[^ ?]+)(?=\?|$)")
ALTERNATIVES = re.compile(r"\b(\w+) (or|vs\.?) (\w+)\?$")


def faithful_swap(question: str) -> str | None:
    """The two sides of "between A and B" (up to four words each, ending the question) or of a final
    "A or B?" / "A vs B?" swapped; None when neither is there.  Apart from the training rule
    (``verifier_training._conjuncts``: single words around the first "and" / "or")."""
    if (m := BETWEEN.search(question)) and m.group(2).lower() != m.group(4).lower():
        return question[:m.start()] + f"{m.group(1)} {m.group(4)} {m.group(3)} {m.group(2)}" + question[m.end():]
    if (m := ALTERNATIVES.search(question)) and len({m.group(1).lower(), m.group(3).lower()} - {"not", "no"}) == 2:
        return question[:m.start()] + f"{m.group(3)} {m.group(2)} {m.group(1)}?"
    return None


IN_WORD_APOSTROPHE = re.compile(r"(?<=\w)['’](?=\w)")


def without_apostrophes(question: str) -> str | None:
    """The question as typed without its apostrophes; None when it has none inside a word."""
    return IN_WORD_APOSTROPHE.sub("", question) if IN_WORD_APOSTROPHE.search(question) else None


DIGIT_WORDS = dict(zip("23456789", "two three four five six seven eight nine".split()))
SMALL_DIGIT = re.compile(r"(?<= )([2-9])(?= )")  # a word of its own: not "DSM-5", "7^36", "5.30"
#: American -> British, whole words (apart from the verifier's suffix rules)
ATLANTIC = {"color": "colour", "favorite": "favourite", "behavior": "behaviour", "organize": "organise",
            "realize": "realise", "center": "centre", "analyze": "analyse", "traveling": "travelling",
            "defense": "defence", "honor": "honour", "neighbor": "neighbour", "labor": "labour",
            "theater": "theatre", "organization": "organisation", "apologize": "apologise", "license": "licence",
            "program": "programme", "catalog": "catalogue", "recognize": "recognise", "humor": "humour"}
ATLANTIC |= {british: american for american, british in ATLANTIC.items()}
ATLANTIC_WORD = re.compile(r"\b(" + "|".join(ATLANTIC) + r")\b")


def digit_in_words(question: str) -> str | None:
    """The first lone digit 2-9 written as a word ("5 tips" -> "five tips"); None without one."""
    m = SMALL_DIGIT.search(question)
    return question[:m.start()] + DIGIT_WORDS[m.group()] + question[m.end():] if m else None


def other_spelling(question: str) -> str | None:
    """The first word of :data:`ATLANTIC` in the other spelling; None without one."""
    m = ATLANTIC_WORD.search(question)
    return question[:m.start()] + ATLANTIC[m.group()] + question[m.end():] if m else None
