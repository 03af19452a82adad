"""The common crop: the largest rectangle that holds valid pixels in every stabilized frame."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from skylapse.imaging.affine import invert


def common_crop(
    transforms: Sequence[np.ndarray], size: tuple[int, int]
) -> tuple[int, int, int, int]:
    """The largest rectangle ``(x, y, w, h)`` that holds valid pixels in every warped frame.

    ``size`` is the source ``(width, height)``. The rectangle has the source's aspect ratio (to
    rounding; ``w`` and ``h`` are even, as 4:2:0 video needs) and lies, for every frame, inside
    the quadrilateral onto which the transform maps the frame's pixel centres. A rectangle of
    fixed aspect inside an intersection of half-planes is a linear programme in its centre and
    size; the size is concave in the centre, which is found by a shrinking grid search.
    """
    width, height = size
    aspect = width / height
    quad = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], float)
    normals, offsets = [], []
    for m in transforms:
        q = quad @ np.asarray(m)[:, :2].T + np.asarray(m)[:, 2]
        e1, e2 = q[1] - q[0], q[2] - q[0]
        area2 = e1[0] * e2[1] - e1[1] * e2[0]
        for k in range(4):
            a, b = q[k], q[(k + 1) % 4]
            edge = b - a
            n = np.array([edge[1], -edge[0]])  # outward for a clockwise-in-y-down quad
            if area2 < 0:
                n = -n
            n /= np.linalg.norm(n)
            normals.append(n)
            offsets.append(n @ a)
    normals_a = np.array(normals)
    offsets_a = np.array(offsets)
    # the rectangle corner that is furthest along n: half extents (s*aspect/2, s/2) for height s
    reach = np.abs(normals_a[:, 0]) * aspect / 2 + np.abs(normals_a[:, 1]) / 2

    def height_at(cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
        slack = offsets_a[None, :] - (cx[:, None] * normals_a[:, 0] + cy[:, None] * normals_a[:, 1])
        heights: np.ndarray = (slack / reach[None, :]).min(axis=1)
        return heights

    cx, cy = (width - 1) / 2, (height - 1) / 2
    step = max(width, height) / 8
    for _ in range(40):
        gx, gy = np.meshgrid(np.arange(-4, 5) * step + cx, np.arange(-4, 5) * step + cy)
        hs = height_at(gx.ravel(), gy.ravel())
        best = int(np.argmax(hs))
        cx, cy = gx.ravel()[best], gy.ravel()[best]
        step /= 3
        if step < 1e-3:
            break
    best_h = float(height_at(np.array([cx]), np.array([cy]))[0])
    if best_h <= 2:
        raise ValueError("the frames share no valid area; the motion is too large to crop")
    # integer, even sizes inside the continuous optimum; pixel-centre region [x-.5, x+w-.5]
    h_int = int(np.floor(min(best_h + 1, height) / 2) * 2)
    w_int = int(np.floor(min(h_int * aspect, width) / 2) * 2)
    while h_int >= 2:
        x0 = int(np.ceil(cx - (w_int - 1) / 2 - 1e-9))
        y0 = int(np.ceil(cy - (h_int - 1) / 2 - 1e-9))
        for x, y in ((x0, y0), (x0 - 1, y0), (x0, y0 - 1), (x0 - 1, y0 - 1)):
            if _crop_valid(transforms, size, (x, y, w_int, h_int)):
                return (x, y, w_int, h_int)
        h_int -= 2
        w_int = int(np.floor(min(h_int * aspect, width) / 2) * 2)
    raise ValueError("the frames share no valid area")


def _crop_valid(
    transforms: Sequence[np.ndarray], size: tuple[int, int], crop: tuple[int, int, int, int]
) -> bool:
    """Whether the crop's outermost pixel centres fall inside every source frame."""
    width, height = size
    x, y, w, h = crop
    corners = np.array([[x, y], [x + w - 1, y], [x, y + h - 1], [x + w - 1, y + h - 1]], float)
    for m in transforms:
        src = corners @ invert(m)[:, :2].T + invert(m)[:, 2]
        if (src < -1e-6).any() or (src[:, 0] > width - 1 + 1e-6).any():
            return False
        if (src[:, 1] > height - 1 + 1e-6).any():
            return False
    return True
