"""``facesdk gallery info|list|remove|rename|export|import|migrate`` and ``facesdk collect``.

Registered through the ``facesdk_cli`` hook (entry point ``gallery`` in pyproject), like a plugin's
commands. A gallery argument is a path (``people.npz``) or a store URI (``milvus:faces.db``);
``--store-opt key=value`` passes options to the store (e.g. ``collection=staff``). Every command
accepts ``--json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError, GalleryError
from ..plugins import hookimpl

__all__ = ["facesdk_cli", "register"]

log = logging.getLogger(__name__)


def _opts(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in getattr(args, "store_opt", None) or []:
        if "=" not in kv:
            raise ConfigError(f"--store-opt wants key=value, got {kv!r}")
        k, v = kv.split("=", 1)
        out[k.strip()] = v
    return out


def _open(uri: str, args: argparse.Namespace, **kw: Any) -> Any:
    from . import Gallery

    return Gallery.open(uri, create=False, **{**_opts(args), **kw})


def _out(args: argparse.Namespace, data: Any, text: str) -> None:
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    else:
        sys.stdout.write(text.rstrip("\n") + "\n")


def cmd_info(args: argparse.Namespace) -> int:
    g = _open(args.gallery, args)
    meta = g.metadata()
    lines = [f"{k}: {v}" for k, v in meta.items() if k != "format"]
    _out(args, meta, "\n".join(lines))
    g.close()
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    g = _open(args.gallery, args)
    counts = g.counts()
    rows: list[dict[str, Any]] = [{"name": n, "samples": counts[n]} for n in g.names]
    if args.images:
        by: dict[str, list[dict[str, Any]]] = {}
        for r in g.images():
            by.setdefault(r.name, []).append({"image_id": r.image_id, "meta": r.meta, "crop": r.has_crop})
        for row in rows:
            row["images"] = by.get(row["name"], [])
    lines = []
    for row in rows:
        lines.append(f"{row['name']}\t{row['samples']}")
        for im in row.get("images", []):
            src = im["meta"].get("source", "")
            lines.append(f"  {im['image_id']}  {src}{'  [crop]' if im['crop'] else ''}")
    _out(args, rows, "\n".join(lines) or "(empty gallery)")
    g.close()
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    g = _open(args.gallery, args)
    if not args.names and not args.image:
        raise ConfigError("give identity names and/or --image IDs to remove")
    removed: dict[str, Any] = {"identities": {}, "images": 0}
    for n in args.names:
        removed["identities"][n] = g.remove(n)
    if args.image:
        removed["images"] = g.remove_images(args.image)
    g.save()
    removed["identities_left"] = len(g)
    text = "\n".join(
        [f"removed {n} ({k} photo(s))" for n, k in removed["identities"].items()]
        + ([f"removed {removed['images']} photo(s)"] if args.image else [])
    )
    _out(args, removed, text)
    g.close()
    return 0


def cmd_rename(args: argparse.Namespace) -> int:
    g = _open(args.gallery, args)
    g.rename(args.old, args.new)
    g.save()
    _out(args, {"renamed": args.old, "to": args.new}, f"renamed {args.old} to {args.new}")
    g.close()
    return 0


def _dest(uri: str, src: Any, args: argparse.Namespace, **prov: Any) -> Any:
    from . import Gallery

    p = src.provenance
    kw = {
        "model_id": p.model_id,
        "embedding_size": p.embedding_size,
        "model_sha256": p.model_sha256,
        "backend": p.backend,
        "precision": p.precision,
        "threshold": p.threshold,
        "calibration": p.calibration,
    }
    kw.update(prov)
    dest_opts = {}
    for kv in getattr(args, "dest_opt", None) or []:
        if "=" not in kv:
            raise ConfigError(f"--dest-opt wants key=value, got {kv!r}")
        k, v = kv.split("=", 1)
        dest_opts[k.strip()] = v
    keep = any(r.has_crop for r in src.images()) if src.store.kind == "file" else False
    if keep and not uri.startswith("milvus:"):
        dest_opts.setdefault("keep_crops", True)
    return Gallery.open(uri, **kw, **dest_opts)


def cmd_export(args: argparse.Namespace) -> int:
    src = _open(args.gallery, args)
    dest = _dest(args.dest, src, args)
    return _copy(args, src, dest, "exported", f"to {args.dest}", "dest", args.dest)


def cmd_import(args: argparse.Namespace) -> int:
    from . import Gallery

    dest = _open(args.gallery, args)
    src = Gallery.open(args.source, create=False)
    return _copy(args, src, dest, "imported", f"from {args.source}", "source", args.source)


def _copy(
    args: argparse.Namespace, src: Any, dest: Any, verb: str, tail: str, key: str, where: str
) -> int:
    """Copy every photo of ``src`` into ``dest`` (export and import), save, report, close both."""
    from .tools import copy_gallery

    rep = copy_gallery(src, dest)
    dest.save()
    rep[key] = where
    what = f"{rep['copied']} photo(s) of {rep['identities']} identities"
    _out(
        args,
        rep,
        f"{verb} {what} {tail}" + (f" ({rep['skipped']} already there)" if rep["skipped"] else ""),
    )
    src.close()
    dest.close()
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from ..cli import _recognizer
    from .tools import migrate_gallery

    src = _open(args.gallery, args)
    if not args.embedder:
        raise ConfigError("give the new model with --embedder CARD_ID")
    rec = _recognizer(args)
    if Path(args.dest).exists() if ":" not in args.dest else False:
        raise GalleryError(f"{args.dest} exists: migrate writes a new gallery")
    dest = _dest(
        args.dest,
        src,
        args,
        **rec.gallery_provenance(),
        threshold=rec.threshold,
        calibration=None,
    )
    rep = migrate_gallery(src, dest, rec)
    dest.save()
    d = {**rep.to_dict(), "dest": args.dest, "model": rec.model_id}
    _out(
        args,
        d,
        f"re-embedded {rep.reembedded} photo(s) of {rep.identities} identities with {rec.model_id} "
        f"into {args.dest}" + (f"; {len(rep.skipped)} photo(s) had no crop" if rep.skipped else ""),
    )
    return 0


def register(subparsers: Any) -> None:
    """Add ``gallery`` (with its sub-commands) and ``collect``."""
    from ..cli import add_common

    common = argparse.ArgumentParser(add_help=False)
    add_common(common)
    gp = subparsers.add_parser("gallery", parents=[common], help="inspect and maintain galleries")
    gsub = gp.add_subparsers(dest="gallery_command", metavar="ACTION", required=True)

    def sub(name: str, helptext: str, func: Any) -> argparse.ArgumentParser:
        p = gsub.add_parser(name, parents=[common], help=helptext)
        p.add_argument("gallery", help="gallery path or store URI (e.g. people.npz, milvus:faces.db)")
        p.add_argument(
            "--store-opt",
            action="append",
            metavar="KEY=VALUE",
            help="store option, e.g. collection=staff (repeatable)",
        )
        p.set_defaults(func=func)
        return p

    sub("info", "provenance, counts, store", cmd_info)
    p = sub("list", "identities (and photos with --images)", cmd_list)
    p.add_argument("--images", action="store_true", help="also list each photo (id, source, crop kept)")
    p = sub("remove", "remove identities or single photos", cmd_remove)
    p.add_argument("names", nargs="*")
    p.add_argument("--image", action="append", metavar="IMAGE_ID", help="remove one photo (repeatable)")
    p = sub("rename", "rename an identity", cmd_rename)
    p.add_argument("old")
    p.add_argument("new")
    for name, func, helptext, arg in (
        ("export", cmd_export, "copy every photo into another gallery/store (same model)", "dest"),
        ("import", cmd_import, "copy another gallery's photos into this one (same model)", "source"),
        (
            "migrate",
            cmd_migrate,
            "re-embed kept face crops with another model (--embedder) into a new gallery",
            "dest",
        ),
    ):
        p = sub(name, helptext, func)
        p.add_argument(arg)
        p.add_argument("--dest-opt", action="append", metavar="KEY=VALUE", help="option of the other store")

    from .collect import register_cli

    register_cli(subparsers, common)


@hookimpl
def facesdk_cli(subparsers: Any) -> None:
    register(subparsers)
