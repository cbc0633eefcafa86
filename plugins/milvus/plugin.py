"""Entry point of the Milvus gallery store (registered in pyproject like any third-party plugin)."""

from __future__ import annotations

from typing import Any

from facesdk.plugins import hookimpl


def _open(uri: str, **kw: Any) -> Any:
    from .store import MilvusStore  # pymilvus is imported only when a Milvus gallery is opened

    return MilvusStore.open(uri, **kw)


@hookimpl
def facesdk_gallery_stores() -> dict[str, Any]:
    return {"milvus": _open}
