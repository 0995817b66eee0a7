"""ALADIN (CBMI 2022): alignment head distilled into a matching head on VinVL/OSCAR."""

__version__ = "0.1.0"
