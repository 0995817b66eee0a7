"""SelfAlign: concept- and context-level self-supervised alignment on CAMERA and VSRN."""

__version__ = "0.1.0"
