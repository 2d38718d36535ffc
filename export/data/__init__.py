"""Synthetic training corpus for the learned motion generator (issue 3): speech synthesised by
espeak-ng with exact phoneme timings → visemes → rig motion labels. See ``docs/generator.md``."""
