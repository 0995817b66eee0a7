"""Readers and writers of the papers' data layouts.

* :mod:`itr_common.data.precomp` - SCAN "precomp" ``.npy`` features + ``.txt`` captions
  (DIME, SelfAlign; VSRN/CAMERA bases).
* :mod:`itr_common.data.uniter_lmdb` - UNITER ``txt_db`` / ``img_db`` LMDBs (IAIS, LightningDOT).
* :mod:`itr_common.data.vinvl_tsv` - VinVL/OSCAR ``features.tsv`` + ``.lineidx``, ``predictions.tsv``,
  coco_ir ``{split}_captions.pt`` and ``test_img_keys*.tsv`` (ALADIN).
"""

from itr_common.data.precomp import (
    PrecompDataset,
    PrecompSplit,
    captions_per_image,
    collate_sorted_by_length,
    write_precomp_split,
)
from itr_common.data.uniter_lmdb import (
    DetectFeatLmdb,
    TxtLmdb,
    TxtTokLmdb,
    check_consistency,
    compute_num_bb,
    get_ids_and_lens,
    open_lmdb,
    write_img_db,
    write_txt_db,
)
from itr_common.data.vinvl_tsv import (
    FeatureTSV,
    PredictionsTSV,
    TSVFile,
    VinVLRetrievalSplit,
    load_captions_pt,
    read_img_keys,
    write_captions_pt,
    write_features_tsv,
    write_img_keys,
    write_predictions_tsv,
)

__all__ = [
    "FeatureTSV",
    "PredictionsTSV",
    "TSVFile",
    "VinVLRetrievalSplit",
    "load_captions_pt",
    "read_img_keys",
    "write_captions_pt",
    "write_features_tsv",
    "write_img_keys",
    "write_predictions_tsv",
    "DetectFeatLmdb",
    "PrecompDataset",
    "PrecompSplit",
    "TxtLmdb",
    "TxtTokLmdb",
    "captions_per_image",
    "check_consistency",
    "collate_sorted_by_length",
    "compute_num_bb",
    "get_ids_and_lens",
    "open_lmdb",
    "write_img_db",
    "write_precomp_split",
    "write_txt_db",
]
