"""One table for five papers: the ``itr-reproduce`` driver (``make reproduce``) and the ``make bench`` report.

Every paper package is reached through its own command line (``subprocess``), never imported, so
``itr_common`` stays independent of the packages:

* :mod:`~itr_common.compare.plan` - the runs (each package's README train + evaluation commands on one world);
* :mod:`~itr_common.compare.table` - rows from the result JSONs: Markdown, CSV, JSON;
* :mod:`~itr_common.compare.plot` - rsum against latency per query (log x), PNG;
* :mod:`~itr_common.compare.realdata` - ``--data-root`` / ``--checkpoints``: the files each paper needs;
* :mod:`~itr_common.compare.bench_report` - every ``bench_out/*.json`` in one report with the papers' speed ratios;
* :mod:`~itr_common.compare.cli` - ``itr-reproduce``.
"""
