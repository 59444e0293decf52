"""Lift 2D boxes into 3D with a registered depth image (ROS-free, vectorised numpy).

For every box the depth image is sampled on a grid of at most ``grid x grid`` cells (one sample per
pixel for small boxes), all boxes at once, so lifting 20 boxes costs about a millisecond and no
step touches the full image. Every step is a smooth function of the box: weights fade in from
the box edges instead of cutting at a fixed inset, the object's depth peak is chosen by a
continuous score, the band of depths that belongs to it is soft, and extents are weighted
quantiles rather than first/last columns. So when a model's box moves by a pixel or two from one
frame to the next, the estimate moves by millimetres, not from one surface to another.

**Support and background.** A small object's box also shows what it stands on and what is behind
it (a can on a desk: the desk top recedes smoothly from the can's foot to the wall, so no depth
gap separates them). The dominant plane of the box's border region is fitted in inverse depth
(``1/z`` is linear in the ray coordinates for any plane; a few iteratively reweighted least
squares steps with Cauchy weights ignore the object's share of the border). When that plane
explains most of the border *and* some of the box's centre lies in front of it, the plane is the
support or background, and its inliers are dropped (softly, with weights that ramp with both
conditions). A large object whose own surface fills the border lies on the plane, nothing is in
front of it, and nothing is dropped. Nor is an object's own face seen past an occluder (a panel
behind a pole): where the background has no depth (NaN, 0, or beyond ``max_depth``), a loose
box's border shows only the panel, so border samples without depth count as not explained by the
plane, as a valid background would be, unless what lies in front touches the plane (an object
on its support, or just before a wall, where no depth gap separates the two); the background
beyond a support does not matter. (A box drawn tightly around that panel, its border all panel,
looks exactly like a loose box around a pole before a wall: the pole wins there.) Depth alone
settles this, so no colour step is needed.

**Choosing the object's depth.** Inside a box the depth samples are a mixture of the object, the
background seen around a thin object or through a hollow one, and occluders in front of it. We
histogram depth with weights that rise from 0 at the box edge to 1 at ``2 * shrink`` box sizes
inside it. Bins are ``bin_width`` wide in relative depth near the camera and widen as
``1 + z / 2 m``, as depth cameras' noise and quantisation grow with the square of the depth. A
surface's *mass* is the weight within a few bins of depth (so a surface receding in depth counts
whole, and one rough surface is one peak), and each peak of mass scores
``mass x centredness x nearness``: centredness falls from 1 to 0.02 as the mean position of the
peak's samples moves from ``centre_tolerance`` to 1.6 times that many box sizes off the box
centre, and nearness is ``(z_min / z) ** near_preference``. The best score wins. The box was
drawn around the object, so the object's pixels are centred in it; the background is farther
than the object; an occluder is nearer but reaches in from a side or a corner, so its pixels are
off-centre. Hence a thin pole with 80 % of its box showing the wall, or a frame with the wall
visible through its middle, keeps the object's depth, and a bottle covering a third of a box
from the side is skipped. An occluder in the middle of the box is indistinguishable from the
object and wins. The score is continuous in the box, so the choice changes only where two
surfaces score alike, never at a threshold that one pixel of the box crosses. The samples beyond
``max_depth`` (a surface farther than the range) are one more candidate, scored as a surface at
``max_depth``, the nearest it can be: when it wins, the object lies beyond the range and has no
3D, rather than the depth of a pole in front of it.

A soft *band* around that peak then weighs the object's samples in the whole box: a depth belongs
to the object as far as the smoothed histogram stays above ``band_threshold`` of the peak's
height on the way to it (a running minimum outward from the peak, ramped, so it follows
surfaces that recede in depth and stops at the depth gap to the background); it fades out
beyond ``max_band`` times the box's lateral size (at least 0.1 m, and at least the window of
bins the peak's mass was counted over: bins are 14 cm wide at 5 m, and a far object's own
samples must not fall outside its band).

**Centre and size.** The weighted samples are back-projected through the camera's rays (lens
distortion undone for unrectified images; optical frame: x right, y down, z forward). Lateral
extents are the weighted 2..98 % quantiles of x (y) widened by 1/0.96 for the trimmed tails plus
the cell each sample stands for. The lateral centre is the middle of that extent.

**Depth extent.** A camera sees only the front surface, so depth needs a policy:

* ``surface_depth`` (``z_front``) is the depth of the surface facing the camera: the mean depth
  of the peak's samples, or the noise-corrected weighted 5th percentile of the object's depths
  when that is nearer (a surface slanted in depth has no sharp peak). The noise is measured
  from neighbouring samples (a mean, so a quantising sensor's 0-or-one-step differences give a
  smooth figure). ``surface`` is the point ``(mean x, mean y of the object's samples,
  z_front)``: the centre of what the camera saw.
* ``visible dz`` is the noise-corrected weighted 5..95 percentile depth range of the object's
  samples, scaled by 1/0.9 for the trimmed tails.
* ``depth_extent="box"`` (default): ``dz = max(visible dz, prior)`` where the prior knows the
  object's category from its label (see :data:`DEPTH_PRIORS` and :func:`depth_prior`): a
  flat thing (monitor, picture, door, book, ...) has a few centimetres; a round one (cup, can,
  bottle, ball, ...) is as deep as it is wide; anything else is assumed as deep as its smaller
  lateral extent. ``depth_extent="visible"``: ``dz = visible dz``.
* Every size is at least ``min_size``, and the reported centre is the object's 3D centre:
  ``z = z_front + dz / 2``.

So x, y, dx, dy and the front surface are measured; dz and the centre's z are measured for
surfaces that recede in depth and otherwise rest on the category prior.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, NamedTuple

import numpy as np

from spatialthinker_ros.core.camera import CameraIntrinsics, aspect_mismatch

__all__ = ["DEPTH_PRIORS", "LiftParams", "Lifted3D", "depth_prior", "lift_boxes"]

# Normal quantiles used to undo the widening of percentiles by Gaussian depth noise.
_Z95 = 1.6448536  # standard normal 95th percentile

#: Depth extent (metres along the view) of common categories: a number is the typical thickness
#: of a flat thing; ``"width"`` means as deep as it is wide (round things). Unknown labels use
#: the generic rule (as deep as the smaller lateral extent).
DEPTH_PRIORS: dict[str, float | str] = {
    # flat: panels, screens, pictures, openings, thin objects seen face-on
    **dict.fromkeys(("monitor", "display", "screen", "tablet"), 0.05),
    **dict.fromkeys(("tv", "television", "laptop", "whiteboard", "board"), 0.06),
    **dict.fromkeys(("picture", "painting", "photo", "frame", "mirror", "clock"), 0.04),
    **dict.fromkeys(("poster", "sign", "paper", "magazine", "map", "calendar"), 0.02),
    **dict.fromkeys(("door", "window", "curtain", "book", "folder", "notebook"), 0.05),
    **dict.fromkeys(("phone", "cellphone", "smartphone", "remote", "keyboard", "plate"), 0.03),
    # round: as deep as wide
    **dict.fromkeys(
        (
            "cup",
            "mug",
            "can",
            "bottle",
            "glass",
            "ball",
            "globe",
            "vase",
            "bowl",
            "jar",
            "pot",
        ),
        "width",
    ),
    **dict.fromkeys(("bucket", "bin", "lamp", "plant", "apple", "orange", "candle"), "width"),
}


@functools.lru_cache(maxsize=1024)
def depth_prior(label: str | None) -> float | str | None:
    """The :data:`DEPTH_PRIORS` entry of a label or id (``"cup.1"``, ``"coffee mug"``).

    The whole label, then its last word (the head noun of ``"computer monitor"``), singular or
    plural, is looked up; ``None`` when the category is unknown.
    """
    if not label:
        return None
    text = re.sub(r"\.\d+$", "", label.strip().lower())
    words = re.split(r"[\s_\-]+", text)
    for key in (
        text,
        " ".join(words),
        words[-1],
        words[-1].removesuffix("s"),
        words[-1][:-2],
    ):
        if key in DEPTH_PRIORS:
            return DEPTH_PRIORS[key]
    return None


@dataclass(frozen=True)
class LiftParams:
    """Tuning of :func:`lift_boxes` (all lengths in metres).

    Attributes:
        shrink: Box-edge margin, as a fraction of the box size: depth samples count towards the
            object's depth with a weight rising from 0 at the edge to 1 at ``2 * shrink`` inside
            (the border of a box is where background and occluders show).
        min_depth: Depths below this are invalid.
        max_depth: Depths above this are invalid.
        min_valid_pixels: Fewer kept samples than this gives no 3D.
        min_size: Lower bound of every reported size.
        grid: At most ``grid x grid`` samples per box.
        bin_width: Relative width of the depth histogram's bins near the camera (0.008 = 0.8 %
            of the depth); they widen in proportion to ``1 + z / 2 m``.
        near_preference: Exponent of the preference for nearer peaks (a peak's score is
            multiplied by ``(z_min / z) ** near_preference``).
        centre_tolerance: A peak whose samples' mean position lies farther than this many box
            sizes from the box centre scores less (down to a tenth at twice the tolerance).
        band_threshold: The depth band grows while the smoothed histogram stays above this
            fraction of the mode's height.
        max_band: The band reaches at most this many times the box's lateral size (>= 0.1 m)
            from the mode.
        plane_tolerance: Relative depth residual (0.015 = 1.5 % of the depth) within which a
            sample lies on the border plane (support or background).
        reject_planes: Drop the support / background plane's inliers (see the module docstring).
        depth_extent: ``"box"`` or ``"visible"``; see the module docstring.
        aspect_tolerance: Relative tolerance when the depth and colour images differ in size.
    """

    shrink: float = 0.1
    min_depth: float = 0.1
    max_depth: float = 10.0
    min_valid_pixels: int = 10
    min_size: float = 0.02
    grid: int = 24
    bin_width: float = 0.008
    near_preference: float = 3.0
    centre_tolerance: float = 0.15
    band_threshold: float = 0.1
    max_band: float = 1.0
    plane_tolerance: float = 0.015
    reject_planes: bool = True
    depth_extent: Literal["box", "visible"] = "box"
    aspect_tolerance: float = 0.01

    def __post_init__(self) -> None:
        if not 0.0 <= self.shrink < 0.5:
            raise ValueError(f"shrink must be in [0, 0.5), got {self.shrink}")
        if not 0.0 < self.min_depth < self.max_depth:
            raise ValueError(
                f"need 0 < min_depth < max_depth, got {self.min_depth}, {self.max_depth}"
            )
        if self.grid < 1 or self.min_valid_pixels < 1:
            raise ValueError("grid and min_valid_pixels must be at least 1")
        if not 0.0 < self.bin_width < 1.0:
            raise ValueError(f"bin_width must be in (0, 1), got {self.bin_width}")
        if not 0.0 < self.plane_tolerance < 1.0:
            raise ValueError(f"plane_tolerance must be in (0, 1), got {self.plane_tolerance}")
        if self.depth_extent not in ("box", "visible"):
            raise ValueError(f"depth_extent must be 'box' or 'visible', got {self.depth_extent!r}")


@dataclass(frozen=True)
class Lifted3D:
    """The 3D estimate for one box, in the depth camera's optical frame.

    Attributes:
        center: ``(x, y, z)`` of the object's 3D centre in metres, or ``None``.
        size: ``(dx, dy, dz)`` in metres, or ``None``.
        valid_pixels: Depth samples attributed to the object (large boxes are sampled on a grid of
            at most ``grid x grid``, so this counts samples, not all pixels).
        fill: Fraction of the box's samples attributed to the object.
        reason: Why there is no 3D; empty when there is.
        surface_depth: Depth of the object's surface facing the camera (``z_front``), or ``None``.
        surface: Centre of the visible front surface ``(x, y, z_front)``: measured, unlike the
            centre's z, which rests on the depth-extent prior; ``None`` without 3D.
    """

    center: tuple[float, float, float] | None
    size: tuple[float, float, float] | None
    valid_pixels: int = 0
    fill: float = 0.0
    reason: str = ""
    surface_depth: float | None = field(default=None)
    surface: tuple[float, float, float] | None = field(default=None)

    @property
    def has_3d(self) -> bool:
        """Whether a 3D centre and size were estimated."""
        return self.center is not None


def _failure(reason: str, valid: int = 0, fill: float = 0.0) -> Lifted3D:
    return Lifted3D(None, None, int(valid), float(fill), reason)


def _smooth(h: np.ndarray) -> np.ndarray:
    """[1, 4, 6, 4, 1] / 16 filter along the last axis, zero padded (two [1, 2, 1] passes)."""
    out = 6.0 * h
    out[..., 1:] += 4.0 * h[..., :-1]
    out[..., :-1] += 4.0 * h[..., 1:]
    out[..., 2:] += h[..., :-2]
    out[..., :-2] += h[..., 2:]
    out *= 1.0 / 16.0
    return out


def _cell_quantiles(
    centre: np.ndarray, width: np.ndarray, mass: np.ndarray, qs: Sequence[float]
) -> list[np.ndarray]:
    """Quantiles of ``(N, cells)`` uniform cells (centre, width, mass), in cell order.

    Each cell spreads its mass evenly over its width, so a uniformly filled object is a uniform
    distribution whose 2..98 % quantiles span 96 % of it exactly, and the quantiles move
    continuously with the masses and positions. NaN for rows of zero mass.
    """
    cum = np.cumsum(mass, axis=1)
    total = cum[:, -1:]
    rows = np.arange(mass.shape[0])
    out = []
    with np.errstate(invalid="ignore", divide="ignore"):
        for q in qs:
            target = q * total
            k = np.minimum((cum < target).sum(axis=1), mass.shape[1] - 1)
            m = mass[rows, k]
            t = np.clip((target[:, 0] - cum[rows, k] + m) / m, 0.0, 1.0)
            val = centre[rows, k] + (t - 0.5) * width[rows, k]
            val[~(total[:, 0] > 0)] = np.nan
            out.append(val)
    return out


# Depth (m) at which the histogram's relative bin width has doubled (see _depth_to_u).
_BIN_WIDENING_DEPTH = 2.0
# A histogram peak stands for the mass within this many bins either side of it.
_PEAK_HALF_WIDTH = 3


def _depth_to_u(z: np.ndarray | float) -> np.ndarray | float:
    """Histogram coordinate ``log(z / (1 + z / z0))``: even steps are relative depth steps of
    ``step * (1 + z / z0)``."""
    return np.log(z / (1.0 + z * (1.0 / _BIN_WIDENING_DEPTH)))


def _u_to_depth(u: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_depth_to_u`."""
    e = np.exp(u)
    return e / (1.0 - e * (1.0 / _BIN_WIDENING_DEPTH))


