"""The original script name: ``cd alad && python train.py ...`` (or ``torchrun --nproc_per_node N train.py ...``)."""

from itr_aladin.train import main

if __name__ == "__main__":
    main()
