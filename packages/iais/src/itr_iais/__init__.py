"""IAIS (ACL 2021): UNITER with intra-/inter-modal attention alignment and hard-negative ITM."""

__version__ = "0.1.0"
