"""The original script name: ``python train.py ...`` (or ``torchrun --nproc_per_node N train.py ...``)."""

from itr_dime.train import main

if __name__ == "__main__":
    main()
