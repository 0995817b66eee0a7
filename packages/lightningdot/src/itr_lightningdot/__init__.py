"""LightningDOT (NAACL 2021): two-tower pre-training for real-time retrieval, UNITER re-ranking."""

__version__ = "0.1.0"
