"""The word vocabulary of SCAN and VSRN: ``Vocabulary``, its pickle and JSON files, ``build_vocab``.

Files in the wild:

- VSRN ``vocab/{f30k,coco}_precomp_vocab.pkl``: a Python 2 pickle (protocol 2) of the class
  ``Vocabulary`` from the repository's ``vocab.py``. The released files name it
  ``__main__.Vocabulary`` (they were written by running ``vocab.py`` as a script); a pickle written
  by code that imported the module names it ``vocab.Vocabulary``. The state is three attributes:
  ``word2idx`` (dict word -> id), ``idx2word`` (dict id -> word), ``idx`` (next free id).
- SCAN ``vocab/{data_name}_vocab.json``: ``{"word2idx": ..., "idx2word": ..., "idx": ...}``; JSON
  turns the integer keys of ``idx2word`` into strings, which :func:`load_vocab` turns back.

Pickles run code when loaded, so :func:`load_vocab` reads them with an unpickler that knows only
the ``Vocabulary`` class (under the module paths above) and plain containers, and refuses anything
else. :func:`save_vocab_pickle` writes the class path ``vocab.Vocabulary`` so that an original
VSRN checkout (Python 2 or 3) loads the file with a plain ``pickle.load``.
"""

from __future__ import annotations

import io
import os
import pickle
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from itr_common.errors import fail, require_file
from itr_common.fileio import read_json, write_bytes_atomic, write_json_atomic
from itr_common.text.tokenize import word_tokenize

__all__ = [
    "PAD",
    "START",
    "END",
    "UNK",
    "Vocabulary",
    "build_vocab",
    "caption_to_ids",
    "load_vocab",
    "save_vocab_json",
    "save_vocab_pickle",
    "vocabulary_pickle_bytes",
]

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIAL_TOKENS = (PAD, START, END, UNK)  # ids 0, 1, 2, 3 in every vocabulary build_vocab makes

_STATE_KEYS = ("word2idx", "idx2word", "idx")


class Vocabulary:
    """Word <-> id maps with an ``<unk>`` fallback, attribute-compatible with SCAN/VSRN's class.

    ``word2idx``: dict[str, int]; ``idx2word``: dict[int, str]; ``idx``: the next id to assign.
    """

    def __init__(self) -> None:
        self.word2idx: dict[str, int] = {}
        self.idx2word: dict[int, str] = {}
        self.idx: int = 0

    def add_word(self, word: str) -> None:
        """Give ``word`` the next id unless it already has one."""
        if word not in self.word2idx:
            self.word2idx[word] = self.idx
            self.idx2word[self.idx] = word
            self.idx += 1

    def __call__(self, word: str) -> int:
        """The id of ``word``, or the id of ``<unk>`` for a word not in the vocabulary."""
        idx = self.word2idx.get(word)
        if idx is not None:
            return idx
        if UNK not in self.word2idx:
            raise KeyError(f"'{word}' is not in the vocabulary, which has no '{UNK}' entry")
        return self.word2idx[UNK]

    def __len__(self) -> int:
        return len(self.word2idx)

    def __contains__(self, word: object) -> bool:
        return word in self.word2idx

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return (self.word2idx, self.idx2word, self.idx) == (other.word2idx, other.idx2word, other.idx)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} words)"

    def __getstate__(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in _STATE_KEYS}

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict) or not all(key in state for key in _STATE_KEYS):
            raise pickle.UnpicklingError(f"a Vocabulary's state must be a dict with keys {list(_STATE_KEYS)}")
        self.word2idx = state["word2idx"]
        self.idx2word = state["idx2word"]
        self.idx = state["idx"]

    @classmethod
    def from_state(cls, state: dict[str, Any], source: str | os.PathLike = "<vocabulary>") -> Vocabulary:
        """A checked Vocabulary from ``{"word2idx", "idx2word", "idx"}``; string ids become ints."""
        vocab = cls()
        vocab.word2idx, vocab.idx2word, vocab.idx = _checked_state(state, source)
        return vocab


