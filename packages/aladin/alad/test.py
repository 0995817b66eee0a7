"""The original script name: ``cd alad && python test.py ...``."""

from itr_aladin.test import main

if __name__ == "__main__":
    main()
