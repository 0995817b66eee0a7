"""vsrn_SelfAlign/evaluate_models.py: evaluates VSRN(+SelfAlign) checkpoints (itr_selfalign.evaluate_models)."""

from itr_selfalign.evaluate_models import main_vsrn

if __name__ == "__main__":
    main_vsrn()
