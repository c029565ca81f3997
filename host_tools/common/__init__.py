"""Helpers every part uses: argument checks (argcheck), atomic files and one-line
errors (safeio), live terminal lines (liveline)."""
