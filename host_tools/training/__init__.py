"""Exercises on the host: the exercise counters over a trace (exercises), synthetic
exercise traces (exgen) and the training history database (history)."""
