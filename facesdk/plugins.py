"""Plugin system: pluggy hook specifications and entry-point discovery.

A plugin is any module or object with ``@hookimpl`` functions. Installed
plugins are found through the entry-point group ``facesdk``; built-in backends
are registered exactly the same way (see ``pyproject.toml``). Third parties add
a backend with, in their own ``pyproject.toml``::

    [project.entry-points.facesdk]
    mybackend = "my_package.facesdk_plugin"

where ``my_package/facesdk_plugin.py`` contains::

    from facesdk.plugins import hookimpl

    @hookimpl
    def facesdk_backends():
        return [MyBackend]

Every extension point is such a hook: backends, detector families (decoders), aligners,
landmarkers, model cards (which also carry alignment templates), conversion recipes,
datasets, gallery stores and CLI commands. The core's own detector families, aligners and
landmarkers are hook implementations too (:mod:`facesdk.builtin`, registered first, so an
installed plugin may replace one by name); there are no tables of module names to import.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import pluggy

from .errors import BackendUnavailableError

if TYPE_CHECKING:  # pragma: no cover
    from .backend import Availability, Backend
    from .detect.base import FaceDetector

__all__ = [
    "ENTRY_POINT_GROUP",
    "hookimpl",
    "hookspec",
    "get_plugin_manager",
    "register_plugin",
    "get_backend",
    "backend_classes",
    "backend_order",
    "detector_families",
    "aligners",
    "landmarker_families",
    "list_backends",
    "BackendInfo",
]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "facesdk"
hookspec = pluggy.HookspecMarker("facesdk")
hookimpl = pluggy.HookimplMarker("facesdk")


class FaceSDKSpec:
    """Hook specifications every facesdk plugin may implement."""

    @hookspec
    def facesdk_backends(self) -> list[type["Backend"]]:  # type: ignore[empty-body]
        """Return Backend classes this plugin provides."""

    @hookspec
    def facesdk_detector_families(self) -> list[type["FaceDetector"]]:  # type: ignore[empty-body]
        """Return detector decoder classes (:class:`facesdk.detect.FaceDetector` subclasses).

        Each class names its family in the ``family`` class attribute; a model card whose
        ``family`` matches is decoded by it.
        """

    @hookspec
    def facesdk_aligners(self) -> dict[str, Any]:  # type: ignore[empty-body]
        """Return aligners by template name: ``func(image_rgb, box[4], landmarks | None) -> crop``.

        Names ``"<template>:<point set>"`` align the points of a landmarker whose ``output``
        is ``<point set>``. Plain 5-point templates need no aligner: they are card data
        (``[alignment]`` points and size in an embedder card).
        """

    @hookspec
    def facesdk_landmarkers(self) -> dict[str, Any]:  # type: ignore[empty-body]
        """Return landmarker families: ``factory(card) -> facesdk.landmarks.Landmarker``."""

    @hookspec
    def facesdk_model_cards(self) -> list[Any]:  # type: ignore[empty-body]
        """Return model cards (``ModelCard`` objects or paths to card TOML files/dirs)."""

    @hookspec
    def facesdk_datasets(self) -> dict[str, Any]:  # type: ignore[empty-body]
        """Return benchmark dataset loaders by name (callables ``(root, **kw) -> Dataset``)."""

    @hookspec
    def facesdk_bench_stages(self) -> dict[str, Any]:  # type: ignore[empty-body]
        """Return benchmark stages by name: ``stage(ctx)`` (see ``facesdk_bench.stages``)."""

    @hookspec
    def facesdk_gallery_stores(self) -> dict[str, Any]:  # type: ignore[empty-body]
        """Return gallery store factories by name (e.g. ``"milvus"``)."""

    @hookspec
    def facesdk_recipes(self) -> dict[str, Any]:  # type: ignore[empty-body]
        """Return model conversion recipes by name (see ``facesdk.zoo.register_recipe``)."""

    @hookspec
    def facesdk_cli(self, subparsers: Any) -> None:
        """Add sub-commands to the ``facesdk`` command line."""


_lock = threading.Lock()
#: Name under which the core's own hook implementations (:mod:`facesdk.builtin`) are registered.
BUILTIN_PLUGIN = "facesdk-core"
#: Merged results of the extension-point hooks, per hook name (cleared when plugins change).
_collected: dict[str, dict[str, Any]] = {}
#: Entry points that failed to load: name -> reason (shown by ``list_plugin_errors``).
_failed: dict[str, str] = {}


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    """Load each entry point on its own, so one broken plugin cannot hide the others."""
    from importlib.metadata import entry_points

    _failed.clear()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        try:
            pm.register(ep.load(), name=ep.name)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the SDK
            _failed[ep.name] = f"{type(exc).__name__}: {exc}"
            log.warning("facesdk plugin %r (%s) failed to load: %s", ep.name, ep.value, exc)


def list_plugin_errors() -> dict[str, str]:
    """Plugins whose entry point could not be loaded, with the reason."""
    get_plugin_manager()
    return dict(_failed)
_pm: pluggy.PluginManager | None = None


def get_plugin_manager() -> pluggy.PluginManager:
    """Return the process-wide plugin manager, loading entry points on first use."""
    global _pm
    with _lock:
        if _pm is None:
            pm = pluggy.PluginManager("facesdk")
            pm.add_hookspecs(FaceSDKSpec)
            from . import builtin

            pm.register(builtin, name=BUILTIN_PLUGIN)
            _load_entry_points(pm)
            _pm = pm
            _collected.clear()
        return _pm


def reset_plugin_manager() -> None:
    """Forget loaded plugins so entry points are discovered again (tests, notebooks)."""
    global _pm
    with _lock:
        _pm = None
        _collected.clear()
    from . import zoo

    zoo.reload_cards()


def register_plugin(plugin: object, name: str | None = None) -> None:
    """Register a plugin object at run time (same hooks as an entry point)."""
    pm = get_plugin_manager()
    if name is not None and pm.get_plugin(name) is not None:
        pm.unregister(name=name)
    pm.register(plugin, name=name)
    _collected.clear()


def unregister_plugin(name: str) -> None:
    """Remove a plugin registered under ``name`` (no error if absent)."""
    pm = get_plugin_manager()
    if pm.get_plugin(name) is not None:
        pm.unregister(name=name)
    _collected.clear()


def backend_classes() -> dict[str, type["Backend"]]:
    """All registered Backend classes by name (later registrations win)."""
    out: dict[str, type[Backend]] = {}
    for group in reversed(get_plugin_manager().hook.facesdk_backends()):
        for cls in group or ():
            out[cls.name] = cls
    return out


def _collect(hook: str) -> dict[str, Any]:
    """Merge a name-keyed hook's results; plugins registered later override earlier ones.

    pluggy calls the most recently registered implementation first, so the results are
    merged in reverse: the core's built-ins first, then installed plugins, then run-time ones.
    """
    pm = get_plugin_manager()
    with _lock:
        got = _collected.get(hook)
    if got is None:
        got = {}
        for part in reversed(getattr(pm.hook, hook)()):
            if isinstance(part, dict):
                got.update(part)
            else:  # a list of classes that name themselves (``family``)
                got.update({cls.family: cls for cls in part or ()})
        with _lock:
            _collected[hook] = got
    return got


def detector_families() -> Mapping[str, type["FaceDetector"]]:
    """Every detector family (``facesdk_detector_families`` hook): family name → decoder class."""
    return MappingProxyType(_collect("facesdk_detector_families"))


def aligners() -> Mapping[str, Any]:
    """Every registered aligner (``facesdk_aligners`` hook): template name → function."""
    return MappingProxyType(_collect("facesdk_aligners"))


def landmarker_families() -> Mapping[str, Any]:
    """Every landmarker family (``facesdk_landmarkers`` hook): family name → factory(card)."""
    return MappingProxyType(_collect("facesdk_landmarkers"))


def backend_order() -> list[str]:
    """Registered backend names in the order ``backend="auto"`` tries them (``Backend.priority``)."""
    classes = backend_classes()
    return sorted(classes, key=lambda n: (getattr(classes[n], "priority", 100), n))


def get_backend(name: str) -> "Backend":
    """Instantiate the backend called ``name`` or one of its ``aliases`` (e.g. ort, ov, litert, trt)."""
    classes = backend_classes()
    if name not in classes:
        for cls in classes.values():
            if name in getattr(cls, "aliases", ()):
                return cls()
        known = ", ".join(sorted(classes)) or "none"
        raise BackendUnavailableError(f"unknown backend {name!r} (installed: {known})")
    return classes[name]()


class BackendInfo(dict):  # type: ignore[type-arg]
    """A row of :func:`list_backends` (a dict, for JSON output)."""


def list_backends() -> list[BackendInfo]:
    """Describe every registered backend: availability, devices, formats, reason."""
    rows: list[BackendInfo] = []
    for name, cls in sorted(backend_classes().items()):
        try:
            av: Availability = cls().available()
            row = BackendInfo(
                name=name,
                available=av.available,
                devices=list(av.devices),
                formats=list(cls.formats),
                version=av.version,
                reason=av.reason,
            )
        except Exception as exc:  # availability checks must never crash a listing
            row = BackendInfo(
                name=name, available=False, devices=[], formats=list(getattr(cls, "formats", ())),
                version=None, reason=f"availability check failed: {exc}",
            )
        rows.append(row)
    return rows
