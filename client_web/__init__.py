"""The browser client, served by ``vivify serve`` (package data, read with importlib.resources)."""
