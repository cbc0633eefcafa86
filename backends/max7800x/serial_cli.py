"""``facesdk max7800x`` sub-commands for firmware databases and serial devices.

``register(subparsers)`` is called by the backend's ``cli.py`` with the ``max7800x`` sub-parsers:

* ``export-db GALLERY OUT_DIR`` — ``weights_3.h`` + ``embeddings.h`` (+ ``--bin``, ``--flash``).
* ``import-db OUT_GALLERY --weights W --embeddings E`` and/or ``--flash F`` — back to a gallery.
* ``serial-info PORT`` — ask a facesdk-firmware board who it is (clear error on a silent or foreign port).
* ``uart-capture PORT OUT_DIR`` — save ``*STR*`` frames and FaceID results from a stock msdk demo.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .cli import check_chip

__all__ = ["register"]


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    else:
        sys.stdout.write(text.rstrip("\n") + "\n")


def _export_db(args: argparse.Namespace) -> int:
    from facesdk.gallery import Gallery

    from .dbexport import DotProductDB, export_firmware_db

    args.profile = check_chip(args.profile, "profile")
    g = Gallery.load(args.gallery)
    files = export_firmware_db(g, args.out_dir, args.profile, capacity=args.capacity,
                               threshold=args.score_threshold, flash=args.flash, weights_bin=args.bin)
    db = DotProductDB.from_gallery(g, args.profile, capacity=args.capacity, threshold=args.score_threshold)
    data = {"identities": len(db), "names": db.names, "profile": db.profile.name,
            "capacity": db.profile.capacity, "threshold": db.threshold,
            "files": {k: str(v) for k, v in files.items()}}
    _emit(args, data, f"exported {len(db)} identities for {db.profile.name} "
                      f"(threshold {db.threshold}): " + ", ".join(str(v) for v in files.values()))
    return 0


def _import_db(args: argparse.Namespace) -> int:
    from facesdk.errors import ConfigError

    from .dbexport import import_firmware_db

    args.profile = check_chip(args.profile, "profile")
    if args.flash is None and (args.weights is None or args.embeddings is None):
        raise ConfigError("give --weights and --embeddings, and/or --flash")
    db = import_firmware_db(args.weights, args.embeddings, flash=args.flash, capacity=args.capacity,
                            profile=args.profile)
    g = db.to_gallery(args.model_id, threshold=args.gallery_threshold)
    path = g.save(args.out_gallery)
    data = {"slots": len(db), "identities": len(g), "names": g.names, "profile": db.profile.name,
            "gallery": str(path)}
    _emit(args, data, f"imported {len(db)} slots ({len(g)} identities) into {path}")
    return 0


def _serial_info(args: argparse.Namespace) -> int:
    from .driver import Max7800xDevice

    with Max7800xDevice(args.port, baudrate=args.baudrate, timeout=args.timeout, retries=args.retries) as dev:
        info = dev.info()
    d = info.to_dict()
    d["port"] = args.port
    _emit(args, d, "\n".join(f"{k}: {v}" for k, v in d.items()))
    return 0


def _uart_capture(args: argparse.Namespace) -> int:
    from .uart import MsdkUartReader

    with MsdkUartReader(args.port, baudrate=args.baudrate) as rd:
        recs = rd.capture(args.out_dir, count=args.count, timeout=args.timeout)
    lines = [f"{r['image']}: {r['width']}x{r['height']} {r['pixel_format']} "
             + "; ".join(", ".join(f"{k}={v}" for k, v in res.items()) for res in r["results"]) for r in recs]
    _emit(args, recs, "\n".join(lines))
    return 0


def register(subparsers: Any) -> None:
    """Add the database and serial commands to the ``max7800x`` sub-parsers."""
    p = subparsers.add_parser("export-db", help="export a gallery as MAX7800x FaceID firmware database files")
    p.add_argument("gallery", help="facesdk gallery (.npz) of 64-d embeddings")
    p.add_argument("out_dir", help="folder for weights_3.h, embeddings.h (and weights_3.bin, facedb_flash.hex)")
    p.add_argument("--profile", default="max78000", metavar="{max78000,max78002}")
    p.add_argument("--capacity", type=int, default=None, help="slots in the dot-product layer (default 1024)")
    p.add_argument("--score-threshold", type=int, default=None,
                   help="int8 score threshold (default: the demo's, 70 / 64)")
    p.add_argument("--flash", action="store_true", help="also write the MAX78002 record-mode flash image (.hex)")
    p.add_argument("--bin", action="store_true", help="also write weights_3.bin")
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON output")
    p.set_defaults(func=_export_db)

    p = subparsers.add_parser("import-db", help="read MAX7800x FaceID firmware database files into a gallery")
    p.add_argument("out_gallery", help="gallery file to write (.npz)")
    p.add_argument("--weights", default=None, help="weights_3.h")
    p.add_argument("--embeddings", default=None, help="embeddings.h")
    p.add_argument("--flash", default=None, help="record-mode flash image (.hex or raw .bin from 0x10268000)")
    p.add_argument("--profile", default=None, metavar="{max78000,max78002}")
    p.add_argument("--capacity", type=int, default=None)
    p.add_argument("--model-id", default="ai85-faceid_112", help="model id recorded in the gallery")
    p.add_argument("--gallery-threshold", type=float, default=0.5, help="cosine threshold stored in the gallery")
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON output")
    p.set_defaults(func=_import_db)

    p = subparsers.add_parser("serial-info", help="query a board running the facesdk serial protocol")
    p.add_argument("port", help="serial port or pyserial URL, e.g. /dev/ttyACM0, COM5")
    p.add_argument("--baudrate", type=int, default=921600)
    p.add_argument("--timeout", type=float, default=1.0, help="seconds per attempt")
    p.add_argument("--retries", type=int, default=2)
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON output")
    p.set_defaults(func=_serial_info)

    p = subparsers.add_parser("uart-capture", help="save *STR* frames and results from a stock msdk demo")
    p.add_argument("port")
    p.add_argument("out_dir")
    p.add_argument("--baudrate", type=int, default=115200)
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON output")
    p.set_defaults(func=_uart_capture)
