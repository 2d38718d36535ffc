"""Errors a user can cause, each with a message that says what to do.

The server maps ``AvatarInputError`` subclasses to 4xx responses with ``code``; anything else is
our bug and becomes a 500.
"""

from __future__ import annotations


class AvatarInputError(ValueError):
    """The portrait cannot be used; ``code`` is a stable machine-readable reason."""

    code = "invalid_image"


class NotAnImageError(AvatarInputError):
    """No such file, an empty one, or bytes no image format recognises."""

    code = "not_an_image"


class CorruptImageError(AvatarInputError):
    """A known image format whose data is damaged or cut short (the decoder failed)."""

    code = "corrupt_image"


class ImageTooLargeError(AvatarInputError):
    """Over the byte or pixel limit (``image_io.MAX_BYTES``, ``MAX_PIXELS``), checked from the
    file size and the image header before decoding, so a decompression bomb costs no memory."""

    code = "image_too_large"


class ImageTooSmallError(AvatarInputError):
    """A side under ``image_io.MIN_SIDE`` pixels once the EXIF orientation is applied."""

    code = "image_too_small"


class NoFaceError(AvatarInputError):
    """No face found, even on the face search's conditioned copies (equalised, denoised,
    rescaled, slightly rotated); placing the points by hand avoids it."""

    code = "no_face"


class FaceTooSmallError(AvatarInputError):
    """The face is there but too small to animate: its eyes are closer than the minimum
    distance in pixels (given points or found ones alike)."""

    code = "face_too_small"
