"""Face detection, 478-point face mesh and person segmentation on MediaPipe's .tflite models.

MediaPipe's own graphs (and its numpy-1-only package) are not used: this module re-implements
what those graphs do around the models, with LiteRT running the models themselves:

* detection: BlazeFace short range (128 px, faces filling much of the frame), falling back to
  the full-range model (192 px) when that finds nothing; letterboxed input, SSD anchors,
  weighted non-maximum suppression, as in ``face_detection_*.pbtxt``;
* mesh: the 468-point ``face_landmark`` model on a crop rotated so the eyes are level, then
  again on crops recomputed from its own landmarks (what MediaPipe does from one video frame
  to the next) until the crop settles;
* iris: ``iris_landmark`` on a crop around each eye, giving the 10 iris points 468..477 of
  MediaPipe's "refined" 478-point layout and a finer eye, lid and brow contour;
* segmentation: the general 256×256 selfie model, for separating head and hair from the
  background.

Coordinates are image pixels with OpenCV's convention (pixel centres at integers) throughout.
Model tensors use MediaPipe's convention (0..size from the first pixel's edge to the last
pixel's edge); the affine maps below convert between the two. ``FaceAnalyzer`` holds LiteRT
interpreters, which are not thread-safe: use one analyzer per thread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from ai_edge_litert.interpreter import Interpreter

from vivify.engines.avatar import model_store

# --- face detection (face_detection_short_range.pbtxt / face_detection_full_range.pbtxt) ---
SHORT_RANGE_SIZE_PX = 128  # model input side
SHORT_RANGE_STRIDES = (8, 16, 16, 16)  # px per anchor cell, one entry per SSD layer
SHORT_RANGE_ANCHORS_PER_LAYER = 2  # aspect 1.0 plus the interpolated-scale anchor
FULL_RANGE_SIZE_PX = 192
FULL_RANGE_STRIDES = (4,)
FULL_RANGE_ANCHORS_PER_LAYER = 1  # interpolated_scale_aspect_ratio 0 -> no extra anchor
DETECTOR_INPUT_RANGE = (-1.0, 1.0)  # RGB 0..255 mapped linearly to this range
SCORE_CLIP_LOGIT = 100.0  # raw scores clipped to ±this before the sigmoid
NMS_IOU = 0.3  # boxes overlapping more than this are merged (weighted by score)
NUM_DETECTION_KEYPOINTS = 6

# --- face mesh (face_landmark_cpu.pbtxt, face_detection_front_detection_to_roi.pbtxt) ---
MESH_SIZE_PX = 192
MESH_INPUT_RANGE = (0.0, 1.0)
MESH_ROI_SCALE = 1.5  # crop side / longer side of the face box
NUM_MESH_POINTS = 468
NUM_LANDMARKS = 478
ROLL_LANDMARKS = (33, 263)  # outer eye corners, subject's right then left: sets the crop roll
# The mesh is re-run on a crop recomputed from its own landmarks until that crop settles:
# the detector's box is coarse, and one refinement is not always enough for tilted faces
# (measured on astronaut rotated by 35°: 1.2% → 0.5% of the eye distance, mean point error).
MAX_MESH_PASSES = 3
ROI_SETTLED_SHIFT = 0.01  # centre moved less than this fraction of the crop side
ROI_SETTLED_SCALE = 0.02  # side changed by less than this fraction
ROI_SETTLED_ROLL_DEG = 1.0

# --- iris (iris_landmark_cpu.pbtxt, iris_landmark_landmarks_to_roi.pbtxt) ---
IRIS_SIZE_PX = 64
IRIS_INPUT_RANGE = (0.0, 1.0)
IRIS_ROI_SCALE = 2.3  # crop side / eye corner-to-corner distance
# Iris points, as in MediaPipe's 478-point mesh: centre, then the iris edge towards +x, -y,
# -x, +y of the upright face (image right, up, left, down for a frontal face).
NUM_IRIS_POINTS = 5
MIRRORED_IRIS_ORDER = (0, 3, 2, 1, 4)  # a mirrored eye crop swaps the +x and -x edge points
RIGHT_EYE_CORNERS = (33, 133)  # subject's right eye, outer then inner corner
LEFT_EYE_CORNERS = (362, 263)  # subject's left eye, inner then outer corner
NUM_EYE_CONTOUR_POINTS = 71
RIGHT_IRIS_START = 468  # subject's right eye (corners 33/133, image left for a frontal face)
LEFT_IRIS_START = 473  # subject's left eye (corners 362/263)

# Mesh indices of the iris model's 71 eye-contour points (UpdateFaceLandmarksCalculator and
# tensors_to_face_landmarks_with_attention.pbtxt): lid contour (16), three halos, brow. They
# replace the mesh's x, y there (as MediaPipe's iris graph does); the mesh keeps its z.
RIGHT_EYE_CONTOUR = (
    33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173,
    130, 25, 110, 24, 23, 22, 26, 112, 243, 247, 30, 29, 27, 28, 56, 190,
    226, 31, 228, 229, 230, 231, 232, 233, 244, 113, 225, 224, 223, 222, 221, 189,
    35, 124, 46, 53, 52, 65,
    143, 111, 117, 118, 119, 120, 121, 128, 245, 156, 70, 63, 105, 66, 107, 55, 193,
)  # fmt: skip
LEFT_EYE_CONTOUR = (
    263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398,
    359, 255, 339, 254, 253, 252, 256, 341, 463, 467, 260, 259, 257, 258, 286, 414,
    446, 261, 448, 449, 450, 451, 452, 453, 464, 342, 445, 444, 443, 442, 441, 413,
    265, 353, 276, 283, 282, 295,
    372, 340, 346, 347, 348, 349, 350, 357, 465, 383, 300, 293, 334, 296, 336, 285, 417,
)  # fmt: skip
NUM_LID_POINTS = 16  # the first 16 contour points outline the eyelids

# --- segmentation (selfie_segmentation_cpu.pbtxt, general model) ---
SEGMENTATION_SIZE_PX = 256  # the image is stretched to this square, as MediaPipe does
SEGMENTATION_INPUT_RANGE = (0.0, 1.0)

# Above this many image pixels per tensor pixel, crops are pre-shrunk with area averaging so
# that bilinear sampling does not alias (MediaPipe samples bilinearly at any scale).
MAX_BILINEAR_DOWNSCALE = 2.0


@dataclass(frozen=True)
class FaceDetection:
    """One detected face in image pixels.

    ``keypoints`` rows, in MediaPipe's order: subject's right eye, left eye, nose tip, mouth
    centre, right ear tragion, left ear tragion.
    """

    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    score: float
    keypoints: np.ndarray  # (6, 2) float32


@dataclass(frozen=True)
class _Roi:
    """A square, rotated crop: centre (px), side (px), rotation (radians, y down)."""

    center: np.ndarray
    size: float
    angle: float

    def affine(self, tensor_px: int, flip: bool = False) -> np.ndarray:
        """2×3 map from tensor coordinates (edge convention) to image pixels (OpenCV's)."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        linear = np.array([[c, -s], [s, c]]) * (self.size / tensor_px)
        if flip:  # mirror the crop horizontally: the iris model only knows one eye
            linear[:, 0] = -linear[:, 0]
        offset = self.center - linear @ np.array([tensor_px / 2.0, tensor_px / 2.0])
        return np.hstack([linear, offset[:, None]])

    def close_to(self, other: _Roi) -> bool:
        """Whether re-running the mesh on ``self`` instead of ``other`` would change little."""
        shift = float(np.hypot(*(self.center - other.center))) / other.size
        roll = abs(math.remainder(self.angle - other.angle, math.tau))
        return (
            shift < ROI_SETTLED_SHIFT
            and abs(self.size / other.size - 1.0) < ROI_SETTLED_SCALE
            and roll < math.radians(ROI_SETTLED_ROLL_DEG)
        )


def _roi_from_points(points: np.ndarray, start: np.ndarray, end: np.ndarray, scale: float) -> _Roi:
    """Square crop around ``points``, rolled so ``start -> end`` is horizontal, scaled.

    The box is measured in the rolled frame rather than axis-aligned (MediaPipe's choice) so a
    tilted face gets the same crop as an upright one.
    """
    d = end - start
    angle = math.atan2(float(d[1]), float(d[0]))
    c, s = math.cos(angle), math.sin(angle)
    to_roi = np.array([[c, s], [-s, c]])  # inverse rotation
    local = points @ to_roi.T
    lo, hi = local.min(axis=0), local.max(axis=0)
    center = to_roi.T @ ((lo + hi) / 2.0)
    return _Roi(center=center, size=float((hi - lo).max()) * scale, angle=angle)


def _roi_from_detection(face: FaceDetection) -> _Roi:
    """MediaPipe's detection-to-ROI: box centre, eyes level, longer side × 1.5."""
    x0, y0, x1, y1 = face.box
    d = face.keypoints[1].astype(np.float64) - face.keypoints[0]
    return _Roi(
        center=np.array([(x0 + x1) / 2.0, (y0 + y1) / 2.0]),
        size=max(x1 - x0, y1 - y0) * MESH_ROI_SCALE,
        angle=math.atan2(float(d[1]), float(d[0])),
    )


def _to_range(image: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    lo, hi = value_range
    return (image.astype(np.float32) * np.float32((hi - lo) / 255.0) + np.float32(lo))[None]


def _warp(rgb: np.ndarray, tensor_to_image: np.ndarray, tensor_px: int) -> np.ndarray:
    """Sample the crop described by ``tensor_to_image`` into a tensor_px² image.

    Borders replicate edge pixels (MediaPipe's crop border mode). Strong downscales are first
    area-averaged on just the region the crop covers.
    """
    m = tensor_to_image.astype(np.float64).copy()
    m[:, 2] += m[:, :2] @ np.array([0.5, 0.5])  # tensor pixel centres (OpenCV) -> image
    src = rgb
    step = math.sqrt(abs(np.linalg.det(m[:, :2])))  # image px per tensor px
    if step > MAX_BILINEAR_DOWNSCALE:
        corners = np.array([[0, 0, 1], [tensor_px, 0, 1], [0, tensor_px, 1], [tensor_px] * 2 + [1]])
        pts = corners @ m.T
        h, w = rgb.shape[:2]
        x0, y0 = np.maximum(np.floor(pts.min(axis=0)).astype(int) - 2, 0)
        x1, y1 = np.minimum(np.ceil(pts.max(axis=0)).astype(int) + 3, [w, h])
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            region = rgb[y0:y1, x0:x1]
            new_w = max(2, round((x1 - x0) / step))
            new_h = max(2, round((y1 - y0) / step))
            src = cv2.resize(region, (new_w, new_h), interpolation=cv2.INTER_AREA)
            fx, fy = new_w / (x1 - x0), new_h / (y1 - y0)
            # image px -> small px (edge-aligned resize): u' = (u - x0 + 0.5) * fx - 0.5
            shrink = np.array([[fx, 0.0, (0.5 - x0) * fx - 0.5], [0.0, fy, (0.5 - y0) * fy - 0.5]])
            m = shrink[:, :2] @ m
            m[:, 2] += shrink[:, 2]
    return cv2.warpAffine(
        src,
        m,
        (tensor_px, tensor_px),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )


def _apply(affine: np.ndarray, xy: np.ndarray) -> np.ndarray:
    return xy @ affine[:, :2].T + affine[:, 2]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def _checked_rgb(rgb: np.ndarray) -> np.ndarray:
    """The image as OpenCV wants it (contiguous), or a clear error for a wrong layout."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or 0 in rgb.shape:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {rgb.dtype} {rgb.shape}")
    return np.ascontiguousarray(rgb)


class _Model:
    """One LiteRT interpreter with its input and outputs looked up by name."""

    def __init__(self, name: str, num_threads: int) -> None:
        path = model_store.model_path(name)
        self._interp = Interpreter(model_path=str(path), num_threads=num_threads)
        self._interp.allocate_tensors()
        self._input = self._interp.get_input_details()[0]["index"]
        self._outputs = {d["name"]: d["index"] for d in self._interp.get_output_details()}

    def __call__(self, tensor: np.ndarray) -> dict[str, np.ndarray]:
        self._interp.set_tensor(self._input, np.ascontiguousarray(tensor, dtype=np.float32))
        self._interp.invoke()
        return {name: self._interp.get_tensor(i) for name, i in self._outputs.items()}


def _anchor_centres(size_px: int, strides: tuple[int, ...], per_layer: int) -> np.ndarray:
    """SSD anchor centres in tensor pixels, MediaPipe's SsdAnchorsCalculator order.

    With ``fixed_anchor_size`` every anchor is 1×1 (normalised), so only centres matter;
    consecutive layers with the same stride share one grid and stack their anchors.
    """
    groups = []
    i = 0
    while i < len(strides):
        stride, n = strides[i], 0
        while i < len(strides) and strides[i] == stride:
            n, i = n + per_layer, i + 1
        cells = math.ceil(size_px / stride)
        ys, xs = np.mgrid[0:cells, 0:cells]
        grid = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32)
        groups.append(np.repeat((grid + 0.5) * (size_px / cells), n, axis=0))
    return np.concatenate(groups)


class _BlazeFace:
    """A BlazeFace detector: letterboxed input, decoded boxes and keypoints in image pixels."""

    def __init__(
        self, name: str, size_px: int, strides: tuple[int, ...], per_layer: int, num_threads: int
    ) -> None:
        self.model = _Model(name, num_threads)
        self.size = size_px
        self.anchors = _anchor_centres(size_px, strides, per_layer)

    def __call__(self, rgb: np.ndarray, min_score: float) -> list[FaceDetection]:
        h, w = rgb.shape[:2]
        scale = self.size / max(h, w)
        new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
        # MediaPipe samples bilinearly; area averaging does not alias and scored small faces
        # higher in our checks (with MediaPipe's sampling the outputs match it exactly).
        interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
        canvas = np.zeros((self.size, self.size, 3), np.uint8)  # black letterbox bars
        pad_x, pad_y = (self.size - new_w) // 2, (self.size - new_h) // 2
        canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = cv2.resize(
            rgb, (new_w, new_h), interpolation=interp
        )
        out = self.model(_to_range(canvas, DETECTOR_INPUT_RANGE))
        raw_boxes = next(v for v in out.values() if v.shape[-1] == 4 + 2 * NUM_DETECTION_KEYPOINTS)
        raw_scores = next(v for v in out.values() if v.shape[-1] == 1)
        scores = _sigmoid(np.clip(raw_scores[0, :, 0], -SCORE_CLIP_LOGIT, SCORE_CLIP_LOGIT))
        keep = np.flatnonzero(scores >= min_score)
        if keep.size == 0:
            return []
        raw = raw_boxes[0, keep].astype(np.float64)
        anchors = self.anchors[keep].astype(np.float64)
        # Offsets are in tensor pixels (x/y/w/h scale == input size, anchor size 1).
        centre = raw[:, 0:2] + anchors
        half = raw[:, 2:4] / 2.0
        boxes = np.hstack([centre - half, centre + half])
        kps = raw[:, 4:].reshape(-1, NUM_DETECTION_KEYPOINTS, 2) + anchors[:, None, :]
        # Tensor (edge convention) -> image pixels (OpenCV convention), undoing the letterbox.
        fx, fy = new_w / w, new_h / h

        def to_image(xy: np.ndarray) -> np.ndarray:
            return (xy - [pad_x, pad_y]) / [fx, fy] - 0.5

        boxes = np.hstack([to_image(boxes[:, :2]), to_image(boxes[:, 2:])])
        kps = to_image(kps)
        return _weighted_nms(boxes, kps, scores[keep], NMS_IOU)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    lo = np.maximum(box[:2], boxes[:, :2])
    hi = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0.0, None), axis=1)
    area = np.prod(box[2:] - box[:2])
    areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    return inter / np.maximum(area + areas - inter, 1e-9)


def _weighted_nms(
    boxes: np.ndarray, kps: np.ndarray, scores: np.ndarray, iou: float
) -> list[FaceDetection]:
    """MediaPipe's WEIGHTED suppression: each cluster becomes its score-weighted mean.

    Averaging the overlapping anchors (rather than keeping the best) steadies the box and
    keypoints from frame to frame; the cluster keeps its best score.
    """
    remaining = np.argsort(-scores, kind="stable")
    faces = []
    while remaining.size:
        overlap = _iou(boxes[remaining[0]], boxes[remaining])
        cluster, remaining = remaining[overlap > iou], remaining[overlap <= iou]
        if cluster.size == 0:  # degenerate box (no area): keep it as it is
            cluster, remaining = remaining[:1], remaining[1:]
        weights = scores[cluster] / scores[cluster].sum()
        box = weights @ boxes[cluster]
        faces.append(
            FaceDetection(
                box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])),
                score=float(scores[cluster[0]]),
                keypoints=np.tensordot(weights, kps[cluster], axes=1).astype(np.float32),
            )
        )
    return faces


class FaceAnalyzer:
    """Finds faces, their 478 MediaPipe landmarks, and the person mask in RGB images."""

    def __init__(self, num_threads: int = 1) -> None:
        self._short = _BlazeFace(
            "face_detection_short_range",
            SHORT_RANGE_SIZE_PX,
            SHORT_RANGE_STRIDES,
            SHORT_RANGE_ANCHORS_PER_LAYER,
            num_threads,
        )
        self._full = _BlazeFace(
            "face_detection_full_range_sparse",
            FULL_RANGE_SIZE_PX,
            FULL_RANGE_STRIDES,
            FULL_RANGE_ANCHORS_PER_LAYER,
            num_threads,
        )
        self._mesh = _Model("face_landmark", num_threads)
        self._iris = _Model("iris_landmark", num_threads)
        self._segmenter = _Model("selfie_segmentation", num_threads)

    def detect(self, rgb: np.ndarray, min_score: float = 0.5) -> list[FaceDetection]:
        """Faces in an HxWx3 uint8 RGB image, largest box first.

        The short-range model covers faces that fill a good part of the frame (webcam,
        portrait); only when it finds none is the full-range model asked, for small or far
        faces. ``min_score`` applies to both (MediaPipe's full-range graph uses 0.6).
        """
        rgb = _checked_rgb(rgb)
        faces = self._short(rgb, min_score) or self._full(rgb, min_score)
        return sorted(faces, key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))

    def landmarks(self, rgb: np.ndarray, face: FaceDetection) -> np.ndarray:
        """(478, 3) float32 landmarks of ``face``: x, y in image pixels, z in the same scale.

        z is MediaPipe's relative depth: smaller is closer to the camera, about zero on
        average over the mesh (the nose tip is negative). Indices follow MediaPipe's refined
        face mesh: 0..467 the mesh, 468..472 the subject's right iris (centre first, the eye
        around points 33/133, image left for a frontal face), 473..477 the left iris.
        """
        return self.landmarks_with_presence(rgb, face)[0]

    def landmarks_with_presence(
        self, rgb: np.ndarray, face: FaceDetection
    ) -> tuple[np.ndarray, float]:
        """Like ``landmarks``, plus the mesh model's face-presence probability (0..1).

        A low presence (MediaPipe drops faces below 0.5) means the crop holds no real face,
        e.g. a false detection; the points are then meaningless.
        """
        rgb = _checked_rgb(rgb)
        roi = _roi_from_detection(face)
        mesh, presence = self._run_mesh(rgb, roi)
        for _ in range(MAX_MESH_PASSES - 1):
            start, end = mesh[ROLL_LANDMARKS[0], :2], mesh[ROLL_LANDMARKS[1], :2]
            new_roi = _roi_from_points(mesh[:, :2], start, end, MESH_ROI_SCALE)
            if new_roi.close_to(roi):
                break
            roi = new_roi
            mesh, presence = self._run_mesh(rgb, roi)
        points = np.zeros((NUM_LANDMARKS, 3), np.float64)
        points[:NUM_MESH_POINTS] = mesh
        for corners, contour, first, flip in (
            (RIGHT_EYE_CORNERS, RIGHT_EYE_CONTOUR, RIGHT_IRIS_START, False),
            (LEFT_EYE_CORNERS, LEFT_EYE_CONTOUR, LEFT_IRIS_START, True),
        ):
            iris, eye = self._run_iris(rgb, mesh[corners[0], :2], mesh[corners[1], :2], flip)
            iris_rows = slice(first, first + NUM_IRIS_POINTS)
            points[iris_rows, :2] = iris
            # MediaPipe's refined mesh puts each iris at the mean depth of its eyelids.
            points[iris_rows, 2] = mesh[list(contour[:NUM_LID_POINTS]), 2].mean()
            points[list(contour), :2] = eye
        return points.astype(np.float32), presence

    def segment_person(self, rgb: np.ndarray) -> np.ndarray:
        """HxW float32 person probability (0..1; head, hair, body) at image resolution."""
        rgb = _checked_rgb(rgb)
        h, w = rgb.shape[:2]
        size = SEGMENTATION_SIZE_PX
        interp = cv2.INTER_AREA if max(h, w) > size else cv2.INTER_LINEAR
        small = cv2.resize(rgb, (size, size), interpolation=interp)
        out = next(iter(self._segmenter(_to_range(small, SEGMENTATION_INPUT_RANGE)).values()))
        mask = cv2.resize(out[0, :, :, 0], (w, h), interpolation=cv2.INTER_LINEAR)
        return np.clip(mask, 0.0, 1.0).astype(np.float32)

    def _run_mesh(self, rgb: np.ndarray, roi: _Roi) -> tuple[np.ndarray, float]:
        affine = roi.affine(MESH_SIZE_PX)
        crop = _warp(rgb, affine, MESH_SIZE_PX)
        out = self._mesh(_to_range(crop, MESH_INPUT_RANGE))
        raw = out["conv2d_21"].reshape(NUM_MESH_POINTS, 3).astype(np.float64)
        presence = float(_sigmoid(out["conv2d_31"].reshape(())))
        mesh = np.empty_like(raw)
        mesh[:, :2] = _apply(affine, raw[:, :2])
        mesh[:, 2] = raw[:, 2] * (roi.size / MESH_SIZE_PX)
        return mesh, presence

    def _run_iris(
        self, rgb: np.ndarray, corner_a: np.ndarray, corner_b: np.ndarray, flip: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Iris (5, 2) and eye contour (71, 2) in image pixels for one eye.

        The crop is centred between the eye corners, rolled so they are level, 2.3× their
        distance wide; the subject's left eye is mirrored because the model only knows the
        right one, and the mirrored affine maps its output straight back.
        """
        d = corner_b - corner_a
        roi = _Roi(
            center=(corner_a + corner_b) / 2.0,
            size=float(np.hypot(*d)) * IRIS_ROI_SCALE,
            angle=math.atan2(float(d[1]), float(d[0])),
        )
        affine = roi.affine(IRIS_SIZE_PX, flip=flip)
        crop = _warp(rgb, affine, IRIS_SIZE_PX)
        out = self._iris(_to_range(crop, IRIS_INPUT_RANGE))
        iris = out["output_iris"].reshape(NUM_IRIS_POINTS, 3)[:, :2].astype(np.float64)
        if flip:
            iris = iris[list(MIRRORED_IRIS_ORDER)]
        eye = out["output_eyes_contours_and_brows"].reshape(NUM_EYE_CONTOUR_POINTS, 3)
        return _apply(affine, iris), _apply(affine, eye[:, :2].astype(np.float64))
