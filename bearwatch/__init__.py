"""bearwatch: a streaming financial-news sentiment monitor.

The serving side lives in :mod:`monitor`, the model-building side in :mod:`training`; this package
only holds the version and the command line that wires them up.
"""

__version__ = "0.1.0"
