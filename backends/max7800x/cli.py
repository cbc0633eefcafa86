"""``facesdk max7800x …``: the one command-line module of the MAX7800x backends.

* ``fit MODEL`` / ``run MODEL --input X.npy`` — fit report and bit-exact emulation of an ai8x network.
* ``export-db GALLERY OUT_DIR`` — ``weights_3.h`` + ``embeddings.h`` (+ ``--bin``, ``--flash``).
* ``import-db OUT_GALLERY --weights W --embeddings E`` and/or ``--flash F`` — back to a gallery.
* ``serial-info PORT`` — ask a facesdk-firmware board who it is (clear error on a silent or foreign port).
* ``uart-capture PORT OUT_DIR`` — save ``*STR*`` frames and FaceID results from a stock msdk demo.
* ``import-c DIR [--check] [--out NET.npz]`` — an ai8x-synthesis C project as an emulator network.
* ``simulate`` — a pty device speaking ``PROTOCOL.md`` on the emulator (a real board needs firmware
  that speaks that protocol; this repository does not contain it).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from facesdk.errors import ConfigError

__all__ = ["register"]

log = logging.getLogger(__name__)


def _shape(s: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in s.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad shape {s!r}; use CxHxW, e.g. 3x224x168") from None


def check_chip(name: str | None, what: str = "chip") -> str | None:
    """Validate a chip name (case-insensitive) with a one-line ConfigError, not an argparse usage dump."""
    if name is None:
        return None
    from .chips import chip_key

    return chip_key(name, what)


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    else:
        sys.stdout.write(text.rstrip("\n") + "\n")


def _looks_like_path(ref: str) -> bool:
    return "/" in ref or "\\" in ref or ref.endswith((".tar", ".pth", ".pt", ".npz"))


def _load(args: argparse.Namespace) -> Any:
    """Model from a checkpoint path (+ --yaml) or a model card id."""
    from facesdk.backend import Artifact
    from facesdk.errors import ModelNotFoundError

    from .accel.emulator import load_model
    from .backend import find_yaml

    args.chip = check_chip(args.chip)
    ref = args.model
    p = Path(ref)
    if not p.is_file() and (p.exists() or _looks_like_path(ref)):
        raise ModelNotFoundError(f"checkpoint not found: {ref}" + (" (a directory)" if p.is_dir() else ""))
    if p.is_file() and p.suffix.lower() == ".npz":  # a network saved by import-c --out
        from .accel.emulator import Model
        from .accel.network import load_network

        return Model(load_network(p), chip=args.chip)
    if p.is_file():
        art = Artifact(path=p, format="ai8x")
        if not args.yaml:
            raise ConfigError("pass --yaml NETWORK.yaml with a checkpoint path")
        yaml_path = find_yaml(art, args.yaml)
        shape = args.input_shape
    else:
        from facesdk import zoo

        card = zoo.get_card(ref)
        path = zoo.fetch(card, "ai8x")
        yaml_path = find_yaml(Artifact(path=path, format="ai8x", card=card), args.yaml)
        shape = args.input_shape or (
            tuple(card.params["input_shape"]) if card.params.get("input_shape") else None
        )
    return load_model(p if p.is_file() else path, yaml_path, chip=args.chip, input_shape=shape)


def cmd_fit(args: argparse.Namespace) -> int:
    """Print whether the model fits the chip; exit 0 if it fits, 1 if not."""
    from .accel.fit import check_fit

    model = _load(args)
    rep = check_fit(model, args.chip)
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(rep.to_dict(), indent=2) + "\n")
    else:
        sys.stdout.write(rep.format() + "\n")
    return 0 if rep.fits else 1


def cmd_run(args: argparse.Namespace) -> int:
    """Emulate the network on an input .npy (CHW ints in -128..127); save outputs to .npz."""
    model = _load(args)
    try:
        x = np.load(args.input, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read input {args.input}: {exc}") from None
    outs = model.run_all(x) if args.all_layers else model.run(x)
    names = (
        [f"L{l.index:02d}" for l in model.layers]
        if args.all_layers
        else [f"L{i:02d}" for i in model.output_layers]
    )
    if args.out:
        np.savez(args.out, **dict(zip(names, outs)))
    summary = {
        n: {"shape": list(o.shape), "min": int(o.min()), "max": int(o.max())} for n, o in zip(names, outs)
    }
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps({"outputs": summary, "saved": args.out}, indent=2) + "\n")
    else:
        for n, s in summary.items():
            sys.stdout.write(f"{n}: shape {tuple(s['shape'])} range {s['min']}..{s['max']}\n")
        if args.out:
            sys.stdout.write(f"saved to {args.out}\n")
    return 0


def _export_db(args: argparse.Namespace) -> int:
    from facesdk.gallery import Gallery

    from .firmware import DotProductDB, export_firmware_db

    args.profile = check_chip(args.profile, "profile")
    g = Gallery.load(args.gallery)
    files = export_firmware_db(
        g,
        args.out_dir,
        args.profile,
        capacity=args.capacity,
        threshold=args.score_threshold,
        flash=args.flash,
        weights_bin=args.bin,
        allow_other_model=args.allow_other_model,
    )
    db = DotProductDB.from_gallery(
        g,
        args.profile,
        capacity=args.capacity,
        threshold=args.score_threshold,
        allow_other_model=args.allow_other_model,
    )
    data = {
        "identities": len(db),
        "names": db.names,
        "profile": db.profile.name,
        "capacity": db.profile.capacity,
        "threshold": db.threshold,
        "files": {k: str(v) for k, v in files.items()},
    }
    _emit(
        args,
        data,
        f"exported {len(db)} identities for {db.profile.name} "
        f"(threshold {db.threshold}): " + ", ".join(str(v) for v in files.values()),
    )
    return 0


def _import_db(args: argparse.Namespace) -> int:
    from facesdk.errors import ConfigError

    from .firmware import import_firmware_db

    args.profile = check_chip(args.profile, "profile")
    if args.flash is None and (args.weights is None or args.embeddings is None):
        raise ConfigError("give --weights and --embeddings, and/or --flash")
    db = import_firmware_db(
        args.weights, args.embeddings, flash=args.flash, capacity=args.capacity, profile=args.profile
    )
    g = db.to_gallery(args.model_id, threshold=args.gallery_threshold)
    path = g.save(args.out_gallery)
    data = {
        "slots": len(db),
        "identities": len(g),
        "names": g.names,
        "profile": db.profile.name,
        "gallery": str(path),
    }
    _emit(args, data, f"imported {len(db)} slots ({len(g)} identities) into {path}")
    return 0


def _serial_info(args: argparse.Namespace) -> int:
    from .board.driver import Max7800xDevice

    with Max7800xDevice(args.port, baudrate=args.baudrate, timeout=args.timeout, retries=args.retries) as dev:
        info = dev.info()
    d = info.to_dict()
    d["port"] = args.port
    _emit(args, d, "\n".join(f"{k}: {v}" for k, v in d.items()))
    return 0


def _uart_capture(args: argparse.Namespace) -> int:
    from .board.uart import MsdkUartReader

    with MsdkUartReader(args.port, baudrate=args.baudrate) as rd:
        recs = rd.capture(args.out_dir, count=args.count, timeout=args.timeout)
    lines = [
        f"{r['image']}: {r['width']}x{r['height']} {r['pixel_format']} "
        + "; ".join(", ".join(f"{k}={v}" for k, v in res.items()) for res in r["results"])
        for r in recs
    ]
    _emit(args, recs, "\n".join(lines))
    return 0


def register(subparsers: Any) -> None:
    """Add ``max7800x`` and its sub-commands to facesdk's command line."""
    top = subparsers.add_parser("max7800x", help="MAX78000/MAX78002: fit check, emulation, database, board")
    sub = top.add_subparsers(dest="max7800x_command", metavar="SUBCOMMAND")
    top.set_defaults(func=lambda a: (top.print_help(), 2)[1])
    add_commands(sub)


