"""The API's routes, one module per resource; streamer/server/app.py wires them together.

Each module has ``router(manager, ...)`` returning a FastAPI ``APIRouter`` whose handlers
close over the session manager. Routes are thin: they validate, call the avatar store or the
session manager, and raise :class:`vivify.streamer.server.errors.ApiError`, which the app maps
to ``{"error": {"code", "message"}}``.
"""
