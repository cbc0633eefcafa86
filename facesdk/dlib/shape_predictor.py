"""dlib's ``shape_predictor`` (ensemble of regression trees, Kazemi & Sullivan) in numpy.

Reads dlib ``.dat`` files such as ``shape_predictor_5_face_landmarks.dat`` (CC0) with
:mod:`facesdk.dlib.fmt` and reproduces dlib's ``shape_predictor::operator()``
(``dlib/image_processing/shape_predictor.h``) step by step:

* the shape lives in box-normalised coordinates (box top-left → (0,0), bottom-right
  → (1,1), with dlib's inclusive ``right``/``bottom``) as float32;
* each cascade maps its feature pixels (anchor landmark + offset in the mean shape)
  through the similarity transform mean shape → current shape, then into the image,
  rounds with ``floor(x + 0.5)`` and reads the grey intensity ``(r+g+b)//3`` (0 outside
  the image);
* each tree compares two feature pixels against a threshold at every split
  (left child ``2i+1`` when ``f[idx1] - f[idx2] > thresh``) and adds its leaf's
  float32 delta to the shape, tree after tree (summed in dlib's order).

dlib's 5-point part order (``DLIB5_PARTS``): 0 outer and 1 inner corner of the eye with
the larger x in the image, 2 outer and 3 inner corner of the eye with the smaller x,
4 base of the nose. Boxes are dlib rectangles ``(left, top, right, bottom)``, inclusive.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..align import similarity_matrices, similarity_transform
from .fmt import DlibReader, read_dat
from ..errors import ConfigError

__all__ = ["ShapePredictor", "DLIB5_PARTS", "load_default"]

log = logging.getLogger(__name__)

#: Part names of dlib's 5-point model, in file order (image-right eye first).
DLIB5_PARTS = ("right_eye_outer", "right_eye_inner", "left_eye_outer", "left_eye_inner", "nose_base")


def _floats(m: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Vectorised dlib floats from (mantissa, exponent) integer pairs."""
    e = np.asarray(e, np.int64)
    special = e >= 32000
    out = np.ldexp(np.asarray(m, np.float64), np.clip(e, -1100, 1100).astype(np.int32))
    if special.any():
        out = out.copy()
        out[e == 32000] = np.inf
        out[e == 32001] = -np.inf
        out[e == 32002] = np.nan
    return out


class _IntCursor:
    """Walks an int64 array decoded from the file, with the byte offset of every item."""

    def __init__(self, vals: np.ndarray, offsets: np.ndarray, reader: DlibReader) -> None:
        self.v, self.off, self.r, self.i = vals, offsets, reader, 0

    def _offset(self) -> int:
        return int(self.off[self.i]) if self.i < len(self.off) else len(self.r.data)

    def take(self, n: int, what: str) -> np.ndarray:
        if n < 0 or self.i + n > len(self.v):
            raise self.r.error(f"{what}: needs {n} more values, file ends (truncated?)", self._offset())
        out = self.v[self.i : self.i + n]
        self.i += n
        return out

    def count(self, what: str, per_item: int, limit: int = 1 << 24) -> int:
        off = self._offset()
        n = int(self.take(1, what)[0])
        if n < 0 or n > limit or n * per_item > len(self.v) - self.i:
            raise self.r.error(f"{what}: implausible count {n}", off)
        return n

    def float_block(self, n: int, what: str) -> np.ndarray:
        pairs = self.take(2 * n, what)
        return _floats(pairs[0::2], pairs[1::2])

    def matrix(self, what: str) -> np.ndarray:
        off = self._offset()
        nr, nc = (-self.take(2, what + " shape")).tolist()
        if nr < 0 or nc < 0 or nr * nc * 2 > len(self.v) - self.i:
            raise self.r.error(f"{what}: implausible shape {nr}x{nc}", off)
        return self.float_block(nr * nc, what).reshape(nr, nc)


