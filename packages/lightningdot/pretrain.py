"""The original script name: ``python pretrain.py --config config/pretrain-alldata-base.json``.

Multi-process: ``torchrun --nproc_per_node N pretrain.py --config ...`` (was ``horovodrun -np N python pretrain.py``).
"""

from itr_lightningdot.pretrain import main

if __name__ == "__main__":
    raise SystemExit(main())
