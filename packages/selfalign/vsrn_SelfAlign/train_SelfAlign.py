"""vsrn_SelfAlign/train_SelfAlign.py: the README's training script of VSRN+SelfAlign (see itr_selfalign.train)."""

from itr_selfalign.train import main_vsrn

if __name__ == "__main__":
    main_vsrn()
