"""``facesdk max7800x fit|run …``: fit report and emulation of ai8x networks from the command line."""

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


CHIP_NAMES = ("max78000", "max78002")


def check_chip(name: str | None, what: str = "chip") -> str | None:
    """Validate a chip name (case-insensitive) with a one-line ConfigError, not an argparse usage dump."""
    if name is None:
        return None
    n = str(name).lower()
    if n not in CHIP_NAMES:
        raise ConfigError(f"unknown {what} {name!r}; use max78000 or max78002")
    return n


def _looks_like_path(ref: str) -> bool:
    return "/" in ref or "\\" in ref or ref.endswith((".tar", ".pth", ".pt"))


def _load(args: argparse.Namespace) -> Any:
    """Model from a checkpoint path (+ --yaml) or a model card id."""
    from facesdk.backend import Artifact
    from facesdk.errors import ModelNotFoundError

    from .backend import find_yaml
    from .emulator import load_model

    args.chip = check_chip(args.chip)
    ref = args.model
    p = Path(ref)
    if not p.is_file() and (p.exists() or _looks_like_path(ref)):
        raise ModelNotFoundError(f"checkpoint not found: {ref}" + (" (a directory)" if p.is_dir() else ""))
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
        shape = args.input_shape or (tuple(card.params["input_shape"]) if card.params.get("input_shape") else None)
    return load_model(p if p.is_file() else path, yaml_path, chip=args.chip, input_shape=shape)


def cmd_fit(args: argparse.Namespace) -> int:
    """Print whether the model fits the chip; exit 0 if it fits, 1 if not."""
    from .fit import check_fit

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
    names = [f"L{l.index:02d}" for l in model.layers] if args.all_layers else [f"L{i:02d}" for i in model.output_layers]
    if args.out:
        np.savez(args.out, **dict(zip(names, outs)))
    summary = {n: {"shape": list(o.shape), "min": int(o.min()), "max": int(o.max())} for n, o in zip(names, outs)}
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps({"outputs": summary, "saved": args.out}, indent=2) + "\n")
    else:
        for n, s in summary.items():
            sys.stdout.write(f"{n}: shape {tuple(s['shape'])} range {s['min']}..{s['max']}\n")
        if args.out:
            sys.stdout.write(f"saved to {args.out}\n")
    return 0


def register(subparsers: Any) -> None:
    """Add ``max7800x`` with ``fit`` and ``run`` (and the serial commands when installed)."""
    top = subparsers.add_parser("max7800x", help="MAX78000/MAX78002: fit check, emulation, board")
    sub = top.add_subparsers(dest="max7800x_command", metavar="SUBCOMMAND")
    top.set_defaults(func=lambda a: (top.print_help(), 2)[1])

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("model", help="ai8x checkpoint (.pth.tar) or model card id")
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

    try:
        from . import serial_cli  # the serial board commands (separate module)
    except ImportError:
        serial_cli = None  # type: ignore[assignment]
    if serial_cli is not None and hasattr(serial_cli, "register"):
        serial_cli.register(sub)