def _box_sum(h: np.ndarray, half: int) -> np.ndarray:
    """Sum of ``h`` over ``2 * half + 1`` neighbouring bins along the last axis (zero padded)."""
    padded = np.zeros((*h.shape[:-1], h.shape[-1] + 2 * half + 1), h.dtype)
    padded[..., half + 1 : half + 1 + h.shape[-1]] = h
    c = np.cumsum(padded, axis=-1)
    return c[..., 2 * half + 1 :] - c[..., : -2 * half - 1]


def _weighted_quantiles(
    values: np.ndarray, weights: np.ndarray, qs: Sequence[float]
) -> list[np.ndarray]:
    """Weighted quantiles of every row, continuous in the weights (NaN for rows of no weight).

    Each sample stands at the middle of its share of the cumulative weight, and the quantile is
    interpolated linearly between neighbouring samples, so it moves smoothly as weights change.
    """
    order = np.argsort(np.where(weights > 0, values, np.inf), axis=1)
    rows = np.arange(values.shape[0])
    # Flat indices: numpy gathers them several times faster than a broadcast (rows, order) pair.
    flat = (order + (rows * values.shape[1])[:, None]).ravel()
    v = values.ravel()[flat].reshape(values.shape)
    w = weights.ravel()[flat].reshape(values.shape).astype(np.float64)
    cum = np.cumsum(w, axis=1)
    total = cum[:, -1]
    mid = cum - 0.5 * w
    out = []
    with np.errstate(invalid="ignore", divide="ignore"):
        for q in qs:
            target = q * total
            k = np.clip((mid < target[:, None]).sum(axis=1), 1, v.shape[1] - 1)
            m0, m1 = mid[rows, k - 1], mid[rows, k]
            v0, v1 = v[rows, k - 1], v[rows, k]
            t = np.clip((target - m0) / (m1 - m0), 0.0, 1.0)
            val = np.where(m1 > m0, v0 + t * (v1 - v0), v0)
            val[~(total > 0)] = np.nan
            out.append(val)
    return out


