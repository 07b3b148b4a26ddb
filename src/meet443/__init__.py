"""meet443: browser video meetings over outbound port 443."""

__version__ = "0.1.0"
