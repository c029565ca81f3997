"""The device image: build, flash over mpremote, type check of the firmware, .mpy
sizes (mpyinfo) and heap maps (heapmap)."""
