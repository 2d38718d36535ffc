"""Vivify inside voice-agent frameworks: LiveKit Agents (livekit.py) and Pipecat (pipecat.py).

Both sit on :mod:`vivify.streamer.integrations.avatar_session`: a session of the engines in this
process, or (remote.py) of a running ``vivify serve``. The framework packages are optional
extras (``pip install '.[livekit]'``, ``'.[pipecat]'``) and imported only by their modules.
"""
