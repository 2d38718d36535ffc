"""Errors a user can cause, each with a message that says what to do.

The server maps ``AvatarInputError`` subclasses to 4xx responses with ``code``; anything else is
our bug and becomes a 500.
"""

from __future__ import annotations


class AvatarInputError(ValueError):
    """The portrait cannot be used; ``code`` is a stable machine-readable reason."""

    code = "invalid_image"


class NotAnImageError(AvatarInputError):
    code = "not_an_image"


class CorruptImageError(AvatarInputError):
    code = "corrupt_image"


class ImageTooLargeError(AvatarInputError):
    code = "image_too_large"


class ImageTooSmallError(AvatarInputError):
    code = "image_too_small"


class NoFaceError(AvatarInputError):
    code = "no_face"


class FaceTooSmallError(AvatarInputError):
    code = "face_too_small"
