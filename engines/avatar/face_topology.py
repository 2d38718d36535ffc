"""Named index lists into MediaPipe's 478-point face mesh (468 mesh points + 2×5 iris points).

Why a module of its own: the rig, the renderer's layers and avatar preparation all need the same
groups, and a typo in one copy would silently move the wrong skin. Lists that describe a contour
run in order along it. "Right"/"left" are the subject's, so the right eye is on the image's left.
"""

from __future__ import annotations

N_LANDMARKS = 478

LIPS_UPPER_OUTER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LIPS_LOWER_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
LIPS_UPPER_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIPS_LOWER_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
MOUTH_CORNERS = (61, 291, 78, 308)

# Upper and lower lids, corner to corner, so upper[k] sits above lower[k].
RIGHT_EYE_UPPER = (33, 246, 161, 160, 159, 158, 157, 173, 133)
RIGHT_EYE_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
LEFT_EYE_UPPER = (362, 398, 384, 385, 386, 387, 388, 466, 263)
LEFT_EYE_LOWER = (362, 382, 381, 380, 374, 373, 390, 249, 263)

RIGHT_BROW = (46, 53, 52, 65, 55, 70, 63, 105, 66, 107)
LEFT_BROW = (276, 283, 282, 295, 285, 300, 293, 334, 296, 336)
# Brow points nearest the nose, which move most in a frown.
BROW_INNER = (55, 65, 107, 66, 285, 295, 336, 296)

FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)
CHIN = 152
FOREHEAD = 10
NOSE = (1, 4, 5, 6, 168, 197, 195, 2, 98, 327, 129, 358)
NOSE_BRIDGE = 168
NOSE_TIP = 1
# Soft tissue between the lower lip and the chin: it rides on the jaw.
LOWER_FACE = (18, 200, 199, 175, 83, 313, 201, 421, 194, 418, 32, 262)
CHEEKS = (50, 280, 205, 425, 117, 346, 187, 411, 36, 266)
# Points at the jaw hinge height (near the ears); the jaw rotates below them.
JAW_HINGE = (234, 454)

RIGHT_IRIS_CENTER = 468
RIGHT_IRIS = (468, 469, 470, 471, 472)
LEFT_IRIS_CENTER = 473
LEFT_IRIS = (473, 474, 475, 476, 477)

# The landmarks that become warp control points (the rest ride along through the dense flow).
CONTROL_LANDMARKS: tuple[int, ...] = tuple(dict.fromkeys(
    LIPS_UPPER_OUTER + LIPS_LOWER_OUTER + LIPS_UPPER_INNER + LIPS_LOWER_INNER
    + RIGHT_EYE_UPPER + RIGHT_EYE_LOWER + LEFT_EYE_UPPER + LEFT_EYE_LOWER
    + RIGHT_BROW + LEFT_BROW + FACE_OVAL + NOSE + LOWER_FACE + CHEEKS
))
