"""The synthetic image-text world, written in each original data layout, with tiny checkpoints.

No dataset or pretrained weight can be downloaded, so every paper package is trained and tested on
this world, written in the exact original layouts and read by the same readers a user points at the
real COCO / Flickr30K files.

* :mod:`~itr_common.synthetic.world` - :class:`WorldConfig` (presets ``tiny``, ``small``, ``demo``,
  ``base``), :func:`generate_world`, :func:`shuffled_pairs` and
  :func:`with_shuffled_training_pairs` (the honesty control).
* :mod:`~itr_common.synthetic.layouts` - :func:`write_world`, :func:`write_honesty_worlds` (a world and its
  shuffled twin) and one writer per layout.
* :mod:`~itr_common.synthetic.checkpoints` - tiny BERT / UNITER / OSCAR checkpoints in the released formats.
* :mod:`~itr_common.synthetic.probe` - a closed-form word-region retrieval probe (learnability check).
* :mod:`~itr_common.synthetic.cli` - the ``itr-synth`` console script (``python -m itr_common.synthetic``).
"""

from __future__ import annotations

from itr_common.synthetic.checkpoints import (
    UNITER_BASE_CONFIG,
    UNITER_LARGE_CONFIG,
    bert_vocab_tokens,
    oscar_config_dict,
    oscar_state_dict_shapes,
    tiny_config,
    uniter_state_dict_shapes,
    write_bert_dir,
    write_oscar_checkpoint_dir,
    write_uniter_checkpoint,
)
from itr_common.synthetic.layouts import (
    LAYOUTS,
    write_bert,
    write_honesty_worlds,
    write_precomp,
    write_uniter,
    write_vinvl,
    write_vocabularies,
    write_world,
)
from itr_common.synthetic.world import (
    PRESETS,
    World,
    WorldConfig,
    WorldSplit,
    generate_world,
    preset,
    shuffled_pairs,
    with_shuffled_training_pairs,
)

__all__ = [
    "LAYOUTS",
    "PRESETS",
    "UNITER_BASE_CONFIG",
    "UNITER_LARGE_CONFIG",
    "World",
    "WorldConfig",
    "WorldSplit",
    "bert_vocab_tokens",
    "generate_world",
    "oscar_config_dict",
    "oscar_state_dict_shapes",
    "preset",
    "shuffled_pairs",
    "tiny_config",
    "with_shuffled_training_pairs",
    "uniter_state_dict_shapes",
    "write_bert",
    "write_bert_dir",
    "write_oscar_checkpoint_dir",
    "write_precomp",
    "write_uniter",
    "write_uniter_checkpoint",
    "write_vinvl",
    "write_vocabularies",
    "write_honesty_worlds",
    "write_world",
]