def _checked_state(state: Any, source: str | os.PathLike) -> tuple[dict[str, int], dict[int, str], int]:
    if not isinstance(state, dict):
        fail(f"{source}: expected a vocabulary with keys {list(_STATE_KEYS)}, found {type(state).__name__}")
    missing = [key for key in _STATE_KEYS if key not in state]
    if missing:
        fail(f"{source}: expected vocabulary keys {list(_STATE_KEYS)}, missing {missing}")
    word2idx, idx2word, idx = state["word2idx"], state["idx2word"], state["idx"]
    if not isinstance(word2idx, dict) or not all(
        isinstance(w, str) and isinstance(i, int) and not isinstance(i, bool) for w, i in word2idx.items()
    ):
        fail(f"{source}: expected word2idx to map words (str) to ids (int)")
    if not isinstance(idx2word, dict):
        fail(f"{source}: expected idx2word to be a dict, found {type(idx2word).__name__}")
    try:
        # JSON (SCAN's serialize_vocab) stores the integer ids as strings.
        idx2word = {int(i): w for i, w in idx2word.items()}
    except (TypeError, ValueError):
        fail(f"{source}: expected idx2word to map integer ids to words")
    if not all(isinstance(w, str) for w in idx2word.values()):
        fail(f"{source}: expected idx2word to map ids to words (str)")
    if not isinstance(idx, int) or isinstance(idx, bool):
        fail(f"{source}: expected idx to be an int, found {type(idx).__name__}")
    return word2idx, idx2word, idx


# ---------------------------------------------------------------------------------------- loading


def _reconstruct_vocabulary(cls: Any, base: Any, state: Any) -> Vocabulary:
    """Stand-in for ``copyreg._reconstructor`` (protocol 0/1 pickles): only ever makes a Vocabulary."""
    if cls is not Vocabulary or base is not object or state is not None:
        raise pickle.UnpicklingError("copyreg._reconstructor is allowed only to create a Vocabulary")
    return Vocabulary.__new__(Vocabulary)


class _VocabularyUnpickler(pickle.Unpickler):
    """Resolves only the original Vocabulary class (remapped to ours) and what rebuilding it needs."""

    def find_class(self, module: str, name: str) -> Any:
        if name == "Vocabulary" and (module == "__main__" or module.rsplit(".", 1)[-1] == "vocab"):
            return Vocabulary
        if (module, name) in {("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor")}:
            return _reconstruct_vocabulary
        if (module, name) in {("__builtin__", "object"), ("builtins", "object")}:
            return object
        raise _RefusedGlobal(f"{module}.{name}")


class _RefusedGlobal(pickle.UnpicklingError):
    pass


def _load_pickle(path: Path) -> Vocabulary:
    try:
        with open(path, "rb") as f:
            # Python 2 pickles store ASCII words as byte strings; they are text.
            obj = _VocabularyUnpickler(f, encoding="utf-8").load()
    except _RefusedGlobal as err:
        fail(
            f"{path}: refused to unpickle global '{err}': a vocabulary pickle may hold only the "
            "Vocabulary class and plain containers"
        )
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, UnicodeDecodeError) as err:
        fail(f"{path}: expected a pickled Vocabulary, found an unreadable pickle ({err})")
    if isinstance(obj, Vocabulary):
        state = {key: getattr(obj, key, None) for key in _STATE_KEYS}
        return Vocabulary.from_state(state, path)
    if isinstance(obj, dict):
        return Vocabulary.from_state(obj, path)
    fail(f"{path}: expected a pickled Vocabulary, found {type(obj).__name__}")


def load_vocab(path: str | os.PathLike) -> Vocabulary:
    """Load a SCAN ``.json`` or a VSRN ``.pkl`` vocabulary (safely: no code runs)."""
    path = require_file(path, "vocabulary file")
    suffix = path.suffix.lower()
    if suffix in {".pkl", ".pickle"}:
        return _load_pickle(path)
    if suffix == ".json":
        return Vocabulary.from_state(read_json(path, "JSON vocabulary"), path)
    fail(f"{path}: expected a vocabulary file ending in .pkl or .json, found '{suffix or path.name}'")