def cmd_import_c(args: argparse.Namespace) -> int:
    """Import an ai8x-synthesis C project; ``--check`` runs its known-answer test (exit 0 only when every
    output word of ``sampleoutput.h`` matches); ``--out`` saves the network for ``run``."""
    from .accel.cproject import import_c_project, known_answer_test
    from .accel.network import save_network

    proj = import_c_project(args.directory)
    data: dict[str, Any] = {
        "arch": proj.network.arch,
        "chip": proj.chip,
        "layers": len(proj.network.layers),
        "input_shape": list(proj.network.input_shape),
    }
    lines = [
        f"{proj.network.arch}: {len(proj.network.layers)} layers, input {proj.network.input_shape}, "
        f"{proj.chip}"
    ]
    rc = 0
    if args.check:
        kat = known_answer_test(proj)
        data["known_answer_test"] = kat.to_dict()
        lines.append(
            f"known-answer test: {kat.words - kat.differing}/{kat.words} output words match "
            f"({'PASS' if kat.passed else 'FAIL'})"
        )
        lines += ["  " + m for m in kat.to_dict()["first_mismatches"]]
        rc = 0 if kat.passed else 1
    if args.out:
        if args.check and rc:
            lines.append("not saved: the known-answer test failed")
        else:
            data["saved"] = str(save_network(proj.network, args.out))
            lines.append(f"saved to {args.out} (facesdk max7800x run {args.out} --input X.npy)")
    _emit(args, data, "\n".join(lines))
    return rc


