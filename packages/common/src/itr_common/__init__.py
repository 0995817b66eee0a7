"""Shared infrastructure of the image-text retrieval reproductions (import name ``itr_common``)."""

__version__ = "0.1.0"
