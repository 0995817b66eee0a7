"""The original script name: ``python evaluate_models.py --model_path ... [--model_path2 ...] [--fold5]``."""

from itr_dime.evaluate_models import main

if __name__ == "__main__":
    main()