def _neighbour_sigma(z: np.ndarray, weight: np.ndarray, z_ref: np.ndarray, axis: int) -> np.ndarray:
    """Per-box depth noise from differences of neighbouring samples along ``axis``.

    The weighted mean of ``|dz|`` (pairs weighted by both samples' weights; a difference is
    clipped at 3 % of the depth, so a step between surfaces counts as noise only a little) is
    ``2 sigma / sqrt(pi)`` for Gaussian noise. A mean, not a median: on a quantising sensor
    most differences are 0 or one step, and a median jumps between the two.
    """
    a = [slice(None)] * 3
    b = [slice(None)] * 3
    a[axis], b[axis] = slice(1, None), slice(None, -1)
    w = (weight[tuple(a)] * weight[tuple(b)]).reshape(z.shape[0], -1)
    cap = (0.03 * z_ref)[:, None]
    d = np.minimum(np.abs(z[tuple(a)] - z[tuple(b)]).reshape(z.shape[0], -1), cap)
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (w * d).sum(axis=1) / total
    return np.where(total > 2.0, mean * (math.sqrt(math.pi) / 2.0), 0.0)


def _share(part: np.ndarray, whole: np.ndarray) -> np.ndarray:
    """``part / whole``, 0 where ``whole`` is not positive."""
    return np.divide(part, whole, out=np.zeros(np.shape(part)), where=whole > 0)


