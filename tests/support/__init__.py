"""Test helpers, in one place: what more than one test file needs.

- :mod:`tests.support.media`: speech (espeak-ng through :mod:`vivify.engines.audio.espeak`),
  tones, noise and encoded files made on the fly, with their levels known exactly.
- :mod:`tests.support.images`: portraits and drawings as PNG bytes.
- :mod:`tests.support.waiting`: wait for a condition with a timeout instead of sleeping.
- :mod:`tests.support.live_server`: a real ``vivify serve`` (uvicorn) on a free loopback port.
- :mod:`tests.support.rtc`: what a peer connection received, frame by frame.
- :mod:`tests.support.video`: measures on received frames (mouth activity).
- :mod:`tests.support.livekit_room`: an in-process fake LiveKit room for the avatar protocol.

Fixtures stay in ``tests/conftest.py``; the modules here are plain functions and classes
that a test imports (``from tests.support.media import sine``).
"""