def cmd_simulate(args: argparse.Namespace) -> int:
    """Start the pty device simulator (facesdk protocol, emulated msdk demo pipeline) and serve until
    interrupted (or ``--duration`` seconds). Prints the port to open, e.g. ``serial-info PORT``."""
    import os
    import time

    from .board.simulator import DeviceSimulator, FacePipelineCompute

    args.chip = check_chip(args.chip)
    root = args.ai8x_dir or os.environ.get("FACESDK_AI8X_DIR")
    if not root:
        raise ConfigError("pass --ai8x-dir (trained/, networks/, msdk/) or set FACESDK_AI8X_DIR")
    if not Path(root).is_dir():
        from facesdk.errors import ModelNotFoundError

        raise ModelNotFoundError(f"ai8x directory not found: {root}")
    if args.duration is not None and args.duration < 0:
        raise ConfigError("--duration must be >= 0")
    comp = FacePipelineCompute.from_dir(
        root, args.chip, firmware_exact=not args.host_mode, generation=args.generation
    )
    label = args.chip.upper() + " (simulated)"
    sim = DeviceSimulator(comp, threshold=args.threshold, device=label).start()
    info = {
        "port": sim.port,
        "chip": args.chip,
        "generation": args.generation,
        "embedding_size": comp.embedding_size,
        "firmware_exact": not args.host_mode,
        "note": "a pty speaking PROTOCOL.md on the bit-exact emulator, not a board",
    }
    _emit(
        args,
        info,
        f"simulated {label} ({args.generation}, {comp.embedding_size}-d) on {sim.port}\n"
        f"try: facesdk max7800x serial-info {sim.port}   (Ctrl-C stops)",
    )
    sys.stdout.flush()
    try:
        if args.duration is None:
            while True:
                time.sleep(3600)
        else:
            time.sleep(args.duration)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