def _ramp(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """0 below ``lo``, 1 above ``hi``, linear in between."""
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def _border_plane(
    z: np.ndarray,
    xn: np.ndarray,
    yn: np.ndarray,
    valid: np.ndarray,
    weights: np.ndarray,
    tolerance: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit ``1/z = a x + b y + c`` (ray coordinates) to the weighted samples of every box.

    Returns the relative residual ``z / z_plane - 1`` of every valid sample (0 elsewhere;
    negative: in front of the plane) and whether each box's fit is usable. Cauchy-weighted
    iterations, so the object's share of the border does not tilt the plane; the fit uses every
    other sample along each axis, which is ample for three parameters.
    """
    n = z.shape[0]
    sub = (slice(None), slice(None, None, 2), slice(None, None, 2))
    xs, ys, zs, ok_s, ws = (
        np.broadcast_to(a, z.shape)[sub].reshape(n, -1) for a in (xn, yn, z, valid, weights)
    )
    # float64: ray coordinates of absurd (but accepted) intrinsics overflow float32 squares.
    w0 = np.where(ok_s, ws, 0.0).astype(np.float64)
    zz = np.where(ok_s, zs, 1.0).astype(np.float64)
    xs, ys = xs.astype(np.float64), ys.astype(np.float64)
    inv = 1.0 / zz
    # The normal equations' nine weighted sums at once: products of (x, y, 1) with (x, y, 1/z).
    products = np.stack(
        [xs * xs, xs * ys, xs, ys * ys, ys, np.ones_like(xs), xs * inv, ys * inv, inv]
    )
    w = w0
    ok = np.zeros(n, dtype=bool)
    coef = np.zeros((n, 3))
    for it in range(3):
        sxx, sxy, sx, syy, sy, s1, bx, by, b1 = np.einsum("knm,nm->kn", products, w)
        # 3x3 solve by Cramer's rule, vectorised over boxes.
        det = sxx * (syy * s1 - sy * sy) - sxy * (sxy * s1 - sy * sx) + sx * (sxy * sy - syy * sx)
        ok = np.abs(det) > 1e-9 * np.maximum(s1, 1e-30) ** 3
        safe = np.where(ok, det, 1.0)
        coef = (
            np.stack(
                [
                    bx * (syy * s1 - sy * sy)
                    - sxy * (by * s1 - sy * b1)
                    + sx * (by * sy - syy * b1),
                    sxx * (by * s1 - b1 * sy)
                    - bx * (sxy * s1 - sy * sx)
                    + sx * (sxy * b1 - by * sx),
                    sxx * (syy * b1 - sy * by)
                    - sxy * (sxy * b1 - by * sx)
                    + bx * (sxy * sy - syy * sx),
                ],
                axis=1,
            )
            / safe[:, None]
        )
        if it == 2:
            break
        resid = np.where(ok_s, zz * (coef[:, :1] * xs + coef[:, 1:2] * ys + coef[:, 2:]) - 1.0, 0.0)
        # Wide first (the object may hold much of the border), then the sensor's tolerance.
        w = w0 / (1.0 + (resid / (tolerance * (3.0 if it == 0 else 1.5))) ** 2)
    coef = coef.astype(np.float32)
    c = coef[:, :, None, None]
    with np.errstate(invalid="ignore"):
        resid = np.where(valid, z * (c[:, 0] * xn + c[:, 1] * yn + c[:, 2]) - 1.0, 0.0)
    # The plane must lie in front of the camera where the border is (its inverse depth positive
    # at the border's mean ray). Not merely on the optical axis: a floor or table seen by a level
    # camera has c = 0, the axis running parallel to it.
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = (w0 * xs).sum(axis=1) / w0.sum(axis=1)
        my = (w0 * ys).sum(axis=1) / w0.sum(axis=1)
    ahead = coef[:, 0] * mx + coef[:, 1] * my + coef[:, 2] > 0
    return resid, ok & ahead


def _plausible(centre: np.ndarray, size: np.ndarray, max_depth: float) -> np.ndarray:
    """Per box, whether a lifted object is finite and within reach: no depth sample lies
    beyond ``max_depth``, so a centre or size beyond twice that (a field of view up to 120
    degrees stays inside) comes from intrinsics that passed every check and are still wrong."""
    with np.errstate(all="ignore"):
        finite = np.isfinite(centre).all(axis=-1) & np.isfinite(size).all(axis=-1)
        near = np.linalg.norm(centre, axis=-1) <= 2 * max_depth
        return finite & near & (size.max(axis=-1) <= 2 * max_depth)


def _as_box_array(boxes: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """``(N, 4)`` float array; malformed boxes (None, wrong length) become NaN rows."""
    if isinstance(boxes, np.ndarray) and boxes.ndim == 2 and boxes.shape[1] == 4:
        return boxes.astype(np.float64, copy=False)
    rows = []
    for box in boxes:
        try:
            row = [float(c) for c in box]  # type: ignore[union-attr]
        except (TypeError, ValueError):
            row = []
        rows.append(row if len(row) == 4 else [math.nan] * 4)
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


class _Grid(NamedTuple):
    """The depth samples of every box: ``(N, g, g)`` arrays unless noted (N boxes, g = grid)."""

    proper: np.ndarray  # (N,) the box is four finite numbers with x2 > x1, y2 > y1
    inside: np.ndarray  # (N,) it overlaps the depth image
    bw: np.ndarray  # (N,) box width in depth pixels, clipped to the image
    bh: np.ndarray  # (N,) box height
    su: np.ndarray  # (N,) sample spacing along x, pixels
    sv: np.ndarray  # (N,) along y
    tu: np.ndarray  # (N, g) each column's offset from the box centre, in box widths
    tv: np.ndarray  # (N, g) each row's, in box heights
    z: np.ndarray  # float32 depth of every sample
    sampled: np.ndarray  # the sample lies in the box
    valid: np.ndarray  # ... and its depth in [min_depth, max_depth]
    beyond: np.ndarray  # ... or its depth beyond max_depth (a surface farther than the range)
    xn: np.ndarray  # ray coordinates x/z: (N, 1, g) for a pinhole, else (N, g, g)
    yn: np.ndarray  # y/z: (N, g, 1) for a pinhole, else (N, g, g)


def _sample(
    boxes: np.ndarray,
    depth: np.ndarray,
    cam: CameraIntrinsics,
    colour_size: tuple[int, int],
    p: LiftParams,
) -> _Grid:
    """Sample every box on a grid of n cells per axis (<= grid, ~1 per pixel for small boxes),
    at the cell centres, and look up depth and ray coordinates there."""
    hd, wd = depth.shape
    # Boxes in depth pixels (edge coordinates scale proportionally), clipped to the image.
    raw = boxes * np.array([wd / colour_size[0], hd / colour_size[1]] * 2)
    finite = np.all(np.isfinite(raw), axis=1)
    raw = np.where(finite[:, None], raw, 0.0)
    proper = finite & (raw[:, 2] > raw[:, 0]) & (raw[:, 3] > raw[:, 1])
    x1, x2 = np.clip(raw[:, 0], 0, wd), np.clip(raw[:, 2], 0, wd)
    y1, y2 = np.clip(raw[:, 1], 0, hd), np.clip(raw[:, 3], 0, hd)
    bw, bh = x2 - x1, y2 - y1
    inside = proper & (bw > 0) & (bh > 0)
    # Edge coordinate c lies in pixel floor(c); its pixel-centre coordinate is c - 0.5.
    j = np.arange(p.grid, dtype=np.float64)
    nu = np.clip(np.ceil(bw - 1e-9), 1, p.grid)
    nv = np.clip(np.ceil(bh - 1e-9), 1, p.grid)
    su, sv = bw / nu, bh / nv
    uu = x1[:, None] + (j + 0.5) * su[:, None]  # (N, g)
    vv = y1[:, None] + (j + 0.5) * sv[:, None]
    mu, mv = j[None, :] < nu[:, None], j[None, :] < nv[:, None]
    iu = np.clip(uu.astype(np.intp), 0, wd - 1)
    iv = np.clip(vv.astype(np.intp), 0, hd - 1)
    pixel = iv[:, :, None] * wd + iu[:, None, :]  # flat pixel index of every sample
    z = depth.ravel()[pixel].astype(np.float32, copy=False)
    sampled = (mv[:, :, None] & mu[:, None, :]) & inside[:, None, None]
    with np.errstate(invalid="ignore"):
        valid = sampled & (z >= p.min_depth) & (z <= p.max_depth)
        beyond = sampled & (z > p.max_depth)
    # Ray coordinates: separable for a pinhole, per sample through the camera's undistortion
    # map for an unrectified image.
    if cam.has_distortion:
        map_x, map_y = cam.ray_maps()
        xn, yn = map_x.ravel()[pixel], map_y.ravel()[pixel]
    else:
        xn = ((uu - 0.5 - cam.cx) / cam.fx).astype(np.float32)[:, None, :]
        yn = ((vv - 0.5 - cam.cy) / cam.fy).astype(np.float32)[:, :, None]
    tu = (j[None, :] + 0.5) / nu[:, None] - 0.5
    tv = (j[None, :] + 0.5) / nv[:, None] - 0.5
    return _Grid(proper, inside, bw, bh, su, sv, tu, tv, z, sampled, valid, beyond, xn, yn)


def _edge_weights(grid: _Grid, shrink: float) -> np.ndarray:
    """Each sample's weight for choosing the depth: 0 at the box edge rising to 1 at
    ``2 * shrink`` box sizes inside (float32, whatever the sample's depth)."""
    ramp = max(2.0 * shrink, 1e-6)
    wu = np.clip((0.5 - np.abs(grid.tu)) / ramp, 0.0, 1.0).astype(np.float32)
    wv = np.clip((0.5 - np.abs(grid.tv)) / ramp, 0.0, 1.0).astype(np.float32)
    return wv[:, :, None] * wu[:, None, :]


# What lies in front of a border plane touches it where it is within the first relative depth
# gap of the plane (softly, clear beyond the second), and an object touches the plane when the
# first share of its in-front samples does so (fully from the second; see _drop_planes).
_CONTACT_GAP = (0.15, 0.25)
_CONTACT_SHARE = (0.1, 0.25)


def _drop_planes(grid: _Grid, edge_w: np.ndarray, p: LiftParams) -> np.ndarray:
    """Each valid sample's weight once the support / background plane of its box's border is
    dropped (see the module docstring), 0 for invalid samples."""
    validf = grid.valid.astype(np.float32)
    if not p.reject_planes:
        return validf
    n_boxes = validf.shape[0]
    centre_w = edge_w * validf
    border_w = validf - centre_w
    resid, fit_ok = _border_plane(grid.z, grid.xn, grid.yn, grid.valid, border_w, p.plane_tolerance)
    tol = p.plane_tolerance
    with np.errstate(invalid="ignore"):
        on_plane = np.where(grid.valid, 1.0 - _ramp(np.abs(resid), tol, 2.0 * tol), 0.0)
        in_front = np.where(grid.valid, _ramp(-resid, 2.0 * tol, 3.0 * tol), 0.0)
    on_border = (border_w * on_plane).reshape(n_boxes, -1).sum(axis=1)
    bsum = border_w.reshape(n_boxes, -1).sum(axis=1)
    csum = centre_w.reshape(n_boxes, -1).sum(axis=1)
    explained = _share(on_border, bsum)
    front = _ramp(_share((centre_w * in_front).reshape(n_boxes, -1).sum(axis=1), csum), 0.04, 0.12)
    usable = fit_ok & (bsum > 0) & (csum > 0)
    strength = np.where(usable, _ramp(explained, 0.4, 0.6) * front, 0.0)
    if strength.any():  # the plane may be the object's own face: see _explained
        explained = _explained(grid, edge_w, explained, on_border, resid, validf * in_front)
        strength = np.where(usable, _ramp(explained, 0.4, 0.6) * front, 0.0)
    return (validf * (1.0 - strength[:, None, None] * on_plane)).astype(np.float32)


def _explained(
    grid: _Grid,
    edge_w: np.ndarray,
    explained: np.ndarray,
    on_border: np.ndarray,
    resid: np.ndarray,
    ahead: np.ndarray,
) -> np.ndarray:
    """Per box, the share of its border the plane explains, the border's samples without depth
    (NaN, 0, beyond max_depth) counting as not explained unless what lies in front of the plane
    touches it.

    Where the background has no depth, a box drawn loosely around a panel shows only the panel
    on its border, and a pole before the panel lies in front of that "plane": counted among
    the border, the missing background shows the plane ends inside the box, as a valid
    background would. But an object standing on its support (or just before a wall) touches
    the plane, and the background beyond the support, with or without depth, does not matter.
    ``explained`` is the share among the samples with depth; ``ahead`` the in-front weight of
    every sample.
    """
    n_boxes = ahead.shape[0]
    sampled_border = (grid.sampled * (1.0 - edge_w)).reshape(n_boxes, -1).sum(axis=1)
    ahead = ahead.reshape(n_boxes, -1)
    with np.errstate(invalid="ignore"):
        close = ahead * (1.0 - _ramp(-resid.reshape(n_boxes, -1), *_CONTACT_GAP))
    touching = _ramp(_share(close.sum(axis=1), ahead.sum(axis=1)), *_CONTACT_SHARE)
    everywhere = _share(on_border, sampled_border)
    return touching * explained + (1.0 - touching) * everywhere


class _Histograms(NamedTuple):
    """Depth histograms of every box over the bins the samples reach."""

    bins: np.ndarray  # (N, g, g) each sample's bin
    centre: np.ndarray  # (N, B) smoothed, of the edge-weighted samples: the peak is chosen here
    off_u: np.ndarray  # (N, B) ... their summed offsets from the box centre along x
    off_v: np.ndarray  # (N, B) ... along y
    whole: np.ndarray  # (N, B) smoothed, of every kept sample: the band follows it
    z_bins: np.ndarray  # (B,) each bin's depth


def _histograms(
    grid: _Grid, centre_w: np.ndarray, keep_w: np.ndarray, p: LiftParams
) -> _Histograms:
    """Histograms even in u = log(z / (1 + z / z0)): relative bin width bin_width * (1 + z / z0),
    following depth cameras' noise and quantisation, which grow with the square of the depth.
    Only the bins the samples reach (plus the filters' reach) are made: the cost follows the
    scene's depth range, not min_depth..max_depth."""
    valid, n_boxes = grid.valid, grid.valid.shape[0]
    u_min = _depth_to_u(p.min_depth)
    zs = np.where(valid, grid.z, np.float32(p.min_depth))
    bins = ((_depth_to_u(zs) - np.float32(u_min)) * np.float32(1.0 / p.bin_width)).astype(np.intp)
    reach = _PEAK_HALF_WIDTH + 3
    first = max(int(bins[valid].min()) - reach, 0) if valid.any() else 0
    n_bins = (int(bins[valid].max()) + reach + 1 - first) if valid.any() else 1
    bins = np.clip(bins - first, 0, n_bins - 1)
    flat = (np.arange(n_boxes)[:, None, None] * n_bins + bins).ravel()
    size = n_boxes * n_bins
    hists = np.empty((4, size))
    tu = grid.tu[:, None, :].astype(np.float32)
    tv = grid.tv[:, :, None].astype(np.float32)
    for k, w in enumerate((centre_w, centre_w * tu, centre_w * tv, keep_w)):
        hists[k] = np.bincount(flat, weights=w.ravel(), minlength=size)
    smoothed = _smooth(hists.reshape(4, n_boxes, n_bins))
    z_bins = _u_to_depth(u_min + (first + np.arange(n_bins) + 0.5) * p.bin_width)
    return _Histograms(bins, *smoothed, z_bins)


def _choose_peak(
    h: _Histograms, grid: _Grid, edge_w: np.ndarray, p: LiftParams
) -> tuple[np.ndarray, np.ndarray]:
    """The object's peak of every box (a bin index), and whether a surface beyond max_depth
    outscores every peak (the object then lies beyond the range).

    A surface's mass is what lies within a few bins of depth (one receding in depth spreads
    over many bins and must not lose to a compact one of less area), and the peaks are those of
    that mass, so one rough surface is one peak. Each peak scores mass x centredness x nearness
    (the background is farther, an occluder off-centre), and the best wins: a continuous score,
    so the choice changes only where two peaks score alike, never at a threshold that one pixel
    of the box crosses. The samples beyond max_depth are one more candidate, scored as a surface
    at max_depth (the nearest it can be): a panel beyond the range behind a pole within it is
    then no 3D, not the pole's depth.
    """
    n_boxes = h.centre.shape[0]
    mass, mass_u, mass_v = _box_sum(np.stack([h.centre, h.off_u, h.off_v]), _PEAK_HALF_WIDTH)
    left = np.concatenate([np.zeros((n_boxes, 1)), mass[:, :-1]], axis=1)
    right = np.concatenate([mass[:, 1:], np.zeros((n_boxes, 1))], axis=1)
    peaks = (mass >= left) & (mass > right) & (mass > 0)
    nearness = (h.z_bins[0] / h.z_bins) ** p.near_preference
    score = np.where(peaks, mass * _centredness(mass, mass_u, mass_v, p) * nearness, -1.0)
    mode = np.argmax(score, axis=1)
    if not grid.beyond.any():  # the range reaches past everything in the boxes
        return mode, np.zeros(n_boxes, dtype=bool)
    far = edge_w * grid.beyond
    far_cols, far_rows = far.sum(axis=1), far.sum(axis=2)  # (N, g) each
    far_mass = far_cols.sum(axis=1)
    far_u, far_v = (far_cols * grid.tu).sum(axis=1), (far_rows * grid.tv).sum(axis=1)
    far_near = (h.z_bins[0] / p.max_depth) ** p.near_preference
    far_score = far_mass * _centredness(far_mass, far_u, far_v, p) * far_near
    best = score[np.arange(n_boxes), mode]
    return mode, (far_mass > 0) & (far_score > best)


def _centredness(
    mass: np.ndarray, mass_u: np.ndarray, mass_v: np.ndarray, p: LiftParams
) -> np.ndarray:
    """1 while the mean position of a mass's samples lies within centre_tolerance box sizes of
    the box centre, falling to 0.02 at 1.6 times that."""
    with np.errstate(invalid="ignore", divide="ignore"):
        offset = np.nan_to_num(np.hypot(mass_u, mass_v) / mass, nan=1.0)
    return 1.0 - 0.98 * _ramp(offset, p.centre_tolerance, 1.6 * p.centre_tolerance)


def _band(
    h: _Histograms,
    mode: np.ndarray,
    grid: _Grid,
    keep_w: np.ndarray,
    cam: CameraIntrinsics,
    p: LiftParams,
) -> tuple[np.ndarray, np.ndarray]:
    """Every sample's weight as the object's (soft), and as the peak's own (its depth).

    A bin belongs to the object as far as the smoothed histogram stays above band_threshold of
    the peak's height on the way to it (a running minimum outward from the peak, so it follows
    a receding surface and stops at the depth gap to the background), fading out beyond
    max_band times the box's lateral size, but never nearer the peak than the window of bins
    its mass was counted over (else a far object's own samples fall outside its band).
    """
    n_boxes, n_bins = h.whole.shape
    rows = np.arange(n_boxes)
    k = np.arange(n_bins)[None, :]
    z_mode = h.z_bins[mode]
    top = h.whole[rows[:, None], np.clip(mode[:, None] + np.arange(-1, 2), 0, n_bins - 1)]
    with np.errstate(invalid="ignore", divide="ignore"):
        level = np.nan_to_num(h.whole / top.max(axis=1, keepdims=True))
    support = _ramp(level, p.band_threshold, 3.0 * p.band_threshold)
    up = np.minimum.accumulate(np.where(k < mode[:, None], 1.0, support), axis=1)
    down = np.minimum.accumulate(np.where(k > mode[:, None], 1.0, support)[:, ::-1], axis=1)
    member = np.where(k >= mode[:, None], up, down[:, ::-1])
    lateral = np.maximum(grid.bw / cam.fx, grid.bh / cam.fy) * z_mode
    # A bin's width in metres is bin_width * z * (1 + z / z0); the mode may sit one bin off the
    # middle of a flat peak's window, so the window reaches _PEAK_HALF_WIDTH + 1 bins.
    window = (_PEAK_HALF_WIDTH + 1) * p.bin_width * z_mode * (1.0 + z_mode / _BIN_WIDENING_DEPTH)
    cap = np.maximum(np.maximum(0.1, p.max_band * lateral), window)[:, None]
    member *= 1.0 - _ramp(np.abs(h.z_bins[None, :] - z_mode[:, None]), cap, 1.5 * cap)
    member *= (h.centre.max(axis=1) > 0)[:, None]
    flat_bins = h.bins.reshape(n_boxes, -1)
    member_flat = member.ravel()[(flat_bins + (rows * n_bins)[:, None]).ravel()]
    weight = member_flat.reshape(h.bins.shape) * keep_w
    weight = np.where(grid.valid, weight, 0.0).astype(np.float32)
    # The peak's own samples (triangular weights over its window of bins): its depth.
    near_peak = 1.0 - np.abs(flat_bins - mode[:, None]) / (_PEAK_HALF_WIDTH + 1.0)
    near_peak = np.clip(near_peak, 0.0, 1.0).reshape(h.bins.shape) * weight
    return weight, near_peak


class _Geometry(NamedTuple):
    """Every box's estimate, ``(N, 3)`` or ``(N,)`` (NaN where nothing was kept)."""

    centre: np.ndarray
    size: np.ndarray
    z_front: np.ndarray
    surface: np.ndarray


def _geometry(
    grid: _Grid,
    weight: np.ndarray,
    near_peak: np.ndarray,
    z_mode_bin: np.ndarray,
    cam: CameraIntrinsics,
    labels: Sequence[str | None] | None,
    p: LiftParams,
) -> _Geometry:
    """Back-project the object's samples and take weighted robust statistics: lateral extents
    and centre, the front surface, the depth extent (see the module docstring)."""
    n_boxes = weight.shape[0]
    # float32 is ample for millimetre statistics; invalid samples (weight 0) read 0, not NaN
    zf = np.where(grid.valid, grid.z, np.float32(0.0))
    x_lo, x_hi, y_lo, y_hi, x_mean, y_mean = _lateral(grid, weight, zf, cam)
    z_lo, z_hi = _weighted_quantiles(
        zf.reshape(n_boxes, -1), weight.reshape(n_boxes, -1), (0.05, 0.95)
    )
    # Depth noise from neighbouring samples (slope-free along at least one axis of a plane).
    sigma = np.minimum(
        _neighbour_sigma(zf, weight, z_mode_bin, 1),
        _neighbour_sigma(zf, weight, z_mode_bin, 2),
    )
    # Surface depth: the mean depth of the peak's samples, or the noise-corrected 5th percentile
    # when a receding surface puts its near edge well in front.
    peak_w = near_peak.reshape(n_boxes, -1).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        z_peak = (near_peak * zf).reshape(n_boxes, -1).sum(axis=1) / peak_w
    z_mode = np.where(peak_w > 0, z_peak, z_mode_bin)
    z_front = np.minimum(z_mode, z_lo + _Z95 * sigma)
    visible_dz = np.maximum(0.0, (z_hi - z_lo) - 2.0 * _Z95 * sigma) / 0.9
    # Lateral extents: the trimmed quantile range widened for the trimmed tails.
    dx = (x_hi - x_lo) / 0.96
    dy = (y_hi - y_lo) / 0.96
    dz = visible_dz
    if p.depth_extent == "box":
        prior = np.minimum(dx, dy)
        for i, label in enumerate(labels or ()):
            known = depth_prior(label)
            if known == "width":
                prior[i] = dx[i]
            elif known is not None:
                prior[i] = float(known)
        dz = np.maximum(visible_dz, prior)
    dx, dy, dz = (np.maximum(d, p.min_size) for d in (dx, dy, dz))
    centre = np.stack([0.5 * (x_lo + x_hi), 0.5 * (y_lo + y_hi), z_front + 0.5 * dz], axis=-1)
    size = np.stack([dx, dy, dz], axis=-1)
    return _Geometry(centre, size, z_front, np.stack([x_mean, y_mean, z_front], axis=-1))


def _lateral(
    grid: _Grid, weight: np.ndarray, zf: np.ndarray, cam: CameraIntrinsics
) -> tuple[np.ndarray, ...]:
    """Lateral extents (x_lo, x_hi, y_lo, y_hi) and mean (x, y) of the object's samples, from
    the marginal distributions over grid columns (x) and rows (y): each column holds the
    weighted mean x of its samples and stands for a cell of the box."""
    xn, yn = grid.xn, grid.yn
    wz = weight * zf
    col_w = weight.sum(axis=1)  # (N, g)
    row_w = weight.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        col_z = wz.sum(axis=1) / col_w
        row_z = wz.sum(axis=2) / row_w
        if xn.shape[1] == 1:  # pinhole: one ray coordinate per column (row)
            col_x = col_z * xn[:, 0, :]
            row_y = row_z * yn[:, :, 0]
        else:
            col_x = (wz * xn).sum(axis=1) / col_w
            row_y = (wz * yn).sum(axis=2) / row_w
    col_x = np.where(col_w > 0, col_x, 0.0)
    row_y = np.where(row_w > 0, row_y, 0.0)
    cell_u = np.where(col_w > 0, (grid.su / cam.fx)[:, None] * col_z, 0.0)
    cell_v = np.where(row_w > 0, (grid.sv / cam.fy)[:, None] * row_z, 0.0)
    x_lo, x_hi = _cell_quantiles(col_x, cell_u, col_w, (0.02, 0.98))
    y_lo, y_hi = _cell_quantiles(row_y, cell_v, row_w, (0.02, 0.98))
    w_sum = col_w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        x_mean = (col_x * col_w).sum(axis=1) / w_sum
        y_mean = (row_y * row_w).sum(axis=1) / w_sum
    return x_lo, x_hi, y_lo, y_hi, x_mean, y_mean


def _results(
    boxes: np.ndarray,
    grid: _Grid,
    kept: np.ndarray,
    beyond_wins: np.ndarray,
    geometry: _Geometry,
    p: LiftParams,
) -> list[Lifted3D]:
    """One :class:`Lifted3D` per box: its estimate, or the first reason it has none."""
    n_boxes = boxes.shape[0]
    n_valid = grid.valid.reshape(n_boxes, -1).sum(axis=1)
    n_beyond = grid.beyond.reshape(n_boxes, -1).sum(axis=1)
    n_kept = kept.reshape(n_boxes, -1).sum(axis=1)
    n_sampled = grid.sampled.reshape(n_boxes, -1).sum(axis=1)
    plausible = _plausible(geometry.centre, geometry.size, p.max_depth)
    # Plain Python numbers once, not a numpy scalar conversion per field and box.
    centres, sizes = geometry.centre.tolist(), geometry.size.tolist()
    fronts, surfaces = geometry.z_front.tolist(), geometry.surface.tolist()
    kept_counts, sampled_counts = n_kept.tolist(), n_sampled.tolist()
    results: list[Lifted3D] = []
    for i in range(n_boxes):
        fill = kept_counts[i] / sampled_counts[i] if sampled_counts[i] else 0.0
        if not grid.proper[i]:
            results.append(_failure(f"invalid box {tuple(boxes[i].tolist())}"))
        elif not grid.inside[i]:
            results.append(_failure("box lies outside the depth image"))
        elif n_valid[i] == 0:
            farther = "; it reads farther than depth.max_depth" if n_beyond[i] else ""
            results.append(
                _failure(
                    f"no valid depth in the box (range {p.min_depth:g}..{p.max_depth:g} m)"
                    + farther
                )
            )
        elif beyond_wins[i]:
            results.append(
                _failure(
                    f"the object lies beyond depth.max_depth ({p.max_depth:g} m): most of its"
                    " box reads farther, the depth within range is something in front of it",
                    kept_counts[i],
                    fill,
                )
            )
        elif kept_counts[i] < p.min_valid_pixels:
            results.append(
                _failure(
                    f"too few valid depth pixels on the object ({kept_counts[i]} < "
                    f"{p.min_valid_pixels})",
                    kept_counts[i],
                    fill,
                )
            )
        elif not plausible[i]:
            results.append(
                _failure(
                    f"implausible 3D geometry (centre {np.round(geometry.centre[i], 3).tolist()}"
                    f" m, size {np.round(geometry.size[i], 3).tolist()} m, beyond twice"
                    f" depth.max_depth {p.max_depth:g} m): check the camera_info",
                    kept_counts[i],
                    fill,
                )
            )
        else:
            results.append(
                Lifted3D(
                    tuple(centres[i]),
                    tuple(sizes[i]),
                    kept_counts[i],
                    fill,
                    "",
                    fronts[i],
                    tuple(surfaces[i]),
                )
            )
    return results


def lift_boxes(
    boxes: Sequence[Sequence[float]] | np.ndarray,
    depth_m: np.ndarray,
    intrinsics: CameraIntrinsics,
    image_size: tuple[int, int] | None = None,
    params: LiftParams | None = None,
    labels: Sequence[str | None] | None = None,
    **overrides: object,
) -> list[Lifted3D]:
    """Estimate a 3D centre and size for each 2D box.

    The stages (see the module docstring): sample every box (:func:`_sample`), drop the
    support / background plane (:func:`_drop_planes`), histogram the depths
    (:func:`_histograms`) and choose the object's peak (:func:`_choose_peak`), weigh the
    object's samples (:func:`_band`), and measure them (:func:`_geometry`).

    Args:
        boxes: ``(x1, y1, x2, y2)`` boxes in colour-image pixels (edges: a box covering pixel
            columns 10..19 is ``x1=10, x2=20``).
        depth_m: ``HxW`` float depth in metres, NaN (or anything outside the depth range) invalid,
            registered to the colour image (same view, possibly another resolution).
        intrinsics: Intrinsics of the depth image, at any resolution with the same aspect ratio
            (they are rescaled to the depth image). Their ``distortion`` is undone: pass it for
            unrectified images only.
        image_size: ``(width, height)`` of the colour image the boxes refer to; ``None`` means the
            boxes are already in depth-image pixels.
        params: Tuning; defaults to :class:`LiftParams`.
        labels: One label or id per box (``"monitor.1"``), choosing the depth-extent prior; ``None``
            (or a missing entry) uses the generic rule.
        **overrides: Fields of :class:`LiftParams` to override.

    Returns:
        One :class:`Lifted3D` per box, in order. Boxes that cannot be lifted carry a ``reason``.

    Raises:
        ValueError: ``depth_m`` is not 2D, ``labels`` has another length than ``boxes``, or an
            override is not a :class:`LiftParams` field.
    """
    p = params or LiftParams()
    if overrides:
        try:
            p = replace(p, **overrides)
        except TypeError as exc:  # unknown field name
            raise ValueError(f"unknown lifting parameter: {exc}") from None
    depth = np.asarray(depth_m)
    if depth.ndim != 2:
        raise ValueError(f"depth image must be 2D, got shape {depth.shape}")
    box_arr = _as_box_array(boxes)
    n_boxes = box_arr.shape[0]
    if labels is not None and len(labels) != n_boxes:
        raise ValueError(f"got {len(labels)} labels for {n_boxes} boxes")
    if n_boxes == 0:
        return []
    hd, wd = depth.shape
    colour_size = (wd, hd) if image_size is None else (int(image_size[0]), int(image_size[1]))
    for other, what in (
        (colour_size, "colour image"),
        (intrinsics.size, "camera intrinsics"),
    ):
        problem = aspect_mismatch(other, (wd, hd), p.aspect_tolerance)
        if problem:
            return [_failure(f"{what} and depth image differ: {problem}")] * n_boxes
    cam = intrinsics.scaled(wd, hd)
    grid = _sample(box_arr, depth, cam, colour_size, p)
    edge_w = _edge_weights(grid, p.shrink)
    keep_w = _drop_planes(grid, edge_w, p)
    hists = _histograms(grid, edge_w * keep_w, keep_w, p)
    mode, beyond_wins = _choose_peak(hists, grid, edge_w, p)
    weight, near_peak = _band(hists, mode, grid, keep_w, cam, p)
    z_mode_bin = hists.z_bins[mode]
    geometry = _geometry(grid, weight, near_peak, z_mode_bin, cam, labels, p)
    return _results(box_arr, grid, weight > 0.5, beyond_wins, geometry, p)