@dataclass
class ShapePredictor:
    """A dlib shape predictor held as dense numpy arrays.

    Attributes:
        initial_shape: float32 [P, 2] mean shape in box-normalised coordinates.
        split_idx: int64 [C, T, S, 2] feature indices of every split.
        split_thresh: float32 [C, T, S] split thresholds.
        leaves: float32 [C, T, L, 2P] leaf deltas.
        anchor_idx: int64 [C, F] anchor landmark of every feature pixel.
        deltas: float32 [C, F, 2] offsets of every feature pixel from its anchor (mean-shape frame).
    """

    initial_shape: np.ndarray
    split_idx: np.ndarray
    split_thresh: np.ndarray
    leaves: np.ndarray
    anchor_idx: np.ndarray
    deltas: np.ndarray
    source: str = ""

    @property
    def num_parts(self) -> int:
        return int(self.initial_shape.shape[0])

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | Path) -> "ShapePredictor":
        """Read a dlib ``shape_predictor`` ``.dat`` file (raises :class:`ModelFormatError`)."""
        r = read_dat(path)
        r.expect_int(1, "shape_predictor version")
        head = r.pos
        vals, offsets = r.varint_run("shape_predictor data")
        cur = _IntCursor(vals, offsets, r)
        init = cur.matrix("initial_shape")
        if init.shape[1] != 1 or init.shape[0] % 2 or init.shape[0] == 0:
            raise r.error(f"initial_shape must be a 2P x 1 column, found {init.shape}", head)
        n_parts = init.shape[0] // 2

        n_casc = cur.count("number of cascades", 1, limit=10_000)
        split_idx: list[np.ndarray] = []
        split_thr: list[np.ndarray] = []
        leaves: list[np.ndarray] = []
        shape_ts: tuple[int, int, int] | None = None
        two_p = 2 * n_parts
        for c in range(n_casc):
            off = cur._offset()
            n_trees = cur.count(f"cascade {c} tree count", 2, limit=1_000_000)
            if n_trees == 0:
                raise r.error(f"cascade {c} has no trees", off)
            # every tree is written as: n_s, n_s x (idx1, idx2, thresh m, e), n_l,
            # n_l x (-2P, -1, 2P x (m, e)); read the first tree's sizes, then all trees at once
            n_s = int(cur.v[cur.i]) if cur.i < len(cur.v) else -1
            n_l = n_s + 1
            if n_s < 0 or n_s > 1 << 16 or n_l & (n_l - 1):
                raise r.error(f"tree with {n_s} splits is not a complete binary tree", cur._offset())
            if shape_ts is not None and shape_ts != (n_trees, n_s, n_l):
                raise r.error("cascades of different sizes are not supported", off)
            shape_ts = (n_trees, n_s, n_l)
            rec = 2 + 4 * n_s + n_l * (2 + 2 * two_p)
            first = cur.i
            block = cur.take(n_trees * rec, f"cascade {c} trees").reshape(n_trees, rec)
            leaf_part = block[:, 2 + 4 * n_s :].reshape(n_trees, n_l, 2 + 2 * two_p)
            bad = (
                (block[:, 0] != n_s)
                | (block[:, 1 + 4 * n_s] != n_l)
                | np.any(leaf_part[:, :, 0] != -two_p, axis=1)
                | np.any(leaf_part[:, :, 1] != -1, axis=1)
            )
            if bad.any():
                t = int(np.flatnonzero(bad)[0])
                raise r.error(
                    f"cascade {c} tree {t} differs in layout from the first tree (corrupt file?)",
                    int(cur.off[first + t * rec]),
                )
            sp = block[:, 1 : 1 + 4 * n_s].reshape(n_trees, n_s, 4)
            vals_l = leaf_part[:, :, 2:]
            split_idx.append(sp[:, :, :2].copy())
            split_thr.append(_floats(sp[:, :, 2], sp[:, :, 3]).astype(np.float32))
            leaves.append(_floats(vals_l[..., 0::2], vals_l[..., 1::2]).astype(np.float32))

        n_a = cur.count("anchor_idx cascades", 1, limit=10_000)
        anchors = [cur.take(cur.count("anchor count", 1), "anchor_idx") for _ in range(n_a)]
        n_d = cur.count("deltas cascades", 1, limit=10_000)
        deltas = []
        for _ in range(n_d):
            k = cur.count("delta count", 4)
            deltas.append(cur.float_block(2 * k, "deltas").reshape(k, 2))
        if cur.i != len(vals):
            raise r.error("unexpected trailing data", cur._offset())
        if not (n_casc == n_a == n_d) or n_casc == 0:
            raise r.error(f"{n_casc} cascades but {n_a} anchor lists and {n_d} delta lists", head)
        n_feat = {len(a) for a in anchors} | {len(d) for d in deltas}
        if len(n_feat) != 1:
            raise r.error("cascades with different feature counts are not supported", head)
        nf = n_feat.pop()
        sp_all = np.stack(split_idx)
        if sp_all.size and (sp_all.min() < 0 or sp_all.max() >= nf):
            raise r.error(f"split feature index outside 0..{nf - 1}", head)
        an_all = np.stack(anchors)
        if an_all.size and (an_all.min() < 0 or an_all.max() >= n_parts):
            raise r.error(f"anchor index outside 0..{n_parts - 1}", head)
        sp = cls(
            initial_shape=init[:, 0].astype(np.float32).reshape(n_parts, 2),
            split_idx=sp_all,
            split_thresh=np.stack(split_thr),
            leaves=np.stack(leaves),
            anchor_idx=an_all,
            deltas=np.stack(deltas).astype(np.float32),
            source=str(path),
        )
        log.info(
            "shape predictor %s: %d parts, %d cascades x %d trees, %d features",
            Path(path).name,
            n_parts,
            n_casc,
            sp.split_idx.shape[1],
            nf,
        )
        return sp

    # ------------------------------------------------------------------ inference
    @staticmethod
    def intensity(image: np.ndarray) -> np.ndarray:
        """dlib's grey level: the image itself if 2-D, else ``(r+g+b)//3`` of an RGB uint8 image."""
        img = np.asarray(image)
        if img.ndim == 2:
            return img
        if img.ndim == 3 and img.shape[2] == 3:
            return (img.astype(np.uint16).sum(axis=2) // 3).astype(np.uint8)
        raise ConfigError(f"image must be HxW or HxWx3, got shape {img.shape}")

    def predict(self, image: np.ndarray, box: np.ndarray | tuple[float, float, float, float]) -> np.ndarray:
        """Landmarks ``(P, 2)`` float64 (integer-valued, as dlib's ``point``) for one face.

        Args:
            image: RGB uint8 ``HxWx3`` or grey ``HxW``.
            box: dlib rectangle ``(left, top, right, bottom)``, right/bottom inclusive;
                non-integers are rounded like dlib.
        """
        grey = self.intensity(image)
        b = np.asarray(box, np.float64).reshape(-1)
        if b.size != 4 or not np.all(np.isfinite(b)):
            raise ConfigError(f"box must be (left, top, right, bottom), got {box!r}")
        left, top, right, bottom = np.floor(b + 0.5)
        scale = np.array([right - left, bottom - top], np.float64)
        origin = np.array([left, top], np.float64)
        h, w = grey.shape
        cur = self.initial_shape.copy()
        n_trees, n_splits = self.split_thresh.shape[1:]
        depth = int(np.log2(n_splits + 1))
        trees = np.arange(n_trees)
        for c in range(self.split_idx.shape[0]):
            m, _ = similarity_transform(self.initial_shape, cur)
            m = m.astype(np.float32)
            d = self.deltas[c]
            p = np.empty_like(d)
            p[:, 0] = d[:, 0] * m[0, 0] + d[:, 1] * m[0, 1]
            p[:, 1] = d[:, 0] * m[1, 0] + d[:, 1] * m[1, 1]
            p += cur[self.anchor_idx[c]]
            q = np.floor(p.astype(np.float64) * scale + origin + 0.5).astype(np.int64)
            inside = (q[:, 0] >= 0) & (q[:, 0] < w) & (q[:, 1] >= 0) & (q[:, 1] < h)
            feats = np.zeros(len(q), np.float32)
            feats[inside] = grey[q[inside, 1], q[inside, 0]]
            node = np.zeros(n_trees, np.int64)
            idx, thr = self.split_idx[c], self.split_thresh[c]
            for _ in range(depth):
                i1 = idx[trees, node, 0]
                i2 = idx[trees, node, 1]
                go_left = (feats[i1] - feats[i2]) > thr[trees, node]
                node = np.where(go_left, 2 * node + 1, 2 * node + 2)
            leaf = self.leaves[c][trees, node - n_splits]  # [T, 2P]
            # dlib adds the trees' deltas one after another in float32
            acc = np.concatenate([cur.reshape(1, -1), leaf], axis=0)
            cur = np.cumsum(acc, axis=0, dtype=np.float32)[-1].reshape(-1, 2)
        return np.floor(cur.astype(np.float64) * scale + origin + 0.5)

    def predict_many(self, images: Sequence[np.ndarray], boxes: np.ndarray) -> np.ndarray:
        """:meth:`predict` for many faces at once: ``[N, P, 2]``, identical to N calls of :meth:`predict`.

        ``images[i]`` is the image of face ``i`` (the same array object may repeat: its grey
        levels are computed once). Every cascade runs on all faces together: one similarity
        transform per face (batched SVD), one gather of all feature pixels, one walk of all trees.
        """
        n = len(images)
        b = np.asarray(boxes, np.float64).reshape(-1, 4)
        if b.shape[0] != n or not np.all(np.isfinite(b)):
            raise ConfigError(f"need one finite (left, top, right, bottom) box per image, got {b.shape}")
        if n == 0:
            return np.zeros((0, self.num_parts, 2), np.float64)
        # Grey levels are only needed at the sampled pixels: gather R, G, B there and take dlib's
        # (r+g+b)/3 (rgb_pixel → unsigned char) per sample instead of converting whole images.
        rgb = all(
            isinstance(im, np.ndarray) and im.ndim == 3 and im.shape[-1] == 3 and im.dtype == np.uint8
            for im in images
        )
        ch = 3 if rgb else 1
        slot: dict[int, int] = {}
        parts, offs, hws = [], [], []
        off = 0
        for im in images:
            if id(im) in slot:
                continue
            a = np.ascontiguousarray(im) if rgb else self.intensity(im)
            slot[id(im)] = len(parts)
            parts.append(a.reshape(-1))
            offs.append(off)
            hws.append(a.shape[:2])
            off += a.size
        flat = np.concatenate(parts) if len(parts) > 1 else parts[0]
        which = np.array([slot[id(im)] for im in images], np.int64)
        base = np.asarray(offs, np.int64)[which]
        h = np.array([s[0] for s in hws], np.int64)[which]
        w = np.array([s[1] for s in hws], np.int64)[which]
        r = np.floor(b + 0.5)
        scale = np.stack([r[:, 2] - r[:, 0], r[:, 3] - r[:, 1]], axis=1)[:, None, :]  # [N,1,2]
        origin = r[:, None, :2]
        cur = np.repeat(self.initial_shape[None], n, axis=0)  # [N,P,2] float32
        n_trees, n_splits = self.split_thresh.shape[1:]
        depth = int(np.log2(n_splits + 1))
        trees = np.arange(n_trees)
        rows = np.arange(n)[:, None]
        for c in range(self.split_idx.shape[0]):
            m = similarity_matrices(self.initial_shape, cur).astype(np.float32)  # [N,2,2]
            d = self.deltas[c]
            p = np.empty((n,) + d.shape, np.float32)
            p[..., 0] = d[None, :, 0] * m[:, 0, 0, None] + d[None, :, 1] * m[:, 0, 1, None]
            p[..., 1] = d[None, :, 0] * m[:, 1, 0, None] + d[None, :, 1] * m[:, 1, 1, None]
            p += cur[:, self.anchor_idx[c]]
            q = np.floor(p.astype(np.float64) * scale + origin + 0.5).astype(np.int64)
            qx, qy = q[..., 0], q[..., 1]
            inside = (qx >= 0) & (qx < w[:, None]) & (qy >= 0) & (qy < h[:, None])
            lin = np.where(inside, base[:, None] + (qy * w[:, None] + qx) * ch, 0)
            if ch == 3:
                grey = (
                    flat[lin].astype(np.uint16) + flat[lin + 1] + flat[lin + 2]
                ) // 3  # dlib's rgb → grey, at the samples only
            else:
                grey = flat[lin]
            feats = np.where(inside, grey, 0).astype(np.float32)  # [N,F]
            # the tree walk with flat np.take gathers (several times faster than fancy indexing)
            node = np.zeros((n, n_trees), np.int64)
            idx1 = self.split_idx[c][..., 0].reshape(-1)
            idx2 = self.split_idx[c][..., 1].reshape(-1)
            thr = self.split_thresh[c].reshape(-1)
            ff = feats.reshape(-1)
            frow = rows * feats.shape[1]
            tbase = trees * n_splits
            for _ in range(depth):
                at = tbase + node
                f1 = np.take(ff, frow + np.take(idx1, at))
                f2 = np.take(ff, frow + np.take(idx2, at))
                go_left = (f1 - f2) > np.take(thr, at)
                node = np.where(go_left, 2 * node + 1, 2 * node + 2)
            lv = self.leaves[c]
            leaf = np.take(
                lv.reshape(-1, lv.shape[-1]), trees * lv.shape[1] + (node - n_splits), axis=0
            )  # [N,T,2P]
            # dlib adds the trees' deltas one after another in float32: a reduction over the middle
            # axis adds whole rows in order (numpy's pairwise summation only splits the innermost,
            # contiguous axis), the same sums as predict()'s cumulative sum
            acc = np.concatenate([cur.reshape(n, 1, -1), leaf], axis=1)
            cur = np.add.reduce(acc, axis=1, dtype=np.float32).reshape(n, -1, 2)
        return np.floor(cur.astype(np.float64) * scale + origin + 0.5)


_default: ShapePredictor | None = None
_default_lock = threading.Lock()


def load_default() -> ShapePredictor:
    """The 5-point predictor of the ``dlib-shape-predictor-5`` card (loaded once)."""
    global _default
    with _default_lock:
        if _default is None:
            from .. import zoo

            _default = ShapePredictor.load(zoo.fetch("dlib-shape-predictor-5", "dlib"))
        return _default
