"""Entry point of the MAX78000/MAX78002 backends: Backend classes, CLI commands, the card recipe."""

from __future__ import annotations

from typing import Any

from facesdk.plugins import hookimpl


@hookimpl
def facesdk_backends() -> list[type]:
    from .backend import Max78000Backend, Max78002Backend

    return [Max78000Backend, Max78002Backend]


@hookimpl
def facesdk_cli(subparsers: Any) -> None:
    from .cli import register

    register(subparsers)


@hookimpl
def facesdk_recipes() -> dict[str, Any]:
    from .zoo_source import copy_from_ai8x_dir, import_from_c_project

    return {"ai8x-dir": copy_from_ai8x_dir, "ai8x-cproject": import_from_c_project}
