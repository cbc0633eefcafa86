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
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

import pluggy

from .errors import BackendUnavailableError

if TYPE_CHECKING:  # pragma: no cover
    from .backend import Availability, Backend

__all__ = [
    "ENTRY_POINT_GROUP",
    "hookimpl",
    "hookspec",
    "get_plugin_manager",
    "register_plugin",
    "get_backend",
    "backend_classes",
    "backend_order",
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
    def facesdk_model_cards(self) -> list[Any]:  # type: ignore[empty-body]
        """Return model cards (``ModelCard`` objects or paths to card TOML files/dirs)."""

    @hookspec
    def facesdk_datasets(self) -> dict[str, Any]:  # type: ignore[empty-body]
        """Return benchmark dataset loaders by name (callables ``(root, **kw) -> Dataset``)."""

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
            _load_entry_points(pm)
            _pm = pm
        return _pm


def reset_plugin_manager() -> None:
    """Forget loaded plugins so entry points are discovered again (tests, notebooks)."""
    global _pm
    with _lock:
        _pm = None
    from . import zoo

    zoo.reload_cards()


def register_plugin(plugin: object, name: str | None = None) -> None:
    """Register a plugin object at run time (same hooks as an entry point)."""
    pm = get_plugin_manager()
    if name is not None and pm.get_plugin(name) is not None:
        pm.unregister(name=name)
    pm.register(plugin, name=name)


def unregister_plugin(name: str) -> None:
    """Remove a plugin registered under ``name`` (no error if absent)."""
    pm = get_plugin_manager()
    if pm.get_plugin(name) is not None:
        pm.unregister(name=name)


def backend_classes() -> dict[str, type["Backend"]]:
    """All registered Backend classes by name (later registrations win)."""
    out: dict[str, type[Backend]] = {}
    for group in reversed(get_plugin_manager().hook.facesdk_backends()):
        for cls in group or ():
            out[cls.name] = cls
    return out


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
