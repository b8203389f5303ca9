"""The closed-domain spoken task: questions whose right answer is fixed by what the user says.

A model the size of ``tiny`` cannot learn open-domain conversation from hours of synthetic speech, but it
can learn to listen, wait for the end of a question, and answer it, when the answer follows from the
question: "What is seven plus five?" -> "Seven plus five is twelve." That makes correctness measurable
(:func:`answer_correct`: is the answer's key phrase, "is twelve", in what the model said?), and the task
is to this project what the Shakespeare character model is to nanoGPT.

Categories (``CATEGORIES``): small arithmetic (every number in the exchange between 0 and 20), capitals
(56 countries), what comes after / before (days, months, numbers up to 20), opposites (64 words) and small
talk (greetings, thanks, goodbye, "can you hear me?", ...). Every question has at least three phrasings.

**Held out** from training entirely, so that the held-out splits measure generalisation rather than
memory: the last phrasing of every category (of every small-talk intent), and the arithmetic operand
pairs whose hash falls in the held-out share (:data:`HELD_OUT_PAIR_SHARE`, the same pairs for every
operator). Held-out *voices* are a corpus setting (``held_out_users`` in ``configs/corpus/task.yaml``).
Each answer is one sentence that restates the key words ("The capital of France is Paris."), said in the
assistant's one voice.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

CATEGORIES = ("arithmetic", "capitals", "sequence", "opposites", "small_talk")
HELD_OUT_PAIR_SHARE = 0.15
"""Share of arithmetic operand pairs ``(a, b)`` held out (by hash), for every operator."""

_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_words(n: int) -> str:
    """English words for ``0 <= n < 1000`` ("twenty-one", "one hundred and five")."""
    if not 0 <= n < 1000:
        raise ValueError(f"number_words covers 0-999, got {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f"-{_ONES[ones]}" if ones else "")
    hundreds, rest = divmod(n, 100)
    return f"{_ONES[hundreds]} hundred" + (f" and {number_words(rest)}" if rest else "")


# ----------------------------------------------------------------------------- the question bank

OPS = {"plus": lambda a, b: a + b, "minus": lambda a, b: a - b, "times": lambda a, b: a * b}
ARITHMETIC = (
    "What is {a} {op} {b}?",
    "How much is {a} {op} {b}?",
    "Can you tell me what {a} {op} {b} is?",
    "{A} {op} {b}, what does that make?",
)

CAPITALS = (
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
    ("Portugal", "Lisbon"), ("England", "London"), ("Ireland", "Dublin"), ("Japan", "Tokyo"),
    ("China", "Beijing"), ("India", "New Delhi"), ("Russia", "Moscow"), ("Egypt", "Cairo"),
    ("Kenya", "Nairobi"), ("Canada", "Ottawa"), ("Mexico", "Mexico City"), ("Brazil", "Brasilia"),
    ("Argentina", "Buenos Aires"), ("Peru", "Lima"), ("Chile", "Santiago"), ("Australia", "Canberra"),
    ("Greece", "Athens"), ("Turkey", "Ankara"), ("Poland", "Warsaw"), ("Austria", "Vienna"),
    ("Hungary", "Budapest"), ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Finland", "Helsinki"),
    ("Denmark", "Copenhagen"), ("the Netherlands", "Amsterdam"), ("Belgium", "Brussels"),
    ("Switzerland", "Bern"), ("Cuba", "Havana"), ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"),
    ("South Korea", "Seoul"), ("Indonesia", "Jakarta"), ("Iran", "Tehran"), ("Iraq", "Baghdad"),
    ("Saudi Arabia", "Riyadh"), ("Nigeria", "Abuja"), ("Ghana", "Accra"), ("Morocco", "Rabat"),
    ("Colombia", "Bogota"), ("Venezuela", "Caracas"), ("Scotland", "Edinburgh"), ("Iceland", "Reykjavik"),
    ("the Czech Republic", "Prague"), ("Ukraine", "Kyiv"), ("the Philippines", "Manila"),
    ("Malaysia", "Kuala Lumpur"), ("New Zealand", "Wellington"), ("Ethiopia", "Addis Ababa"),
    ("Pakistan", "Islamabad"), ("Nepal", "Kathmandu"), ("Romania", "Bucharest"),
)  # fmt: skip
CAPITAL_QUESTIONS = (
    "What is the capital of {x}?",
    "Which city is the capital of {x}?",
    "Do you know the capital of {x}?",
    "Tell me the capital city of {x}.",
)

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
SEQUENCE_QUESTIONS = (
    "What {unit} comes {rel} {x}?",
    "What is the {unit} {rel} {x}?",
    "Which {unit} is right {rel} {x}?",
    "Tell me the {unit} just {rel} {x}.",
)

OPPOSITE_PAIRS = (
    ("hot", "cold"), ("big", "small"), ("fast", "slow"), ("happy", "sad"), ("up", "down"),
    ("day", "night"), ("open", "closed"), ("wet", "dry"), ("early", "late"), ("full", "empty"),
    ("hard", "soft"), ("high", "low"), ("loud", "quiet"), ("rich", "poor"), ("strong", "weak"),
    ("thick", "thin"), ("win", "lose"), ("push", "pull"), ("inside", "outside"), ("true", "false"),
    ("above", "below"), ("first", "last"), ("buy", "sell"), ("always", "never"), ("clean", "dirty"),
    ("cheap", "expensive"), ("black", "white"), ("north", "south"), ("east", "west"),
    ("summer", "winter"), ("asleep", "awake"), ("top", "bottom"),
)  # fmt: skip
OPPOSITE_QUESTIONS = (
    "What is the opposite of {x}?",
    "Tell me the opposite of {x}.",
    "What word means the opposite of {x}?",
    "Can you give me the opposite of {x}?",
)

SMALL_TALK: dict[str, tuple[tuple[str, ...], str, tuple[str, ...]]] = {
    # intent: (phrasings, the last held out; answer; key words)
    "greeting": (
        ("Hello!", "Hi there!", "Good morning!", "Hey, hello there."),
        "Hello, how can I help you?",
        ("hello",),
    ),
    "hearing": (
        ("Can you hear me?", "Hello, can you hear me?", "Can you hear me okay?", "Are you able to hear me?"),
        "Yes, I can hear you.",
        ("hear",),
    ),
    "how_are_you": (
        ("How are you?", "How are you doing?", "How is it going?", "How are you today?"),
        "I am fine, thank you.",
        ("fine",),
    ),
    "thanks": (
        ("Thank you.", "Thanks a lot.", "Thank you very much.", "Thanks for your help."),
        "You are welcome.",
        ("welcome",),
    ),
    "goodbye": (
        ("Goodbye.", "Bye for now.", "See you later.", "I have to go now, bye."),
        "Goodbye, have a nice day.",
        ("goodbye",),
    ),
}
OPENINGS = ("greeting", "hearing", "how_are_you")
CLOSINGS = ("thanks", "goodbye")


@dataclass(frozen=True)
class TaskItem:
    """One question of the task with every way to ask it.

    ``questions[-1]`` is the held-out phrasing; ``held_out`` marks an item (an arithmetic pair) that only
    the held-out splits ask, in any phrasing.
    """

    category: str
    questions: tuple[str, ...]
    answer: str
    key_words: tuple[str, ...]
    held_out: bool = False

    def phrasings(self, held_out: bool) -> tuple[str, ...]:
        """The training phrasings, or the held-out one."""
        return self.questions[-1:] if held_out else self.questions[:-1]


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def held_out_pair(a: int, b: int) -> bool:
    """Whether operand pair ``(a, b)`` is held out (a hash of the pair, so it never depends on a seed)."""
    u = int(hashlib.sha256(f"pair/{a}/{b}".encode()).hexdigest()[:12], 16) / 16**12
    return u < HELD_OUT_PAIR_SHARE


def _arithmetic() -> list[TaskItem]:
    items = []
    for op, fn in OPS.items():
        for a in range(21):
            for b in range(21):
                r = fn(a, b)
                if not 0 <= r <= 20:
                    continue
                wa, wb, wr = number_words(a), number_words(b), number_words(r)
                qs = tuple(q.format(a=wa, A=_cap(wa), op=op, b=wb) for q in ARITHMETIC)
                answer = f"{_cap(wa)} {op} {wb} is {wr}."
                items.append(TaskItem("arithmetic", qs, answer, (f"is {wr}",), held_out_pair(a, b)))
    return items


def _sequences() -> list[TaskItem]:
    items = []
    units: list[tuple[str, tuple[str, ...]]] = [
        ("day", DAYS),
        ("month", MONTHS),
        ("number", tuple(number_words(n) for n in range(21))),
    ]
    for unit, seq in units:
        cyclic = unit != "number"
        for i, x in enumerate(seq):
            for rel, j in (("after", i + 1), ("before", i - 1)):
                if not cyclic and not 0 <= j < len(seq):
                    continue
                y = seq[j % len(seq)]
                qs = tuple(q.format(unit=unit, rel=rel, x=x) for q in SEQUENCE_QUESTIONS)
                items.append(TaskItem("sequence", qs, f"The {unit} {rel} {x} is {y}.", (f"is {y}",)))
    return items


@lru_cache(maxsize=1)
def task_items() -> tuple[TaskItem, ...]:
    """Every question of the task, in a fixed order."""
    items = _arithmetic()
    for country, city in CAPITALS:
        qs = tuple(q.format(x=country) for q in CAPITAL_QUESTIONS)
        items.append(TaskItem("capitals", qs, f"The capital of {country} is {city}.", (f"is {city}",)))
    items += _sequences()
    for a, b in OPPOSITE_PAIRS:
        for x, y in ((a, b), (b, a)):
            qs = tuple(q.format(x=x) for q in OPPOSITE_QUESTIONS)
            items.append(TaskItem("opposites", qs, f"The opposite of {x} is {y}.", (f"is {y}",)))
    for _intent, (qs, answer, keys) in SMALL_TALK.items():
        items.append(TaskItem("small_talk", qs, answer, keys))
    return tuple(items)


@lru_cache(maxsize=4)
def _pools(held_out: bool) -> dict[str, tuple[TaskItem, ...]]:
    """Items each side may ask, by category (small talk split by intent: openings and closings)."""
    out: dict[str, list[TaskItem]] = {c: [] for c in CATEGORIES}
    for item in task_items():
        if item.category != "arithmetic" or item.held_out == held_out:
            out[item.category].append(item)
    return {c: tuple(v) for c, v in out.items()}


def small_talk(intent: str) -> TaskItem:
    """The small-talk item of ``intent`` (a key of :data:`SMALL_TALK`)."""
    answer = SMALL_TALK[intent][1]
    return next(i for i in task_items() if i.category == "small_talk" and i.answer == answer)


@dataclass(frozen=True)
class TaskExchange:
    """One drawn exchange: what the user asks and the one right answer."""

    category: str
    question: str
    answer: str
    key_words: tuple[str, ...]


def draw_exchanges(
    rng: np.random.Generator,
    n: int,
    held_out: bool,
    weights: dict[str, float],
    small_talk_prob: float = 0.3,
) -> tuple[TaskExchange, ...]:
    """``n`` exchanges of one conversation: maybe an opening, then questions by category weight, maybe a
    closing; training phrasings and pairs, or (``held_out``) the held-out phrasing of every item."""
    pools = _pools(held_out)
    names = [c for c in CATEGORIES if c != "small_talk" and weights.get(c, 0) > 0]
    if not names:
        raise ValueError(f"task weights {weights} give no question category a positive weight")
    w = np.array([weights[c] for c in names], dtype=np.float64)
    items: list[TaskItem] = []
    for i in range(n):
        if i == 0 and n > 1 and rng.random() < small_talk_prob:
            items.append(small_talk(str(rng.choice(OPENINGS))))
        elif i == n - 1 and n > 1 and rng.random() < small_talk_prob:
            items.append(small_talk(str(rng.choice(CLOSINGS))))
        else:
            pool = pools[names[int(rng.choice(len(names), p=w / w.sum()))]]
            items.append(pool[int(rng.integers(len(pool)))])
    out = []
    for item in items:
        phrasings = item.phrasings(held_out)
        question = phrasings[int(rng.integers(len(phrasings)))]
        out.append(TaskExchange(item.category, question, item.answer, item.key_words))
    return tuple(out)


# ----------------------------------------------------------------------------- scoring


def normalize_words(text: str) -> list[str]:
    """Lower-case words with numerals spelled out and hyphens split ("21" -> twenty one), for matching."""
    text = text.lower().replace("’", "'")
    text = re.sub(
        r"\d+", lambda m: number_words(int(m.group())) if int(m.group()) < 1000 else m.group(), text
    )
    return re.sub(r"[^a-z0-9' ]+", " ", text.replace("-", " ")).split()


def answer_correct(said: str, key_words: tuple[str, ...] | list[str]) -> bool:
    """Whether every key phrase occurs, as whole words in order, in ``said`` (after normalisation).

    "Seven plus five is 12." answers key ``twelve``; "twenty" does not answer ``twenty-one``.
    """
    words = normalize_words(said)
    for key in key_words:
        k = normalize_words(key)
        if not k or not any(words[i : i + len(k)] == k for i in range(len(words) - len(k) + 1)):
            return False
    return True
