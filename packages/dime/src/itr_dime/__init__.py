"""DIME (SIGIR 2021): dynamic modality interaction modeling."""

__version__ = "0.1.0"
