"""Seeded sentence generators: English from a tiny grammar, other languages from word lists.

The point is phonetic variety (every viseme class, bilabials in all positions, long vowels,
pauses at commas), not meaning. Sentence ids are drawn from disjoint seed ranges for training
and evaluation, so held-out sentences are never seen in training.
"""

from __future__ import annotations

import numpy as np

_EN = {
    "det": ["the", "a", "my", "your", "this", "that", "every", "some", "our", "no"],
    "adj": ["big", "blue", "quiet", "happy", "old", "bright", "small", "warm", "purple", "broken",
            "famous", "empty", "muddy", "gentle", "sharp", "foolish", "lovely", "yellow"],
    "noun": ["bob", "mother", "paper", "map", "puppy", "window", "teacher", "boat", "movie",
             "garden", "phone", "ship", "moon", "valley", "bottle", "umbrella", "pepper",
             "family", "village", "zebra", "coffee", "thumb", "whale", "judge", "rabbit"],
    "verb": ["bought", "painted", "moved", "pushed", "believed", "fixed", "watched", "maybe saw",
             "played with", "forgot", "built", "measured", "washed", "grabbed", "opened"],
    "adv": ["quickly", "slowly", "perhaps", "yesterday", "by the beach", "every morning",
            "in the evening", "without a problem", "very happily", "before lunch"],
    "open": ["well", "oh", "you know", "so", "listen", "honestly", "wow", "by the way", "hmm"],
}

_WORDS = {
    "de": "Mama Papa Baum Mond Buch Brot Wasser Fisch schön bitte immer morgen Blume Maus "
          "Tisch lachen spielen Berlin Zimmer Apfel",
    "fr": "maman papa bonjour merci pomme beau bleu monde petit mouton fromage voiture "
          "maison toujours plage bateau musique fenêtre parler",
    "es": "mamá papá perro playa boca bueno mucho mañana pelota música ventana manzana "
          "bonito hablar mesa tiempo amigo camino",
    "it": "mamma papà pane bambino bello mondo piove mattina pomodoro musica finestra "
          "bicicletta parlare sempre mare amico",
    "pt": "mamãe papai bola praia manhã bonito bem mesa música janela palavra amigo "
          "sempre tempo peixe",
    "nl": "mama papa boom boek water vis mooi morgen bloem muis tafel spelen appel "
          "brood",
    "pl": "mama tata pies dom morze mleko piękny bardzo jabłko muzyka okno zawsze "
          "przyjaciel",
}

TRAIN_SENTENCE_BASE = 0  # sentence ids [0, 10**6) are training sentences
EVAL_SENTENCE_BASE = 10**6  # ids from here on are held out


def sentence(language: str, sentence_id: int) -> str:
    """The sentence with this id: a pure function of (language, id)."""
    rng = np.random.default_rng([sentence_id, len(language), ord(language[0])])
    if language.startswith("en"):
        return _english(rng)
    return word_sentence(_WORDS[language].split(), rng, lengths=(4, 10))


def word_sentence(words: list[str], rng: np.random.Generator, lengths: tuple[int, int]) -> str:
    """Words drawn from a list (``lengths``: [low, high) words), a comma in the middle of a
    longer one, capitalised with a full stop: the non-English sentences here and of the
    festival voices (export/data/festival.py), each from its own word list and seed."""
    n = int(rng.integers(*lengths))
    picked = [str(w) for w in rng.choice(words, size=n)]
    if n > 5:
        picked[int(rng.integers(2, n - 2))] += ","
    return " ".join(picked).capitalize() + "."


def _english(rng: np.random.Generator) -> str:
    def pick(key: str) -> str:
        return str(rng.choice(_EN[key]))

    parts = []
    if rng.uniform() < 0.3:
        parts.append(pick("open") + ",")
    parts += [pick("det"), pick("adj"), pick("noun"), pick("verb"), pick("det"), pick("noun")]
    if rng.uniform() < 0.6:
        parts.append(pick("adv"))
    if rng.uniform() < 0.4:
        parts[-1] += ","
        parts += ["and", pick("det"), pick("adj"), pick("noun"), pick("verb"), pick("adv")]
    text = " ".join(parts)
    return text[0].upper() + text[1:] + ("?" if rng.uniform() < 0.2 else ".")
