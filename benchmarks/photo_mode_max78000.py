"""Faces in photos on the MAX78000 pipeline: firmware framing vs photo mode, detection and identification.

**Detection recall against YuNet.** For every image, YuNet (``yunet-2023mar``, onnxruntime) gives the
reference faces, at score >= 0.8 by default (``--ref-score``; on ``../shared/data/photos`` this drops only
two YuNet boxes on the background of ``biden2.jpg``, scores 0.70 and 0.64, checked by eye; every real face
there scores >= 0.92). A reference face is found when a TinierSSD box matches it, one to one, by either
rule, both reported: **IoU >= 0.5**, or **centre-in-box** (each box's centre lies inside the other). "Extra"
= TinierSSD boxes matching no reference face. Firmware framing: the whole image stretched to 168x224 (the
demo's camera view; all boxes after NMS, card score threshold). Photo mode: windows of the photo at several
scales, each through TinierSSD at its own 168x224 scale, merged on the host
(:class:`facesdk.detect.tinierssd.TinierSSDDetector`, ``photo_mode``).

The photo-mode parameters (scale step, overlap, smallest window, score, votes) were chosen on a tuning set
disjoint from the held-out photos reported separately here: 120 LFW DevTrain images (a seeded sample of
pairsDevTrain.txt) and the ``knn_examples/train`` photos. Sets reported: ``heldout`` (every photo not in
``knn_examples/train``), ``train`` (used for tuning: not an unbiased figure), ``all``.

**Identification on the photo examples** (``--identify``): a gallery of ``knn_examples/train/<person>/``
(every photo's largest face, mean template), probes = the faces of ``knn_examples/test`` plus
``two_people.jpg``, ``obama-1080p.jpg``, ``obama-240p.jpg``, ``obama_partial_face.jpg`` (``32bit.png`` is a
copy of an enrolment photo and is left out), labelled by eye (:data:`PROBE_LABELS`: identity by the face
centre's x coordinate; the child in ``obama_and_biden.jpg`` is not enrolled). Each labelled YuNet face is
looked up among the mode's detections (centre-in-box); its embedding (ai85-faceid-112 on the emulator) gives
the top-1 identity and cosine, accepted at the card's verification threshold. Firmware framing uses the
firmware-exact decode (one box per image, as the demo) and crop (``ai8x-faceid-112-firmware``); photo mode
crops from the photo on the host (``ai8x-faceid-112``: box widened to a square, bilinear 112x112).

Stage ``max78000-photo-mode`` of ``facesdk bench`` (:mod:`facesdk_bench.stages`; options: the keyword
arguments of :func:`run`)::

    FACESDK_AI8X_DIR=../shared/ai8x facesdk bench --config benchmarks/configs/max78000-photo-mode.yaml
    FACESDK_AI8X_DIR=../shared/ai8x facesdk bench --config benchmarks/configs/max78000-photo-mode-grid.yaml

(the module's own command line, ``[--identify] [--grid] [--out r.json]``, calls the same :func:`run`; the
second config runs only the tuning grid, :func:`tuning_grid`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

#: probe faces of the photo examples, labelled by eye: photo -> [(x_min, x_max of the face centre, name)]
PROBE_LABELS: dict[str, list[tuple[float, float, str]]] = {
    "knn_examples/test/alex_lacamoire1.jpg": [(0, 1e9, "alex_lacamoire")],
    "knn_examples/test/johnsnow_test1.jpg": [(0, 1e9, "kit_harington")],
    "knn_examples/test/kit_with_rose.jpg": [(0, 200, "rose_leslie"), (200, 1e9, "kit_harington")],
    "knn_examples/test/obama1.jpg": [(0, 1e9, "obama")],
    "knn_examples/test/obama_and_biden.jpg": [(0, 1050, "biden"), (1050, 1500, "obama"), (1500, 1e9, "")],
    "two_people.jpg": [(0, 560, "obama"), (560, 1e9, "biden")],
    "obama-1080p.jpg": [(0, 1e9, "obama")],
    "obama-240p.jpg": [(0, 1e9, "obama")],
    "obama_partial_face.jpg": [(0, 1e9, "obama")],
}


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    u = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / u if u > 0 else 0.0


def _centres_inside(a: Sequence[float], b: Sequence[float]) -> bool:
    ca = ((a[0] + a[2]) / 2, (a[1] + a[3]) / 2)
    cb = ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)
    return bool(
        b[0] <= ca[0] <= b[2] and b[1] <= ca[1] <= b[3] and a[0] <= cb[0] <= a[2] and a[1] <= cb[1] <= a[3]
    )


def match(ref: Sequence[Sequence[float]], got: Sequence[Sequence[float]], rule: str) -> tuple[list[int], int]:
    """Greedy one-to-one matching: for each reference face (in order) the unused box with the highest IoU
    among those the rule accepts. Returns (index of the matched box or -1 per reference face, extra boxes)."""
    used: set[int] = set()
    out = []
    for r in ref:
        best, bi = -1.0, -1
        for i, g in enumerate(got):
            if i in used:
                continue
            ok = _iou(r, g) >= 0.5 if rule == "iou" else _centres_inside(r, g)
            if ok and _iou(r, g) > best:
                best, bi = _iou(r, g), i
        if bi >= 0:
            used.add(bi)
        out.append(bi)
    return out, len(got) - len(used)


def lfw_devtrain_sample(shared: Path, n: int = 48, seed: int = 14) -> list[Path]:
    """The tuning set's LFW part: the first ``n`` (by name) of a seeded sample of 120 images named in
    pairsDevTrain.txt."""
    lines = (shared / "data" / "lfw" / "pairsDevTrain.txt").read_text().splitlines()[1:]
    names: set[str] = set()
    for ln in lines:
        p = ln.split()
        if len(p) == 3:
            names |= {f"{p[0]}/{p[0]}_{int(p[1]):04d}.jpg", f"{p[0]}/{p[0]}_{int(p[2]):04d}.jpg"}
        elif len(p) == 4:
            names |= {f"{p[0]}/{p[0]}_{int(p[1]):04d}.jpg", f"{p[2]}/{p[2]}_{int(p[3]):04d}.jpg"}
    order = sorted(names)
    random.Random(seed).shuffle(order)
    return [shared / "data" / "lfw" / "images" / x for x in sorted(order[:120])[:n]]


def _yunet(shared: Path) -> Any:
    from facesdk import zoo
    from facesdk.backend import Artifact
    from facesdk.detect import detector_class
    from facesdk.plugins import get_backend

    card = zoo.get_card("yunet-2023mar")
    art = {"main": Artifact(zoo.fetch(card, "onnx"), "onnx", card)}
    return detector_class(card.family)(card, get_backend("onnxruntime"), art, threads=1)


def detection(shared: Path, rec: Any, yunet: Any, files: list[Path], ref_score: float) -> dict[str, Any]:
    """Recall/extra boxes of both modes on ``files`` (both matching rules)."""
    from facesdk.image import load_image

    det = rec.detector
    tot: dict[str, Any] = {"images": len(files), "yunet_faces": 0, "windows": 0, "missed": []}
    for f in tqdm(files, desc="detect"):
        img = load_image(f)
        ref = [list(map(float, d.box)) for d in yunet.detect(img) if d.score >= ref_score]
        tot["yunet_faces"] += len(ref)
        for mode in ("firmware", "photo"):
            det.photo_mode = mode == "photo"
            got = [list(map(float, d.box)) for d in det.detect(img)]
            if mode == "photo":
                tot["windows"] += len(det.windows(img.shape[1], img.shape[0]))
            for rule in ("iou", "centre"):
                idx, extra = match(ref, got, rule)
                k = f"{mode}_{rule}"
                tot[f"{k}_found"] = tot.get(f"{k}_found", 0) + sum(i >= 0 for i in idx)
                tot[f"{k}_extra"] = tot.get(f"{k}_extra", 0) + extra
                if mode == "photo" and rule == "iou":
                    tot["missed"] += [f"{f.name} {[round(v) for v in r]}" for r, i in zip(ref, idx) if i < 0]
    n = max(1, tot["yunet_faces"])
    for mode in ("firmware", "photo"):
        for rule in ("iou", "centre"):
            tot[f"{mode}_{rule}_recall"] = round(tot.get(f"{mode}_{rule}_found", 0) / n, 4)
    det.photo_mode = False
    return tot


def tuning_grid(
    shared: Path,
    rec: Any,
    yunet: Any,
    files: list[Path],
    ref_score: float,
    steps: Sequence[float] = (2**0.5, 2.0),
    scores: Sequence[float] = (0.5, 0.6, 0.75),
    votes: Sequence[int] = (1, 2),
) -> list[dict[str, Any]]:
    """Photo-mode settings on a tuning set: faces found (IoU >= 0.5) and extra boxes per (scale step, score,
    votes). Each window runs once per scale step; its boxes are decoded at the lowest score and filtered per
    setting (a box's per-window NMS survival does not depend on lower-scoring boxes, so this equals decoding
    at the higher score)."""
    from facesdk.detect.tinierssd import merge_window_boxes
    from facesdk.image import load_image

    det = rec.detector
    saved = (det.photo_mode, det.photo_scale_step, det.photo_min_score)
    det.photo_mode, det.photo_min_score = True, min(scores)
    refs, per, nwin = {}, {}, {st: 0 for st in steps}
    for f in tqdm(files, desc="grid"):
        img = load_image(f)
        refs[f] = [list(map(float, d.box)) for d in yunet.detect(img) if d.score >= ref_score]
        for st in steps:
            det.photo_scale_step = st
            per[(st, f)] = det.window_boxes(img)
            nwin[st] += len(det.windows(img.shape[1], img.shape[0]))
    det.photo_mode, det.photo_scale_step, det.photo_min_score = saved
    rows = []
    for st in steps:
        for sc in scores:
            for v in votes:
                found = extra = faces = 0
                for f in files:
                    b, s, src = per[(st, f)]
                    m = s >= sc
                    keep = (
                        merge_window_boxes(b[m], s[m], src[m], nms_threshold=det.nms_threshold, min_votes=v)
                        if m.any()
                        else []
                    )
                    idx, e = match(refs[f], [list(map(float, b[m][i])) for i in keep], "iou")
                    faces += len(refs[f])
                    found += sum(i >= 0 for i in idx)
                    extra += e
                rows.append(
                    {
                        "scale_step": round(st, 3),
                        "score": sc,
                        "votes": v,
                        "faces": faces,
                        "found": found,
                        "extra": extra,
                        "windows": nwin[st],
                    }
                )
    return rows


def identification(shared: Path, rec: Any, yunet: Any, ref_score: float) -> dict[str, Any]:
    """Gallery of knn_examples/train, probes of :data:`PROBE_LABELS`, in both modes."""
    from facesdk.gallery import Gallery
    from facesdk.image import load_image

    photos = shared / "data" / "photos"
    det = rec.detector
    res: dict[str, Any] = {}
    for mode in ("firmware", "photo"):
        det.photo_mode = mode == "photo"
        det.firmware_exact = mode == "firmware"
        rec.template = "ai8x-faceid-112-firmware" if mode == "firmware" else "ai8x-faceid-112"
        gal = Gallery(rec.model_id, rec.embedding_size)
        enrolled = 0
        for person in sorted(p for p in (photos / "knn_examples" / "train").iterdir() if p.is_dir()):
            for f in sorted(person.iterdir()):
                img = load_image(f)
                dets = rec.detector.detect(img)
                if not dets:
                    continue
                best = max(dets, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
                gal.add(person.name, rec.embed_crops(rec.align(img, [best]))[0])
                enrolled += 1
        names = gal.names
        tmpl = gal.templates
        rows = []
        for rel, labels in tqdm(PROBE_LABELS.items(), desc=f"identify ({mode})"):
            img = load_image(photos / rel)
            ref = [d for d in yunet.detect(img) if d.score >= ref_score]
            dets = rec.detector.detect(img)
            for r in ref:
                cx = float(r.box[0] + r.box[2]) / 2
                truth = next(name for lo, hi, name in labels if lo <= cx < hi)
                hit = [d for d in dets if _centres_inside(list(map(float, r.box)), list(map(float, d.box)))]
                row: dict[str, Any] = {
                    "photo": rel,
                    "truth": truth or "(not enrolled)",
                    "detected": bool(hit),
                }
                if hit:
                    d = max(hit, key=lambda d: _iou(list(map(float, r.box)), list(map(float, d.box))))
                    e = rec.embed_crops(rec.align(img, [d]))[0]
                    s = tmpl @ e
                    k = int(np.argmax(s))
                    row.update(top1=names[k], cosine=round(float(s[k]), 3))
                    row["accepted"] = bool(s[k] >= rec.threshold)
                rows.append(row)
        known = [r for r in rows if r["truth"] != "(not enrolled)"]
        unknown = [r for r in rows if r["truth"] == "(not enrolled)"]
        res[mode] = {
            "enrolled_photos": enrolled,
            "identities": len(names),
            "threshold": rec.threshold,
            "probe_faces": len(known),
            "detected": sum(r["detected"] for r in known),
            "rank1_correct": sum(r.get("top1") == r["truth"] for r in known),
            "correct_and_accepted": sum(
                r.get("top1") == r["truth"] and r.get("accepted", False) for r in known
            ),
            "wrong_and_accepted": sum(
                r.get("top1") not in (None, r["truth"]) and r["accepted"] for r in known
            ),
            "unknown_faces": len(unknown),
            "unknown_accepted": sum(r.get("accepted", False) for r in unknown),
            "rows": rows,
        }
    det.photo_mode = False
    det.firmware_exact = False
    return res


def run(
    shared: Path,
    ref_score: float = 0.8,
    lfw: int = 0,
    identify: bool = False,
    detect: bool = True,
    limit: int | None = None,
    progress: bool = True,
    grid: bool = False,
) -> dict[str, Any]:
    """Detection recall (held-out / train / all photos, optionally ``lfw`` LFW DevTrain tuning images) and,
    with ``identify``, identification on the photo examples; see the module docstring. ``limit``: at most
    that many photos of each of the held-out and train sets (quick runs). ``grid``: only the photo-mode
    parameter grid on the tuning set (``lfw`` LFW DevTrain images, default 48, + the train photos)."""
    os.environ.setdefault("FACESDK_AI8X_DIR", str(shared / "ai8x"))
    os.environ.setdefault("FACESDK_MODEL_MIRROR", str(shared / "models"))  # YuNet from ../shared/models
    import facesdk

    yunet = _yunet(shared)
    rec = facesdk.FaceRecognizer(backend="max78000", embedder="ai85-faceid-112")
    photos_dir = shared / "data" / "photos"
    photos = sorted(p for p in photos_dir.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    train = [p for p in photos if "knn_examples/train" in p.relative_to(photos_dir).as_posix()]
    heldout = [p for p in photos if p not in train]
    if limit is not None:
        train, heldout = train[: int(limit)], heldout[: int(limit)]
    rec.detector.photo_mode = True
    res: dict[str, Any] = {
        "pipeline": "ai85-facedet-tinierssd on max78000 (emulator) vs yunet-2023mar (onnxruntime)",
        "photo_mode": rec.detector.describe_mode(),
        "describe": rec.describe(),
        "ref_score": ref_score,
    }
    rec.detector.photo_mode = False
    try:
        if grid:
            tuning = lfw_devtrain_sample(shared, int(lfw) or 48) + train
            res["grid"] = tuning_grid(shared, rec, yunet, tuning, ref_score)
            detect = identify = False
        if detect:
            res["heldout"] = detection(shared, rec, yunet, heldout, ref_score)
            res["train"] = detection(shared, rec, yunet, train, ref_score)
            res["all"] = {
                k: res["heldout"][k] + res["train"][k] for k in res["heldout"] if not k.endswith("_recall")
            }
            n = max(1, res["all"]["yunet_faces"])
            for k in [k for k in res["all"] if k.endswith("_found")]:
                res["all"][k.replace("_found", "_recall")] = round(res["all"][k] / n, 4)
            if lfw:
                res["lfw_devtrain"] = detection(
                    shared, rec, yunet, lfw_devtrain_sample(shared, int(lfw)), ref_score
                )
        if identify:
            res["identification"] = identification(shared, rec, yunet, ref_score)
    finally:
        rec.close()
        yunet.close()
    return res


def to_markdown(res: dict[str, Any]) -> str:
    """The report as JSON in a fenced block (its tables are assembled by hand in RESULTS.md)."""
    return (
        "```json\n"
        + json.dumps({k: v for k, v in res.items() if k != "describe"}, indent=2, default=str)
        + "\n```"
    )


def main(argv: list[str] | None = None) -> int:
    """This module's own command line: the same :func:`run` as stage ``max78000-photo-mode``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--shared",
        default=os.environ.get("FACESDK_SHARED", str(Path(__file__).resolve().parents[2] / "shared")),
    )
    ap.add_argument("--ref-score", type=float, default=0.8, help="YuNet score of a reference face")
    ap.add_argument(
        "--lfw", type=int, default=0, help="also this many LFW DevTrain images (the tuning sample)"
    )
    ap.add_argument("--identify", action="store_true", help="also identification on the photo examples")
    ap.add_argument("--no-detection", action="store_true", help="skip the detection recall")
    ap.add_argument(
        "--grid",
        action="store_true",
        help="only the tuning grid (--lfw LFW DevTrain images, default 48, + the train photos)",
    )
    ap.add_argument("--out", help="write the JSON report here")
    args = ap.parse_args(argv)
    res = run(
        Path(args.shared), args.ref_score, args.lfw, args.identify, not args.no_detection, grid=args.grid
    )
    text = json.dumps(res, indent=2, default=str)
    print(text)
    if args.out:
        from facesdk.fileio import atomic_write_bytes

        atomic_write_bytes(args.out, (text + "\n").encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
