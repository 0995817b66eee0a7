"""Text side shared by the papers: NLTK words, SCAN/VSRN vocabularies, BERT from ``--bert_path``."""

from __future__ import annotations

from itr_common.text.bert import (
    bert_config_from_json,
    encode_caption,
    encode_captions,
    find_bert_config,
    find_bert_weights,
    from_google_key_names,
    load_bert_model,
    load_bert_state_dict,
    load_bert_tokenizer,
    read_wordpiece_vocab,
    to_google_key_names,
)
from itr_common.text.tokenize import sent_tokenize, word_tokenize
from itr_common.text.vocab import (
    Vocabulary,
    build_vocab,
    caption_to_ids,
    load_vocab,
    save_vocab_json,
    save_vocab_pickle,
    vocabulary_pickle_bytes,
)

__all__ = [
    "Vocabulary",
    "bert_config_from_json",
    "build_vocab",
    "caption_to_ids",
    "encode_caption",
    "encode_captions",
    "find_bert_config",
    "find_bert_weights",
    "from_google_key_names",
    "load_bert_model",
    "load_bert_state_dict",
    "load_bert_tokenizer",
    "load_vocab",
    "read_wordpiece_vocab",
    "save_vocab_json",
    "save_vocab_pickle",
    "sent_tokenize",
    "to_google_key_names",
    "vocabulary_pickle_bytes",
    "word_tokenize",
]
