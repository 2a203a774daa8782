"""A built-in preference dataset with objective labels, generated here (no download).

Each pair's chosen completion is right by construction (a correct fact or sum, an instruction
followed) and the rejected one is wrong in a single, checkable way. The tasks are balanced so that
"the longer completion wins" scores about 50 %: a model must read the content to beat chance.
Train and held-out splits draw from disjoint halves of every item pool (different countries,
words, numbers), so held-out accuracy measures generalisation, not memorisation.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from rewardkit.data.readers import ReadReport
from rewardkit.data.record import PreferenceExample
from rewardkit.errors import UserError

CAPITALS = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo"),
    ("China", "Beijing"), ("Russia", "Moscow"), ("Egypt", "Cairo"), ("Greece", "Athens"), ("Canada", "Ottawa"),
    ("Portugal", "Lisbon"), ("Austria", "Vienna"), ("Poland", "Warsaw"), ("Norway", "Oslo"), ("Sweden", "Stockholm"),
    ("Finland", "Helsinki"), ("Denmark", "Copenhagen"), ("Ireland", "Dublin"), ("Kenya", "Nairobi"), ("Peru", "Lima"),
    ("Argentina", "Buenos Aires"), ("Mexico", "Mexico City"), ("Thailand", "Bangkok"), ("India", "New Delhi"),
    ("South Korea", "Seoul"), ("Turkey", "Ankara"), ("Hungary", "Budapest"), ("Belgium", "Brussels"),
    ("the Netherlands", "Amsterdam"), ("Cuba", "Havana"), ("Chile", "Santiago"), ("Australia", "Canberra"),
    ("Iran", "Tehran"), ("Iraq", "Baghdad"), ("Vietnam", "Hanoi"), ("Colombia", "Bogota"),
]
ANTONYMS = [
    ("hot", "cold"), ("big", "small"), ("fast", "slow"), ("happy", "sad"), ("up", "down"), ("light", "dark"),
    ("open", "closed"), ("early", "late"), ("rich", "poor"), ("strong", "weak"), ("hard", "soft"), ("wet", "dry"),
    ("young", "old"), ("full", "empty"), ("loud", "quiet"), ("high", "low"), ("thick", "thin"), ("clean", "dirty"),
    ("true", "false"), ("win", "lose"), ("day", "night"), ("inside", "outside"), ("begin", "end"), ("buy", "sell"),
]
COLORS = [
    ("grass", "green"), ("the sky on a clear day", "blue"), ("snow", "white"), ("coal", "black"), ("a banana", "yellow"),
    ("a ripe tomato", "red"), ("an orange", "orange"), ("a lemon", "yellow"), ("a crow", "black"), ("milk", "white"),
    ("a strawberry", "red"), ("a lime", "green"), ("chocolate", "brown"), ("a flamingo", "pink"), ("an eggplant", "purple"),
    ("the sun", "yellow"), ("blood", "red"), ("a polar bear", "white"), ("a frog", "green"), ("an elephant", "gray"),
]
QUESTIONS = [
    ("What is the largest planet in our solar system?", "Jupiter is the largest planet in our solar system."),
    ("What do bees make?", "Bees make honey."),
    ("How many days are in a week?", "There are seven days in a week."),
    ("What is frozen water called?", "Frozen water is called ice."),
    ("Which animal is known as the king of the jungle?", "The lion is known as the king of the jungle."),
    ("What gas do plants absorb from the air?", "Plants absorb carbon dioxide from the air."),
    ("What is the opposite of north?", "The opposite of north is south."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What do you call a baby cat?", "A baby cat is called a kitten."),
    ("Which ocean is the largest?", "The Pacific Ocean is the largest ocean."),
    ("What is the boiling point of water in Celsius?", "Water boils at one hundred degrees Celsius."),
    ("What color do you get by mixing blue and yellow?", "Mixing blue and yellow gives green."),
    ("How many hours are in a day?", "There are twenty-four hours in a day."),
    ("What is the main language spoken in Brazil?", "The main language spoken in Brazil is Portuguese."),
    ("Which star is closest to Earth?", "The Sun is the star closest to Earth."),
    ("What is the tallest animal?", "The giraffe is the tallest animal."),
]
WORDS = ["apple", "river", "cloud", "stone", "music", "tiger", "paper", "light", "green", "table", "dream", "ocean"]

Pair = tuple[str, str, str]  # prompt, chosen, rejected


def _capital(rng: random.Random, pool: list) -> Pair:
    (country, capital), (_, wrong) = rng.sample(pool, 2)
    return f"What is the capital of {country}?", f"The capital of {country} is {capital}.", f"The capital of {country} is {wrong}."


def _antonym(rng: random.Random, pool: list) -> Pair:
    (word, opposite), (other, _) = rng.sample(pool, 2)
    return f"What is the opposite of '{word}'?", f"The opposite of '{word}' is '{opposite}'.", f"The opposite of '{word}' is '{other}'."


def _addition(rng: random.Random, pool: list) -> Pair:
    a, b = rng.choice(pool), rng.randint(1, 9)
    wrong = a + b + rng.choice([-3, -2, -1, 1, 2, 3])
    return f"What is {a} + {b}?", f"{a} + {b} = {a + b}.", f"{a} + {b} = {wrong}."


def _uppercase(rng: random.Random, pool: list) -> Pair:
    question, answer = rng.choice(pool)
    return f"Answer in capital letters only. {question}", answer.upper(), answer


def _one_word(rng: random.Random, pool: list) -> Pair:
    thing, color = rng.choice(pool)
    sentence = f"The color of {thing} is {color}."
    if rng.random() < 0.5:  # both directions, so that length alone decides nothing
        return f"Answer with a single word: what color is {thing}?", color.capitalize() + ".", sentence
    return f"Answer with a full sentence: what color is {thing}?", sentence, color.capitalize() + "."


def _repeat(rng: random.Random, pool: list) -> Pair:
    word, n = rng.choice(pool), rng.randint(2, 4)
    wrong = n + rng.choice([-1, 1])
    return f"Write the word '{word}' exactly {n} times, separated by spaces.", " ".join([word] * n), " ".join([word] * wrong)


# (task, generator, item pool); pools are split in halves between the train and eval splits.
TASKS: list[tuple[str, Callable[[random.Random, list], Pair], list]] = [
    ("capital", _capital, CAPITALS),
    ("antonym", _antonym, ANTONYMS),
    ("addition", _addition, list(range(1, 41))),
    ("uppercase", _uppercase, QUESTIONS),
    ("one_word_or_sentence", _one_word, COLORS),
    ("repeat_count", _repeat, WORDS),
]


def synthetic_pairs(split: str = "train", n: int | None = None, seed: int = 0) -> list[PreferenceExample]:
    """Deterministic objectively-labelled pairs; ``split`` is 'train' (default 768) or 'eval' (192)."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    n = n if n is not None else (768 if split == "train" else 192)
    rng = random.Random(f"{seed}-{split}")
    half = 0 if split == "train" else 1
    out = []
    for i in range(n):
        task, make, pool = TASKS[i % len(TASKS)]
        items = pool[half::2]
        prompt, chosen, rejected = make(rng, items)
        out.append(PreferenceExample.pair(prompt, chosen, rejected, subset=task, source=f"builtin:synthetic[{split}] #{i}"))
    rng.shuffle(out)
    return out


def builtin_dataset(spec: str, split: str) -> tuple[list[PreferenceExample], ReadReport]:
    if spec != "builtin:synthetic":
        raise UserError(f"unknown built-in dataset {spec!r}; available: 'builtin:synthetic'")
    examples = synthetic_pairs(split)
    report = ReadReport(source=f"{spec} ({split} split)", records=len(examples), loaded=len(examples))
    return examples, report
