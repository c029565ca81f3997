"""Host tools for the open smart insole (console script ``insole``)."""

__version__ = "0.1.0"
