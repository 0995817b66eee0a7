"""NLTK word tokenisation of captions without the ``punkt`` data package.

SCAN, VSRN and their descendants turn a caption into words with
``nltk.tokenize.word_tokenize(caption.lower())``. That call first splits the text into sentences
with the pretrained English Punkt model (a data download, impossible here), then runs
:class:`nltk.tokenize.NLTKWordTokenizer` on each sentence. The sentence split matters: the word
tokenizer separates only a text's *final* period, so ``"a dog. a cat."`` gives ``dog.`` unless the
text was split after ``dog.`` first.

This module runs NLTK's own Punkt algorithm (:class:`nltk.tokenize.punkt.PunktSentenceTokenizer`)
with the abbreviation and sentence-starter tables of the pretrained English model written out
below. The model's remaining table, the orthographic context of every word seen in training, only
changes decisions after an abbreviation, an initial or a number followed by a capitalised word;
on lower-cased text (what the originals tokenise) the result equals ``nltk.word_tokenize``.
"""

from __future__ import annotations

import functools

from nltk.tokenize.destructive import NLTKWordTokenizer
from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

__all__ = ["ENGLISH_ABBREVIATIONS", "ENGLISH_SENTENCE_STARTERS", "sent_tokenize", "word_tokenize"]

# The abbreviation table of NLTK's pretrained English Punkt model (punkt_tab/english, trained on
# the Wall Street Journal by Kiss & Strunk; NLTK data, Apache License 2.0). A token ending in a
# period whose lower-cased stem is listed here is an abbreviation, not a sentence end.
ENGLISH_ABBREVIATIONS: frozenset[str] = frozenset(
    """
    a.a a.c a.d a.g a.h a.m a.m.e a.s a.t adm ala ariz aug ave b.f b.v bros c c.i.t c.o.m.b c.v calif
    chg cie co col colo conn corp cos ct d d.c d.h d.w dec dr e e.f e.h e.l e.m f f.g f.j feb fla fri
    ft g g.d g.f g.k ga gen h h.c h.f h.m i.m.s ill inc j.b j.c j.j j.k j.p j.r jan jr k kan ky l l.a
    l.f l.p lt ltd m m.b.a m.d.c m.j maj messrs mg mich minn mr mrs ms n n.c n.d n.h n.j n.m n.v n.y
    nev nov oct ok okla ore p p.a.m p.m pa ph.d prof r r.a r.h r.i r.j r.k r.t rep reps s s.a s.a.y
    s.c s.g s.p.a s.s sen sep sept sr st sw t t.j tenn tues u.k u.n u.s u.s.a u.s.s.r v va vs vt w
    w.c w.r w.va w.w wash wed wis yr
    """.split()
)

# The same model's frequent sentence starters: after an abbreviation, one of these words written
# with a capital letter starts a new sentence.
ENGLISH_SENTENCE_STARTERS: frozenset[str] = frozenset(
    """
    according although among both but despite even he however i if in indeed instead it many
    meanwhile moreover most nevertheless nonetheless nor sales separately similarly since so some
    the there these they this though thus under when while yet
    """.split()
)


@functools.lru_cache(maxsize=1)
def _sentence_splitter() -> PunktSentenceTokenizer:
    params = PunktParameters()
    params.abbrev_types = set(ENGLISH_ABBREVIATIONS)
    params.sent_starters = set(ENGLISH_SENTENCE_STARTERS)
    return PunktSentenceTokenizer(params)


@functools.lru_cache(maxsize=1)
def _word_splitter() -> NLTKWordTokenizer:
    return NLTKWordTokenizer()


def _as_text(text: str | bytes) -> str:
    # Text is text: tokenising str(b'...') gives "b'a", ... and loses about half the accuracy
    # (VSRN issue 27), so bytes are decoded, never passed through str().
    if isinstance(text, bytes | bytearray):
        return bytes(text).decode("utf-8")
    if not isinstance(text, str):
        raise TypeError(f"expected a caption as str or UTF-8 bytes, found {type(text).__name__}")
    return text


def sent_tokenize(text: str | bytes) -> list[str]:
    """Split ``text`` into sentences as ``nltk.sent_tokenize`` does (English Punkt tables)."""
    return _sentence_splitter().tokenize(_as_text(text))


def word_tokenize(text: str | bytes, lower: bool = True) -> list[str]:
    """Words of a caption: ``nltk.tokenize.word_tokenize(text.lower())`` without NLTK data.

    ``lower`` (default True) lower-cases first, as SCAN, VSRN, CAMERA and SelfAlign do before
    tokenising; pass False to keep the case. ``bytes`` are decoded as UTF-8.

    >>> word_tokenize("A man's hat. It is red!")
    ['a', 'man', "'s", 'hat', '.', 'it', 'is', 'red', '!']
    """
    text = _as_text(text)
    if lower:
        text = text.lower()
    words = _word_splitter()
    return [word for sentence in sent_tokenize(text) for word in words.tokenize(sentence)]
