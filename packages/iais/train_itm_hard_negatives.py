"""The original script name: ``python train_itm_hard_negatives.py --config config/...json [--IAIS singular]``.

Multi-process: ``torchrun --nproc_per_node N train_itm_hard_negatives.py --config ...`` (was
``horovodrun -np N python train_itm_hard_negatives.py ...``).
"""

from itr_iais.train_itm_hard_negatives import main

if __name__ == "__main__":
    raise SystemExit(main())
