"""Model files that ship with the package (read with importlib.resources)."""
