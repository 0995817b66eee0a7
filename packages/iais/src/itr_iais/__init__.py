"""IAIS (ACL 2021): UNITER with intra-/inter-modal attention alignment and hard-negative ITM.

Modules: ``losses`` (rank hinge, IAIS singular/distributed, TSA weight), ``model`` (hard-negative UNITER),
``data`` (hard-negative groups, layouts), ``evaluate`` (all-pairs scoring, recall), ``optim`` (AdamW, lr schedule),
``options`` (the original flags and configs), ``train_itm_hard_negatives`` / ``inf_itm`` / ``reproduce`` /
``pretrain_itm`` (command lines), ``results_io`` (results.bin / results.npz).
"""

__version__ = "0.1.0"
