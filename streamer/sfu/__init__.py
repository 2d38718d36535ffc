"""Viewers through an SFU (issue 18): a broadcast publishes once into Janus's VideoRoom."""
