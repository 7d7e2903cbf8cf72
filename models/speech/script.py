"""Deterministic random English scripts for synthetic training speech.

Sentences come from a few templates filled with words from built-in lists chosen to cover English phonemes
(bilabials, labiodentals, both 'th's, sh/zh/ch/j, ng, w/y/r/l, and every vowel and diphthong), so generated speech
exercises every viseme. `random.Random(seed)` is used because its sequence for a given integer seed is stable
across Python versions, so a seed names a fixed script.
"""

from __future__ import annotations

import random

NAMES = (
    "Anna", "Bob", "Carla", "David", "Emma", "Frank", "George", "Helen", "Isaac", "Judy", "Kevin", "Laura",
    "Martin", "Nora", "Oliver", "Paula", "Quentin", "Rosa", "Simon", "Thelma", "Victor", "Wendy", "Zoe", "Joshua",
)
ADJECTIVES = (
    "big", "small", "happy", "quiet", "loud", "bright", "dark", "warm", "cold", "soft", "rough", "smooth", "young",
    "old", "new", "shiny", "heavy", "light", "busy", "lazy", "clever", "gentle", "brave", "curious", "purple", "yellow",
    "orange", "green", "blue", "pink", "brown", "silver", "golden", "wooden", "thick", "thin", "fresh", "sweet",
    "sour", "bitter", "tiny", "huge", "strange", "famous", "careful", "usual", "pleasant", "royal", "joyful", "cheap",
    "rich", "poor", "tired", "eager", "smart", "wild", "calm", "noisy", "muddy", "fuzzy", "foolish", "boyish",
)
NOUNS = (
    "dog", "cat", "bird", "fish", "horse", "mouse", "cow", "sheep", "goat", "frog", "boy", "girl", "man", "woman",
    "child", "teacher", "doctor", "farmer", "baker", "pilot", "king", "queen", "judge", "chef", "nurse", "driver",
    "house", "garden", "kitchen", "window", "door", "table", "chair", "bottle", "basket", "bucket", "pencil", "paper",
    "book", "letter", "picture", "mirror", "pillow", "blanket", "jacket", "shoe", "hat", "watch", "ring", "key",
    "phone", "camera", "bicycle", "boat", "train", "plane", "car", "bus", "bridge", "tower", "castle", "village",
    "city", "river", "ocean", "mountain", "valley", "forest", "island", "beach", "desert", "meadow", "cloud", "storm",
    "rainbow", "moon", "sun", "star", "apple", "banana", "cherry", "lemon", "peach", "potato", "tomato", "cheese",
    "bread", "butter", "soup", "juice", "coffee", "sugar", "pepper", "cookie", "muffin", "pumpkin", "treasure",
    "measure", "vision", "garage", "leisure", "thunder", "feather", "weather", "mother", "father", "brother",
    "theater", "thumb", "mouth", "tooth", "voice", "choice", "noise", "toy", "coin", "shadow", "shelf", "chain",
    "jungle", "engine", "machine", "violin", "guitar", "trumpet", "drum", "song", "puzzle", "balloon", "pebble",
    "bubble", "marble", "umbrella", "hammer", "ladder", "pocket", "wallet", "market", "museum", "airport",
    "ear", "hair", "tour", "fire", "hour", "lawyer",
)
VERBS_PAST = (
    "found", "saw", "took", "made", "gave", "brought", "bought", "caught", "kept", "left", "moved", "pushed", "pulled",
    "carried", "opened", "closed", "painted", "cleaned", "washed", "fixed", "broke", "dropped", "picked", "chose",
    "watched", "heard", "touched", "thanked", "followed", "visited", "borrowed", "measured", "admired", "showed",
    "shared", "hid", "threw", "lifted", "wrapped", "judged", "enjoyed", "pointed at", "laughed at", "waved at",
    "looked at", "smiled at", "jumped over", "walked past", "ran toward", "played with", "talked about", "dreamed of",
)
VERBS_BASE = (
    "find", "see", "take", "make", "give", "bring", "buy", "catch", "keep", "move", "push", "pull", "carry", "open",
    "close", "paint", "clean", "wash", "fix", "break", "drop", "pick", "choose", "watch", "hear", "touch", "thank",
    "follow", "visit", "borrow", "measure", "admire", "show", "share", "hide", "throw", "lift", "wrap", "enjoy",
)
ADVERBS = (
    "quickly", "slowly", "quietly", "loudly", "happily", "carefully", "gently", "bravely", "suddenly", "easily",
    "proudly", "eagerly", "calmly", "badly", "warmly", "yesterday", "today", "again", "twice", "early", "late",
    "together", "outside", "downstairs", "everywhere", "afterwards", "finally", "nearly", "almost", "truly",
)
PREPOSITIONS = (
    "near", "behind", "under", "over", "beside", "inside", "outside", "above", "below", "across", "along", "around",
    "between", "beyond", "through", "toward", "without", "within", "upon", "against", "among", "past", "by", "with",
)
PLACES = (
    "at the zoo", "in the morning", "after lunch", "before dinner", "on Monday", "at midnight", "in the summer",
    "during the show", "on the way home", "at the party", "in the rain", "by the fire", "at school", "in June",
)

_TEMPLATES = (
    "The {adj} {noun} {past} the {noun2} {place}.",
    "{name} {past} a {adj} {noun} {adv}.",
    "Did the {noun} {base} the {adj} {noun2}?",
    "{name} and {name2} {past} the {noun} {prep} the {adj} {noun2}.",
    "Why did {name} {base} my {noun} {place}?",
    "A {adj} {noun} {adv} {past} the {adj2} {noun2} {prep} the {noun3}.",
    "Please {base} the {adj} {noun} {prep} the {noun2}.",
    "{name} said the {noun} was {adj} and {adj2}.",
    "We {past} the {adj} {noun} {place}, and the {noun2} {past2} it {adv}.",
    "Would you {base} the {noun} {place}?",
)

ALL_WORDS = tuple(
    sorted(
        {
            w.strip(",.?").lower()
            for group in (NAMES, ADJECTIVES, NOUNS, VERBS_PAST, VERBS_BASE, ADVERBS, PREPOSITIONS, PLACES)
            for phrase in group
            for w in phrase.split()
        }
    )
)


def _sentence(rng: random.Random) -> str:
    template = rng.choice(_TEMPLATES)
    slots = {
        "name": rng.choice(NAMES),
        "name2": rng.choice(NAMES),
        "adj": rng.choice(ADJECTIVES),
        "adj2": rng.choice(ADJECTIVES),
        "noun": rng.choice(NOUNS),
        "noun2": rng.choice(NOUNS),
        "noun3": rng.choice(NOUNS),
        "past": rng.choice(VERBS_PAST),
        "past2": rng.choice(VERBS_PAST),
        "base": rng.choice(VERBS_BASE),
        "adv": rng.choice(ADVERBS),
        "prep": rng.choice(PREPOSITIONS),
        "place": rng.choice(PLACES),
    }
    text = template.format(**slots)
    return text[0].upper() + text[1:]


def random_script(seed: int, n_sentences: int = 6) -> str:
    """`n_sentences` random English sentences joined by spaces; the same seed always gives the same text.

    About 2.5 s of speech per sentence at espeak's default 175 wpm.
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if n_sentences <= 0:
        raise ValueError(f"n_sentences must be positive, got {n_sentences}")
    rng = random.Random(seed)
    return " ".join(_sentence(rng) for _ in range(n_sentences))
