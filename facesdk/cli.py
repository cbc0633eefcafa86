"""The ``facesdk`` command line.

Every command accepts ``--json`` for machine-readable output (``--jsonl``: one JSON object per
line, written as each image is done). Bad input ends with a one-line message on stderr and a
non-zero exit code (see ``facesdk.errors``), never a traceback (use ``-v`` to see one for internal
errors); usage errors are one line too. Commands over several images report a bad image on its own
line, go on with the others and exit with the first error's code at the end. A folder argument
means the images in it; ``-`` reads one image from standard input.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from . import __version__
from .errors import ConfigError, FaceSDKError, NoFaceError

__all__ = ["main", "build_parser", "add_common"]

log = logging.getLogger("facesdk.cli")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (not the whole usage block)."""

    def error(self, message: str) -> Any:  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {v}")
    return v


def _cosine(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(v) or not -1.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"a cosine threshold lies in [-1, 1], not {text}")
    return v


class _Once(logging.Filter):
    """Let each distinct warning through once (several sessions log the same fallback)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[str, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name.split(".")[0], record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


def add_common(p: argparse.ArgumentParser, suppress: bool = True) -> None:
    """Add the global flags (usable before or after the sub-command)."""
    d: Callable[[Any], Any] = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
    g = p.add_argument_group("global options")
    g.add_argument("--json", action="store_true", default=d(False), help="machine-readable JSON output")
    g.add_argument(
        "--jsonl",
        action="store_true",
        default=d(False),
        help="one JSON object per line, written as each image is done (streaming)",
    )
    g.add_argument("--backend", default=d("auto"), help="backend name (see `facesdk backends`), default auto")
    g.add_argument("--device", default=d("auto"), help="device, e.g. cpu, cuda:0 (default auto)")
    g.add_argument("--precision", default=d("fp32"), help="fp32, fp16, int8 … (default fp32)")
    g.add_argument("--detector", default=d(None), help="detector model card id")
    g.add_argument("--embedder", default=d(None), help="embedder model card id")
    g.add_argument(
        "--threshold",
        type=_cosine,
        default=d(None),
        help="cosine threshold for a match, in [-1, 1] (default: the embedder card's)",
    )
    g.add_argument(
        "--no-strict",
        dest="strict",
        action="store_false",
        default=d(True),
        help="allow falling back to another device instead of failing",
    )
    g.add_argument("-v", "--verbose", action="count", default=d(0), help="more logging (-vv for debug)")


def _out(args: argparse.Namespace, data: Any, text: str) -> None:
    if getattr(args, "jsonl", False):
        for item in data if isinstance(data, list) else [data]:
            sys.stdout.write(json.dumps(item, default=str) + "\n")
    elif args.json:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    else:
        sys.stdout.write(text.rstrip("\n") + "\n")


_STDIN = "-"


def _inputs(args: argparse.Namespace, items: Sequence[str]) -> Iterator[tuple[str, Any]]:
    """(label, image source) per argument: a folder → its images, ``-`` → stdin bytes, else a path.

    Problems with one argument (a folder without images, ``-`` twice) are yielded as the
    FaceSDKError itself, so the caller reports it and goes on.
    """
    stdin_used = False
    for a in items:
        if a == _STDIN:
            if stdin_used:
                yield a, ConfigError("'-' (standard input) can be given only once")
                continue
            stdin_used = True
            yield "<stdin>", sys.stdin.buffer.read()
            continue
        p = Path(a)
        try:
            is_dir = p.is_dir()
        except (OSError, ValueError):
            is_dir = False
        if is_dir:
            imgs = _images_in(p)
            if not imgs:
                yield a, ConfigError(f"{a}: folder has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            for f in imgs:
                yield str(f), f
        else:
            yield a, p


def _recognizer(args: argparse.Namespace) -> Any:
    from .pipeline import FaceRecognizer

    return FaceRecognizer(
        detector=args.detector,
        embedder=args.embedder,
        backend=args.backend,
        device=args.device,
        precision=args.precision,
        strict=args.strict,
        threshold=args.threshold,
    )


# ---------------------------------------------------------------------- commands


def cmd_backends(args: argparse.Namespace) -> int:
    from .plugins import list_backends, list_plugin_errors

    rows = list_backends()
    lines = [f"{'backend':<14}{'available':<11}{'formats':<22}{'devices / reason'}"]
    for r in rows:
        detail = ", ".join(r["devices"]) if r["available"] else (r["reason"] or "")
        ver = f" (v{r['version']})" if r.get("version") else ""
        lines.append(
            f"{r['name']:<14}{'yes' if r['available'] else 'no':<11}{','.join(r['formats']):<22}{detail}{ver}"
        )
    for name, reason in list_plugin_errors().items():
        lines.append(f"plugin {name!r} failed to load: {reason}")
    _out(args, rows, "\n".join(lines))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from . import zoo

    from .pipeline import DEFAULT_DETECTOR, DEFAULT_EMBEDDER

    defaults = {DEFAULT_DETECTOR, DEFAULT_EMBEDDER}
    try:
        defaults.update(zoo.get_card(DEFAULT_EMBEDDER).params.get("uses", []))
    except FaceSDKError:
        pass
    cards = zoo.list_cards(task=args.task, commercial_safe=args.commercial_safe)
    rows = []
    for c in cards:
        rows.append(
            {
                "id": c.id,
                "task": c.task,
                "family": c.family,
                "formats": list(c.formats),
                "license": c.license,
                "commercial_safe": c.commercial_safe,
                "default": c.id in defaults,
                "present": zoo.is_present(c),
                "description": c.description,
            }
        )
    lines = [f"{'model':<32}{'task':<10}{'formats':<18}{'default':<9}{'present':<9}{'commercial':<11}licence"]
    for r in rows:
        lines.append(
            f"{r['id']:<32}{r['task']:<10}{','.join(r['formats']):<18}{'yes' if r['default'] else '':<9}"
            f"{'yes' if r['present'] else 'no':<9}{'yes' if r['commercial_safe'] else 'no':<11}{r['license']}"
        )
    _out(args, rows, "\n".join(lines))
    return 0


def _stream_results(args: argparse.Namespace, rec: Any, gallery: Any = None) -> int:
    """Run detect/identify over every input through the streaming pipeline; print per-item results.

    A bad input is reported on stderr and the others go on; the exit code is the first error's.
    """
    annotate = Path(args.annotate) if getattr(args, "annotate", None) else None
    opts: dict[str, Any] = {"every": args.every, "max_frames": args.max_frames, "keep_images": bool(annotate)}
    if args.workers is not None:
        opts["workers"] = args.workers
    code = 0
    items: list[Any] = []
    stdin_used = False
    for a in args.images:  # '-' → one image from standard input; a folder without images → an error
        err: FaceSDKError | None = None
        if a == _STDIN:
            if stdin_used:
                err = ConfigError("'-' (standard input) can be given only once")
            else:
                stdin_used = True
                items.append(sys.stdin.buffer.read())
                continue
        else:
            try:
                empty_dir = Path(a).is_dir() and not any(
                    f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES for f in Path(a).rglob("*")
                )
            except (OSError, ValueError):
                empty_dir = False
            if empty_dir:
                err = ConfigError(f"{a}: folder has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        if err is not None:
            sys.stderr.write(f"facesdk: error: {err}\n")
            code = code or err.exit_code
            continue
        items.append(a)
    if gallery is not None:
        stream = rec.identify_many(items, gallery=gallery, top_k=args.top_k, **opts)
    else:
        stream = rec.faces_many(items, embed=False, **opts)
    writers: dict[str, Any] = {}
    used: set[str] = set()
    results, lines = [], []
    jsonl = bool(getattr(args, "jsonl", False))
    try:
        for r in stream:
            if r.error is not None:
                sys.stderr.write(f"facesdk: error: {r.error}\n")
                code = code or getattr(r.error, "exit_code", 1)
                d = r.to_dict()
                d["image"] = r.source
                results.append(d)
                if jsonl:  # streaming: one line per item as soon as it is done
                    sys.stdout.write(json.dumps(d, default=str) + "\n")
                    sys.stdout.flush()
                continue
            d = r.to_dict()
            d["image"] = r.source if r.frame is None else r.source.rsplit("#", 1)[0]
            results.append(d)
            if jsonl:
                sys.stdout.write(json.dumps(d, default=str) + "\n")
                sys.stdout.flush()
            where = r.source if r.frame is None else f"{d['image']} frame {r.frame} t={r.timestamp:.3f}s"
            lines.append(f"{where}: {len(r.faces)} face(s)")
            for f in r.faces:
                b = ", ".join(f"{v:.0f}" for v in f.box)
                if f.match is not None:
                    lines.append(f"  {f.match.name:<20} similarity={f.match.similarity:.3f} box=({b})")
                else:
                    lines.append(f"  box=({b}) score={f.score:.3f}")
            if annotate is not None and r.image is not None:
                _annotate(annotate, r, writers, used, args.every)
    finally:
        for w in writers.values():
            w.close()
    if not jsonl:
        _out(args, results, "\n".join(lines))
    return code


def _annotate(folder: Path, r: Any, writers: dict[str, Any], used: set[str], every: int) -> None:
    from .draw import draw_faces, save_image

    img = draw_faces(r.image, r.faces)
    if r.frame is not None:
        video = r.source.rsplit("#", 1)[0]
        if video not in writers:
            from .video import VideoWriter, video_info

            fps = video_info(video)["fps"] or 25.0
            writers[video] = VideoWriter(folder / f"{Path(video).stem}.annotated.mp4", fps / max(every, 1))
        writers[video].write(img)
        return
    stem = Path(r.source).stem if not r.source.startswith("<") else f"image{r.index}"
    name = f"{stem}.jpg" if f"{stem}.jpg" not in used else f"{stem}_{r.index}.jpg"
    used.add(name)
    save_image(img, folder / name)


def cmd_detect(args: argparse.Namespace) -> int:
    from .detect import detector_class  # noqa: F401  (fail early on a bad family)

    return _stream_results(args, _recognizer(args))


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def cmd_enroll(args: argparse.Namespace) -> int:
    """Enroll people through :meth:`FaceRecognizer.enroll` (quality checks, a per-photo report).

    ``--name``: every argument is a photo of that person; a photo that is not enrolled makes the exit
    status non-zero (the usable ones are still enrolled unless ``--strict``). Without ``--name``: each
    argument is a folder of ``person/`` sub-folders; unusable photos are skipped and reported.
    """
    from .enrollment import QualityPolicy

    rec = _recognizer(args)
    gpath = Path(args.gallery)
    # bound to the file: the save below merges concurrent enrollments
    rec.open_gallery(gpath, **({"keep_crops": True} if args.keep_crops else {}))
    plan: list[tuple[str, list[tuple[str, Any]], bool]] = []  # (name, [(label, image)], single person)
    if args.name:
        imgs: list[tuple[str, Any]] = []
        for label, src in _inputs(args, args.images):
            if isinstance(src, FaceSDKError):
                raise src
            imgs.append((label, src))
        plan.append((args.name, imgs, True))
    else:
        for a in args.images:
            root = Path(a)
            if not root.is_dir():
                raise ConfigError(f"{a} is not a folder; give --name NAME to enroll single images")
            for person in sorted(d for d in root.iterdir() if d.is_dir()):
                plan.append((person.name, [(str(f), f) for f in _images_in(person)], False))
            if not any(d.is_dir() for d in root.iterdir()):
                raise ConfigError(f"{a} has no person/ sub-folders")
    quality = QualityPolicy.off() if args.no_quality_check else None
    summary: dict[str, Any] = {"gallery": str(gpath), "enrolled": {}, "skipped": [], "reports": []}
    from tqdm.auto import tqdm

    rc = 0
    for name, imgs, single in tqdm(plan, desc="enroll", disable=args.json or len(plan) < 3, leave=False):
        try:
            if not imgs:
                raise ConfigError(f"no images for {name!r}")
            res = rec.enroll(name, [src for _, src in imgs], strict=args.strict, quality=quality)
        except FaceSDKError as exc:
            sys.stderr.write(f"facesdk: error: {exc}\n")
            rc = rc or exc.exit_code
            summary["skipped"] += [{"image": label, "reason": str(exc)} for label, _ in imgs]
            continue
        report = res.to_dict()
        for rep, photo in zip(res.photos, report["photos"]):
            photo["source"] = imgs[rep.index][0]  # the path as given, not the decoded object
            if not rep.enrolled:
                summary["skipped"].append({"image": photo["source"], "reason": rep.reason})
                if single:  # a photo of the one named person that was not enrolled is an error
                    sys.stderr.write(f"facesdk: error: {photo['source']}: {rep.reason}\n")
                    rc = rc or NoFaceError.exit_code
        summary["reports"].append(report)
        summary["enrolled"][name] = res.added
    if summary["enrolled"]:
        rec.gallery.save()
    summary["identities"] = len(rec.gallery)
    summary["crops_kept"] = bool(getattr(rec.gallery.store, "keep_crops", False))
    lines = [f"enrolled {n} ({k} photo(s))" for n, k in summary["enrolled"].items()]
    lines += [f"skipped {s['image']}: {s['reason']}" for s in summary["skipped"]]
    lines.append(f"gallery {gpath}: {len(rec.gallery)} identities, model {rec.model_id}"
                 + (", face crops kept" if summary["crops_kept"] else ""))
    _out(args, summary, "\n".join(lines))
    return rc


def cmd_identify(args: argparse.Namespace) -> int:
    from .gallery import Gallery

    rec = _recognizer(args)
    g = rec.use_gallery(Gallery.open(args.gallery, create=False))  # a path or a store URI
    return _stream_results(args, rec, gallery=g)


def cmd_bulk(args: argparse.Namespace) -> int:
    """Bulk embedding / enrolment on a process pool or a Ray cluster (see :mod:`facesdk.bulk`)."""
    from .bulk import embed_bulk, enroll_folders

    rk: dict[str, Any] = {
        "detector": args.detector,
        "embedder": args.embedder,
        "backend": args.backend,
        "device": args.device,
        "precision": args.precision,
        "strict": args.strict,
        "threshold": args.threshold,
    }
    opts: dict[str, Any] = {
        "recognizer": rk,
        "executor": "ray" if args.address else args.executor,
        "address": args.address,
        "workers": args.workers,
        "chunk_size": args.chunk_size,
        "progress": not args.json,
    }
    if args.action == "embed":
        res = embed_bulk(args.inputs[0] if len(args.inputs) == 1 else args.inputs, args.out, **opts)
    else:
        if len(args.inputs) != 1:
            raise ConfigError("bulk enroll takes one folder of person/ sub-folders")
        res = enroll_folders(args.inputs[0], args.out, **opts)
    d = res.to_dict()
    _out(
        args,
        d,
        f"{res.images} image(s), {res.faces} face(s), {res.errors} error(s) on {res.executor} "
        f"x{res.workers} -> {res.output}",
    )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    if args.a == _STDIN and args.b == _STDIN:
        raise ConfigError("'-' (standard input) can be given only once")
    rec = _recognizer(args)
    src = [sys.stdin.buffer.read() if x == _STDIN else x for x in (args.a, args.b)]
    v = rec.verify(src[0], src[1])
    verdict = "same person" if v.same else "different people"
    _out(args, v.to_dict(), f"{verdict} (similarity {v.similarity:.3f}, threshold {v.threshold:.3f})")
    return 1 if args.exit_code and not v.same else 0


# ---------------------------------------------------------------------- parser


def _add_stream_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--every", type=int, default=1, help="video: use every N-th frame (default 1)")
    p.add_argument("--max-frames", type=int, default=None, help="video: stop after this many used frames")
    p.add_argument("--annotate", metavar="DIR", help="write images (and videos) with boxes and names to DIR")
    p.add_argument("--workers", type=int, default=None, help="decode/detect threads (default: up to 4)")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, including commands added by plugins."""
    parser = _Parser(prog="facesdk", description="Face recognition on many inference engines.")
    parser.add_argument("--version", action="version", version=f"facesdk {__version__}")
    add_common(parser, suppress=False)
    common = _Parser(add_help=False)
    add_common(common)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("backends", parents=[common], help="list backends and whether they run here")
    p.set_defaults(func=cmd_backends)

    p = sub.add_parser("models", parents=[common], help="list model cards, licences, presence")
    p.add_argument("--task", choices=["detect", "landmarks", "embed"])
    p.add_argument(
        "--commercial-safe", action="store_true", help="only models whose licence permits commercial use"
    )
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("detect", parents=[common], help="detect faces in images, folders or videos")
    p.add_argument(
        "images", nargs="+", help="image files, folders of images, video files, or - (standard input)"
    )
    _add_stream_args(p)
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("enroll", parents=[common], help="enroll people into a gallery file")
    p.add_argument("--gallery", "-g", required=True, help="gallery file (.npz), created if missing")
    p.add_argument(
        "--name", "-n", help="identity name; without it each argument is a folder of person/ sub-folders"
    )
    p.add_argument(
        "--keep-crops",
        action="store_true",
        help="keep the face crops in the gallery (`facesdk gallery migrate` re-embeds them later)",
    )
    p.add_argument(
        "--strict", action="store_true", help="a photo that is not usable enrolls nothing for that person"
    )
    p.add_argument(
        "--no-quality-check",
        action="store_true",
        help="enroll faces even if small, blurred or strongly turned",
    )
    p.add_argument("images", nargs="+")
    p.set_defaults(func=cmd_enroll)

    p = sub.add_parser("identify", parents=[common], help="name the faces in images")
    p.add_argument("--gallery", "-g", required=True)
    p.add_argument("--top-k", type=_positive_int, default=3, help="candidates per face (>= 1, default 3)")
    p.add_argument(
        "images", nargs="+", help="image files, folders of images, video files, or - (standard input)"
    )
    _add_stream_args(p)
    p.set_defaults(func=cmd_identify)

    p = sub.add_parser("bulk", parents=[common], help="embed or enroll many images on a process pool or Ray")
    p.add_argument("action", choices=["embed", "enroll"])
    p.add_argument(
        "inputs", nargs="+", help="embed: folders/files/a .txt list; enroll: a folder of person/ folders"
    )
    p.add_argument("--out", "-o", required=True, help="embed: .npz or .parquet; enroll: gallery .npz")
    p.add_argument("--executor", choices=["process", "ray", "inline"], default="process")
    p.add_argument(
        "--address", help="Ray cluster address (e.g. auto, ray://head:10001); implies --executor ray"
    )
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--chunk-size", type=int, default=64)
    p.set_defaults(func=cmd_bulk)

    p = sub.add_parser(
        "verify",
        parents=[common],
        help="are two photos the same person?",
        description="Compare the largest faces of two photos. The exit status reports errors only (0 for "
        "'different people' too) unless --exit-code is given.",
    )
    p.add_argument("a", help="first photo (or - for standard input)")
    p.add_argument("b", help="second photo (or - for standard input)")
    p.add_argument(
        "--exit-code",
        action="store_true",
        help="exit 1 when the photos show different people (0: same person), like diff",
    )
    p.set_defaults(func=cmd_verify)

    try:
        from .plugins import get_plugin_manager

        get_plugin_manager().hook.facesdk_cli(subparsers=sub)
    except Exception as exc:  # a broken plugin must not take the CLI down
        log.warning("a plugin failed to add commands: %s", exc)
    parser._facesdk_common = common  # type: ignore[attr-defined]
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``facesdk`` command."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a (one-line) usage error
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    level = logging.WARNING - 10 * min(int(getattr(args, "verbose", 0) or 0), 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "command", None) or not hasattr(args, "func"):
        parser.print_help()
        return 2
    once = _Once()  # each distinct warning once, for this command only
    handlers = list(logging.getLogger().handlers)
    for h in handlers:
        h.addFilter(once)
    try:
        return int(args.func(args) or 0)
    except FaceSDKError as exc:
        sys.stderr.write(f"facesdk: error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("facesdk: interrupted\n")
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001
        if getattr(args, "verbose", 0):
            raise
        sys.stderr.write(f"facesdk: internal error: {type(exc).__name__}: {exc} (run with -v for details)\n")
        return 70
    finally:
        for h in handlers:
            h.removeFilter(once)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
