"""The original script name: ``python train_itm.py ...`` (see the package README).

Multi-process: ``torchrun --nproc_per_node N train_itm.py ...`` (was ``horovodrun -np N python train_itm.py ...``).
"""

from itr_lightningdot.train_itm import main

if __name__ == "__main__":
    raise SystemExit(main())