# ----------------------------------------------------------------------------------------- saving


def vocabulary_pickle_bytes(vocab: Vocabulary, class_path: str = "vocab.Vocabulary") -> bytes:
    """Protocol-2 pickle of ``vocab`` naming ``class_path`` as its class (no such module needed).

    The stream is ``PROTO 2, GLOBAL class_path, EMPTY_TUPLE, NEWOBJ, <state dict>, BUILD, STOP``,
    exactly what Python 2's ``pickle.dump(vocab, f, 2)`` writes for the original class.
    """
    module, _, name = class_path.rpartition(".")
    if not module or not name or "\n" in class_path:
        raise ValueError(f"class_path must be 'module.Class', found {class_path!r}")
    state = {
        "word2idx": dict(vocab.word2idx),
        "idx2word": {int(i): w for i, w in vocab.idx2word.items()},
        "idx": int(vocab.idx),
    }
    body = pickle.dumps(state, protocol=2)  # PROTO 2 ... STOP; memo ids start at 0
    assert body[:2] == pickle.PROTO + b"\x02" and body[-1:] == pickle.STOP
    out = io.BytesIO()
    out.write(pickle.PROTO + b"\x02")
    out.write(pickle.GLOBAL + f"{module}\n{name}\n".encode("ascii"))
    out.write(pickle.EMPTY_TUPLE + pickle.NEWOBJ)
    out.write(body[2:-1])
    out.write(pickle.BUILD + pickle.STOP)
    return out.getvalue()


def save_vocab_pickle(vocab: Vocabulary, path: str | os.PathLike, class_path: str = "vocab.Vocabulary") -> Path:
    """Write ``vocab`` as VSRN's ``*_vocab.pkl`` (class ``vocab.Vocabulary``, protocol 2), atomically."""
    return write_bytes_atomic(path, vocabulary_pickle_bytes(vocab, class_path))


def save_vocab_json(vocab: Vocabulary, path: str | os.PathLike) -> Path:
    """Write ``vocab`` as SCAN's ``serialize_vocab`` does (``word2idx``, ``idx2word``, ``idx``)."""
    state = {"word2idx": vocab.word2idx, "idx2word": {str(i): w for i, w in vocab.idx2word.items()}, "idx": vocab.idx}
    return write_json_atomic(path, state, indent=None)


# -------------------------------------------------------------------------------------- building


def build_vocab(
    captions: Iterable[str | bytes],
    threshold: int = 4,
    tokenize: Callable[[str | bytes], list[str]] = word_tokenize,
) -> Vocabulary:
    """SCAN/VSRN ``build_vocab``: ``<pad>``=0 ``<start>``=1 ``<end>``=2 ``<unk>``=3, then every word
    seen at least ``threshold`` times, in order of first appearance.

    ``tokenize`` defaults to :func:`word_tokenize` (lower-cased NLTK words). The originals took the
    words in Python 2 dict order, which is arbitrary; ids of ordinary words therefore differ from a
    released vocabulary, while the special ids and the word set are the same.
    """
    if threshold < 1:
        raise ValueError(f"threshold must be >= 1, found {threshold}")
    counts: Counter[str] = Counter()
    for caption in captions:
        counts.update(tokenize(caption))
    vocab = Vocabulary()
    for token in SPECIAL_TOKENS:
        vocab.add_word(token)
    for word, count in counts.items():
        if count >= threshold:
            vocab.add_word(word)
    return vocab


def caption_to_ids(vocab: Vocabulary, caption: str | bytes) -> list[int]:
    """``[<start>] + ids of the caption's words + [<end>]``, as SCAN/VSRN datasets build targets."""
    return [vocab(START), *(vocab(word) for word in word_tokenize(caption)), vocab(END)]
