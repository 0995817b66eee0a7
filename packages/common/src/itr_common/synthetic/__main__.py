"""``python -m itr_common.synthetic``: the ``itr-synth`` console script."""

from __future__ import annotations

from itr_common.synthetic.cli import main

if __name__ == "__main__":
    main()