def add_commands(sub: Any) -> None:
    """Add every ``max7800x`` sub-command to the sub-parsers ``sub``."""

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "model", help="ai8x checkpoint (.pth.tar), network saved by import-c (.npz) or card id"
        )
        p.add_argument("--yaml", help="ai8x-synthesis network YAML (default: from the card)")
        p.add_argument("--chip", default="max78000", metavar="{max78000,max78002}")
        p.add_argument("--input-shape", type=_shape, help="CxHxW when the architecture is not known")
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON output")

    p = sub.add_parser("fit", help="does the network fit the chip? weights, bias, data, layers")
    common(p)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("run", help="emulate the network bit-exactly on an input .npy")
    common(p)
    p.add_argument("--input", required=True, help=".npy input, CHW integers in -128..127")
    p.add_argument("--out", help="save outputs to this .npz")
    p.add_argument("--all-layers", action="store_true", help="save every layer's output")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("import-c", help="import an ai8x-synthesis C project (cnn.c, weights.h) and test it")
    p.add_argument(
        "directory", help="folder with cnn.c, weights.h (sampledata.h, sampleoutput.h for --check)"
    )
    p.add_argument(
        "--check", action="store_true", help="run the known-answer test; exit 1 unless all words match"
    )
    p.add_argument("--out", help="save the network (.npz, no pickles) for 'facesdk max7800x run'")
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON output")
    p.set_defaults(func=cmd_import_c)

    p = sub.add_parser("simulate", help="start a pty device that speaks PROTOCOL.md on the emulator")
    p.add_argument("--chip", default="max78000", metavar="{max78000,max78002}")
    p.add_argument(
        "--generation",
        default="faceid_112",
        choices=["faceid_112", "faceid"],
        help="msdk demo generation: faceid_112 (64-d, current) or faceid (512-d, original)",
    )
    p.add_argument("--ai8x-dir", default=None, help="ai8x folder (default $FACESDK_AI8X_DIR)")
    p.add_argument("--threshold", type=int, default=70, help="firmware score threshold (MAX78000 demo: 70)")
    p.add_argument("--host-mode", action="store_true", help="host decode/crop instead of the firmware's")
    p.add_argument("--duration", type=float, default=None, help="serve this many seconds, then exit")
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON output")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("export-db", help="export a gallery as MAX7800x FaceID firmware database files")
    p.add_argument("gallery", help="facesdk gallery (.npz) of 64-d embeddings")
    p.add_argument(
        "out_dir", help="folder for weights_3.h, embeddings.h (and weights_3.bin, facedb_flash.hex)"
    )
    p.add_argument("--profile", default="max78000", metavar="{max78000,max78002}")
    p.add_argument("--capacity", type=int, default=None, help="slots in the dot-product layer (default 1024)")
    p.add_argument(
        "--score-threshold",
        type=int,
        default=None,
        help="int8 score threshold (default: the demo's, 70 / 64)",
    )
    p.add_argument(
        "--flash", action="store_true", help="also write the MAX78002 record-mode flash image (.hex)"
    )
    p.add_argument("--bin", action="store_true", help="also write weights_3.bin")
    p.add_argument(
        "--allow-other-model",
        action="store_true",
        help="export a gallery not enrolled with ai85-faceid-112 (the firmware's FaceID network)",
    )
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON output")
    p.set_defaults(func=_export_db)

    p = sub.add_parser("import-db", help="read MAX7800x FaceID firmware database files into a gallery")
    p.add_argument("out_gallery", help="gallery file to write (.npz)")
    p.add_argument("--weights", default=None, help="weights_3.h")
    p.add_argument("--embeddings", default=None, help="embeddings.h")
    p.add_argument("--flash", default=None, help="record-mode flash image (.hex or raw .bin from 0x10268000)")
    p.add_argument("--profile", default=None, metavar="{max78000,max78002}")
    p.add_argument("--capacity", type=int, default=None)
    p.add_argument("--model-id", default="ai85-faceid-112", help="model id recorded in the gallery")
    p.add_argument(
        "--gallery-threshold", type=float, default=0.5, help="cosine threshold stored in the gallery"
    )
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON output")
    p.set_defaults(func=_import_db)

    p = sub.add_parser("serial-info", help="query a board running the facesdk serial protocol")
    p.add_argument("port", help="serial port or pyserial URL, e.g. /dev/ttyACM0, COM5")
    p.add_argument("--baudrate", type=int, default=921600)
    p.add_argument("--timeout", type=float, default=1.0, help="seconds per attempt")
    p.add_argument("--retries", type=int, default=2)
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON output")
    p.set_defaults(func=_serial_info)

    p = sub.add_parser("uart-capture", help="save *STR* frames and results from a stock msdk demo")
    p.add_argument("port")
    p.add_argument("out_dir")
    p.add_argument("--baudrate", type=int, default=115200)
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON output")
    p.set_defaults(func=_uart_capture)
