"""The original script name: ``python eval_itm.py ...`` (see the package README).

Multi-process: ``torchrun --nproc_per_node N eval_itm.py ...`` (was ``horovodrun -np N python eval_itm.py ...``).
"""

from itr_lightningdot.eval_itm import main

if __name__ == "__main__":
    raise SystemExit(main())
