"""Seeded hostile-input suite (issue 11): >= 1,000 generated cases across images, galleries,
checkpoints, model files, cards, serial frames and command-line arguments.

Every case must end in a typed :class:`facesdk.errors.FaceSDKError` or a right answer (checked per
kind: a decoded image is ``HxWx3`` uint8, a parsed frame is one that was really sent, ...), never in
another exception, never hang (each case runs under a wall-clock alarm), and the process's resident
memory sampled during each group grows by less than 1.5 GB. The seed is fixed, so a failure names a case
that reproduces.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import signal
import struct
import sys
import threading
import time
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
from PIL import Image

import _hostile as H
from facesdk.errors import FaceSDKError

SEED = 20261207
RSS_LIMIT = int(1.5 * (1 << 30))
# a hang is "no answer at all"; 60 s leaves room for a command that builds a recogniser on a loaded machine
CASE_SECONDS = 60
COUNTS: dict[str, int] = {}


class _Hang(BaseException):
    """Raised by the alarm; a BaseException so that the CLI's catch-all cannot turn it into exit 70."""


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def _rss_peak() -> Iterator[list[int]]:
    """Sample the resident set every 5 ms while the block runs; yields [peak]."""
    peak = [_rss()]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.005):
            peak[0] = max(peak[0], _rss())

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        yield peak
    finally:
        stop.set()
        t.join()
        peak[0] = max(peak[0], _rss())


def _alarm(signum: int, frame: Any) -> None:
    raise _Hang()


def run_cases(
    group: str, cases: list[tuple[str, Callable[[], Any]]], check: Callable[[str, Any], None] | None = None
) -> None:
    """Run each case; collect anything that is not a FaceSDKError or a right answer."""
    bad: list[str] = []
    old = signal.signal(signal.SIGALRM, _alarm)
    base = _rss()
    try:
        with _rss_peak() as peak:
            for name, fn in cases:
                signal.alarm(CASE_SECONDS)
                try:
                    out = fn()
                    if check is not None:
                        check(name, out)
                except FaceSDKError:
                    pass
                except _Hang:
                    bad.append(f"{name}: HANG (> {CASE_SECONDS} s)")
                except AssertionError as exc:
                    bad.append(f"{name}: WRONG ANSWER {exc}")
                except Exception as exc:  # noqa: BLE001 - this is what the suite looks for
                    bad.append(f"{name}: {type(exc).__name__}: {str(exc)[:160]}")
                finally:
                    signal.alarm(0)
    finally:
        signal.signal(signal.SIGALRM, old)
    COUNTS[group] = len(cases)
    # The limit bounds what the group itself allocates: in a full pytest run the process already holds
    # whatever earlier tests loaded (engines, models), which is not this group's doing.
    grown = peak[0] - base
    assert grown <= RSS_LIMIT, (
        f"{group}: resident memory grew by {grown / 2**30:.2f} GB (peak {peak[0] / 2**30:.2f} GB)"
    )
    assert not bad, f"{group}: {len(bad)} of {len(cases)} cases failed:\n" + "\n".join(bad[:40])


def _flip(data: bytes, rng: random.Random, n: int) -> bytes:
    b = bytearray(data)
    for _ in range(n):
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


def _mutate(data: bytes, rng: random.Random) -> bytes:
    kind = rng.randrange(6)
    if kind == 0:
        return data[: rng.randrange(len(data))]  # truncation
    if kind == 1:
        return _flip(data, rng, rng.randint(1, 8))
    if kind == 2:  # overwrite a run with random bytes (headers live near the start)
        i = rng.randrange(min(len(data), 256))
        return data[:i] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 16))) + data[i + 16 :]
    if kind == 3:  # duplicate a chunk
        i, j = sorted(rng.randrange(len(data)) for _ in range(2))
        return data[:j] + data[i:j] + data[j:]
    if kind == 4:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 512)))
    return data[: len(data) // 2] + data[len(data) // 2 + rng.randint(1, 64) :]  # a hole


# ----------------------------------------------------------------------------- images


def _encoded(img: Image.Image, fmt: str, **kw: Any) -> bytes:
    b = io.BytesIO()
    img.save(b, format=fmt, **kw)
    return b.getvalue()


def _png_with_size(w: int, h: int) -> bytes:
    """A tiny PNG whose header (with a valid CRC) declares w x h pixels."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + struct.pack(">I", 0)
        + b"IEND"
        + struct.pack(">I", zlib.crc32(b"IEND"))
    )


def _image_ok(name: str, out: Any) -> None:
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3, (
        f"not an HxWx3 uint8 image: {type(out).__name__} {getattr(out, 'shape', '')}"
    )


def test_hostile_images(shared: Path) -> None:
    from facesdk.image import load_image

    rng = random.Random(SEED)
    nrng = np.random.default_rng(SEED)
    photo = (shared / "data/photos/obama-240p.jpg").read_bytes()
    small = Image.open(io.BytesIO(photo)).convert("RGB").resize((64, 48))
    bases = {
        "jpeg": photo,
        "png-rgb": _encoded(small, "PNG"),
        "png-rgba": _encoded(small.convert("RGBA"), "PNG"),
        "png-l": _encoded(small.convert("L"), "PNG"),
        "png-16": _encoded(Image.fromarray(np.full((20, 30), 40000, np.uint16)), "PNG"),
        "png-p": _encoded(small.convert("P"), "PNG"),
        "gif": _encoded(small.convert("P"), "GIF"),
        "bmp": _encoded(small, "BMP"),
        "tiff": _encoded(small, "TIFF"),
        "webp": _encoded(small, "WEBP"),
        "png-32bit": (shared / "data/photos/32bit.png").read_bytes(),
    }
    cases: list[tuple[str, Callable[[], Any]]] = []
    for i in range(330):
        key = rng.choice(sorted(bases))
        data = _mutate(bases[key], rng)
        cases.append((f"image[{i}] {key} mutated", lambda d=data: load_image(d)))
    for w, h in [(100_000, 100_000), (1, 2**31 - 1), (2**31 - 1, 2**31 - 1), (0, 5), (70_000, 70_000)]:
        cases.append((f"png declaring {w}x{h}", lambda d=_png_with_size(w, h): load_image(d)))
    shapes = [(0, 0, 3), (5,), (4, 4, 2), (4, 4, 5), (2, 3, 4, 3), (1, 1, 3), (3, 3), (3, 3, 1), (6, 5, 4)]
    dtypes = [
        np.uint8,
        np.uint16,
        np.int32,
        np.int64,
        np.float16,
        np.float32,
        np.float64,
        np.bool_,
        np.complex64,
        object,
        np.int8,
    ]
    for i in range(120):
        shape = shapes[rng.randrange(len(shapes))]
        dt = dtypes[rng.randrange(len(dtypes))]
        a = nrng.normal(0, rng.choice([0.5, 2, 300, 1e6]), shape)
        if rng.random() < 0.2:
            a.flat[: max(1, a.size // 3)] = rng.choice([np.nan, np.inf, -np.inf])
        with np.errstate(all="ignore"):
            arr = a.astype(dt)
        kw: dict[str, Any] = {}
        if rng.random() < 0.3:
            kw["max_pixels"] = rng.choice([1, 5, 10**9, 2.5, "12", -3, True])
        if rng.random() < 0.2:
            kw["value_range"] = rng.choice([(0, 1), (0, 255), (5, 5), ("a", 1), None, (0, float("inf"))])
        if rng.random() < 0.2:
            kw["color"] = rng.choice(["BGR", "RGB", "bgr", "HSV"])
        cases.append((f"array[{i}] {dt} {shape} {kw}", lambda x=arr, k=kw: load_image(x, **k)))
    for mode in ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "I", "I;16", "F", "PA"):
        cases.append((f"pil {mode}", lambda m=mode: load_image(Image.new(m, (7, 5)))))
    for i in range(12):
        lazy = bases[rng.choice(["jpeg", "png-rgb", "png-16"])]
        cut = lazy[: rng.randrange(20, len(lazy))]
        try:
            opened = Image.open(io.BytesIO(cut))  # header only; the pixels are decoded in load_image
        except OSError:
            continue  # Pillow refused it before facesdk saw it
        cases.append((f"lazy pil[{i}]", lambda im=opened: load_image(im)))
    for obj in (None, 12, 3.5, [1, 2], {"a": 1}, b"", "", "\0", "x" * 5000, object()):
        cases.append((f"wrong type {type(obj).__name__}", lambda o=obj: load_image(o)))  # type: ignore[arg-type]
    run_cases("images", cases, _image_ok)


def test_hostile_inputs_to_every_recognizer_entry_point(shared: Path) -> None:
    """The same hostile inputs through FaceRecognizer's entry points (one validation path)."""
    import facesdk
    from facesdk.errors import ImageTooLargeError

    rec = facesdk.FaceRecognizer(max_pixels=4_000_000)
    rng = np.random.default_rng(SEED)
    good = facesdk.load_image(shared / "data/photos/obama-240p.jpg")
    inputs: list[tuple[str, Any]] = [
        ("uint8 2 channels", np.zeros((50, 50, 2), np.uint8)),
        ("uint8 0 rows", np.zeros((0, 50, 3), np.uint8)),
        ("uint8 over max_pixels", np.zeros((4000, 1001, 3), np.uint8)),
        ("uint8 4-D", np.zeros((1, 50, 50, 3), np.uint8)),
        ("float above 1", good.astype(np.float32) / 250.0),
        ("uint16 8-bit values", good.astype(np.uint16)),
        ("non-contiguous view", good[::2, ::-3]),
        ("BGR-ordered", good[:, :, ::-1]),
        ("random noise", rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)),
        ("PIL", Image.fromarray(good)),
        ("bytes garbage", b"\x89PNG garbage"),
        ("folder", shared / "data/photos"),
        ("missing", shared / "nope.jpg"),
    ]
    cases: list[tuple[str, Callable[[], Any]]] = []
    for name, x in inputs:
        cases.append((f"detect {name}", lambda x=x: rec.detect(x)))
        cases.append((f"faces {name}", lambda x=x: rec.faces(x)))
        cases.append((f"embed_face {name}", lambda x=x: rec.embed_face(x)))
        cases.append((f"verify {name}", lambda x=x: rec.verify(x, good)))
        cases.append((f"detect BGR {name}", lambda x=x: rec.detect(x, color="BGR")))
    run_cases("entry points", cases)
    with pytest.raises(ImageTooLargeError):
        rec.detect(np.zeros((4000, 1001, 3), np.uint8))  # uint8 3-D arrays are not exempt any more
    assert len(rec.detect(good)) == 1
    assert len(rec.detect(np.ascontiguousarray(good[:, :, ::-1]), color="BGR")) == 1
    rec.close()


# ----------------------------------------------------------------------------- galleries


def test_hostile_galleries(tmp_path: Path) -> None:
    from facesdk.gallery import Gallery

    rng = random.Random(SEED + 1)
    g = Gallery("m", 8)
    for k in range(5):
        g.add(f"p{k}", np.random.default_rng(k).normal(size=(2, 8)).astype(np.float32))
    good = tmp_path / "good.npz"
    g.save(good)
    data = good.read_bytes()
    cases: list[tuple[str, Callable[[], Any]]] = []

    def load_bytes(name: str, blob: bytes) -> Callable[[], Any]:
        def fn() -> Any:
            f = tmp_path / name
            f.write_bytes(blob)
            return Gallery.load(f)

        return fn

    for i in range(70):
        cases.append((f"gallery[{i}] mutated", load_bytes(f"m{i}.npz", _mutate(data, rng))))
    metas = [
        "[]",
        "{}",
        '{"format": "facesdk-gallery"}',
        '{"format": 5, "version": "x"}',
        "null",
        "1e999",
        '{"format": "facesdk-gallery", "version": 1, "embedding_size": "eight", "model_id": 3}',
        '{"format": "facesdk-gallery", "version": 1, "embedding_size": -1, "model_id": "m"}',
        '{"format": "facesdk-gallery", "version": 1, "embedding_size": 8, "model_id": "m", '
        '"threshold": "hi"}',
        '{"format": "facesdk-gallery", "version": 1, "embedding_size": 1e12, "model_id": "m"}',
        "[" * 100000,
    ]
    for i, meta in enumerate(metas):
        buf = io.BytesIO()
        np.savez(
            buf,
            names=np.array(["a"]),
            sums=np.zeros((1, 8), np.float32),
            counts=np.ones(1, np.int64),
            meta=np.array(meta),
        )
        cases.append((f"gallery meta[{i}]", load_bytes(f"meta{i}.npz", buf.getvalue())))
    for i, (names, sums, counts) in enumerate(
        [
            (np.array([1, 2]), np.zeros((2, 8), np.float32), np.ones(2, np.int64)),
            (np.array(["a", "a"]), np.zeros((2, 8), np.float32), np.ones(2, np.int64)),
            (np.array(["a"]), np.zeros((1, 8), np.complex64), np.ones(1, np.int64)),
            (np.array(["a"]), np.full((1, 8), np.nan, np.float32), np.ones(1, np.int64)),
            (np.array(["a"]), np.zeros((1, 8), np.float32), np.array([-5])),
            (np.array(["a"]), np.zeros((1, 8), np.float32), np.array([0])),
            (np.array(["a"]), np.zeros(8, np.float32), np.ones(1, np.int64)),
            (np.zeros((0,), "<U1"), np.zeros((0, 8), np.float32), np.zeros(0, np.int64)),
        ]
    ):
        buf = io.BytesIO()
        np.savez(
            buf,
            names=names,
            sums=sums,
            counts=counts,
            meta=np.array(
                '{"format": "facesdk-gallery", "version": 1, "embedding_size": 8, "model_id": "m"}'
            ),
        )
        cases.append((f"gallery arrays[{i}]", load_bytes(f"arr{i}.npz", buf.getvalue())))
    npy = io.BytesIO()
    np.save(npy, np.zeros((3, 8), np.float32))
    cases.append(("a .npy, not an .npz", load_bytes("x.npy", npy.getvalue())))
    # a member whose header declares a huge shape (memory bomb)
    hdr = b"{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000, 128), }"
    hdr = hdr.ljust(118, b" ") + b"\n"
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w") as z:
        z.writestr("sums.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr + b"\0" * 64)
        for k in ("names", "counts", "meta"):
            z.writestr(f"{k}.npy", b"")
    cases.append(("declared 512 GB array", load_bytes("bomb.npz", bomb.getvalue())))
    cases.append(("a folder", lambda: Gallery.load(tmp_path)))
    cases.append(("name too long", lambda: Gallery.load(tmp_path / ("g" * 300 + ".npz"))))
    run_cases("galleries", cases)


# ----------------------------------------------------------------------------- checkpoints


def test_hostile_checkpoints(shared: Path, tmp_path: Path) -> None:
    pytest.importorskip("facesdk_backends.max7800x")
    from facesdk_backends.max7800x import load_checkpoint

    rng = random.Random(SEED + 2)
    real = [
        (shared / "ai8x/trained" / n).read_bytes()
        for n in ("ai85-dot_emb_112_checkpoint-q.pth.tar", "ai85-faceid-qat8-q.pth.tar")
    ]
    cases: list[tuple[str, Callable[[], Any]]] = []

    def load_bytes(name: str, blob: bytes) -> Callable[[], Any]:
        def fn() -> Any:
            f = tmp_path / name
            f.write_bytes(blob)
            return load_checkpoint(f)

        return fn

    for i in range(120):
        base = real[i % 2]
        if i % 2:  # aim at the zip headers
            hot = [j for j in range(len(base) - 4) if base[j : j + 2] == b"PK"]
            b = bytearray(base)
            for _ in range(rng.randint(1, 3)):
                j = rng.choice(hot) + rng.randrange(46)
                if j < len(b):
                    b[j] = rng.randrange(256)
            blob = bytes(b)
        else:
            blob = _mutate(base, rng)
        cases.append((f"checkpoint[{i}]", load_bytes(f"c{i}.pth.tar", blob)))
    globals_ = [
        H.G("torch", "FloatStorage"),
        H.G("torch._utils", "_rebuild_tensor_v2"),
        H.G("collections", "OrderedDict"),
        H.G("torch.optim.sgd", "SGD"),
        H.G("posix", "system"),
        H.G("builtins", "getattr"),
        H.G("numpy", "ndarray"),
        H.G("torch", "HalfStorage"),
    ]
    values: list[Any] = [0, -1, 2**40, 2**70, 1.5, "x", b"y", None, True, (), [], {}]
    for i in range(60):
        k = rng.randrange(5)
        if k == 0:
            root: Any = {
                "w": H.tensor(
                    "0",
                    rng.choice([1, 4, 2**33, -1]),
                    tuple(rng.choice([0, 1, 3, 2**31, 2**62]) for _ in range(rng.randint(0, 4))),
                    tuple(rng.choice([0, 1, 4, -1]) for _ in range(rng.randint(0, 4))),
                    rng.choice([0, 3, -2, 2**50]),
                )
            }
        elif k == 1:
            root = {"x": H.Build(rng.choice(globals_), rng.choice([{"a": 1}, (None, {"b": 2}), [1], "s"]))}
        elif k == 2:
            root = {
                "x": H.Call(rng.choice(globals_), *[rng.choice(values) for _ in range(rng.randint(0, 6))])
            }
        elif k == 3:
            root = [rng.choice(values) for _ in range(rng.randint(0, 5))]
        else:
            root = {"state_dict": {"w": H.tensor(rng.choice(["0", "../x", "a b", "1"]), 4, (2, 2), (2, 1))}}
        st = {"0": bytes(rng.randrange(256) for _ in range(rng.choice([0, 3, 16, 64])))}
        cases.append(
            (
                f"crafted checkpoint[{i}] kind {k}",
                lambda r=root, s=st, i=i: load_checkpoint(H.checkpoint(tmp_path / f"k{i}.pth.tar", r, s)),
            )
        )
    ok = real[0]
    for i, (flag, method) in enumerate([(0x1, None), (0, 14), (0, 12), (0, 99), (0x800, None)]):
        cases.append(
            (
                f"zip flags[{i}]",
                load_bytes(
                    f"z{i}.pth.tar", H.patch_zip_header(ok, b"archive/data.pkl", flag_or=flag, method=method)
                ),
            )
        )

    def check(name: str, out: Any) -> None:
        assert isinstance(out, dict), f"checkpoint root {type(out).__name__}"

    run_cases("checkpoints", cases, check)
    # the real ones still load afterwards (no poisoned module state)
    assert load_checkpoint(shared / "ai8x/trained/ai85-faceid-qat8-q.pth.tar")["arch"]


# ----------------------------------------------------------------------------- model files


def test_hostile_model_files(shared: Path, tmp_path: Path) -> None:
    from facesdk.backend import Artifact
    from facesdk.plugins import get_backend
    from facesdk.dlib.shape_predictor import ShapePredictor
    from facesdk.zoo import fetch

    rng = random.Random(SEED + 3)
    ort = get_backend("onnxruntime")
    onnx = (shared / "models/yunet/face_detection_yunet_2023mar.onnx").read_bytes()
    sp = fetch("dlib-shape-predictor-5", "dlib").read_bytes()
    cases: list[tuple[str, Callable[[], Any]]] = []

    def write(name: str, blob: bytes) -> Path:
        f = tmp_path / name
        f.write_bytes(blob)
        return f

    def onnx_case(i: int, blob: bytes) -> Callable[[], Any]:
        def fn() -> Any:
            s = ort.load(Artifact(write(f"m{i}.onnx", blob), "onnx"), threads=1)
            s.close()

        return fn

    for i in range(50):
        cases.append((f"onnx[{i}]", onnx_case(i, _mutate(onnx, rng))))
    for i in range(20):
        blob = _mutate(sp, rng) if i % 2 else sp[: rng.randrange(len(sp))]
        cases.append(
            (f"shape predictor[{i}]", lambda b=blob, i=i: ShapePredictor.load(write(f"s{i}.dat", b)))
        )
    for i, blob in enumerate([b"", b"\0" * 100, os.urandom(4096)]):
        cases.append((f"empty/random model[{i}]", onnx_case(100 + i, blob)))
    run_cases("model files", cases)


# ----------------------------------------------------------------------------- cards


def test_hostile_cards(tmp_path: Path) -> None:
    from facesdk import zoo

    rng = random.Random(SEED + 4)
    sha = "ab" * 32
    base: dict[str, Any] = {
        "id": "c",
        "task": "detect",
        "family": "yunet",
        "license": "MIT",
        "input": {"size": [8, 8], "mean": [0, 0, 0], "std": [1, 1, 1]},
        "artifacts": [
            {
                "format": "onnx",
                "file": "m.onnx",
                "sha256": sha,
                "sources": [{"kind": "mirror", "location": "d/m.onnx"}],
                "companions": [{"file": "m.bin", "sha256": sha}],
            }
        ],
        "thresholds": {"default": 0.5},
        "params": {"a": 1},
    }
    evil = [
        "../../etc/passwd",
        "/abs/path",
        "a/../../b",
        "..",
        ".",
        "",
        "C:\\x",
        "a\\b",
        "x\0y",
        "ok.onnx",
        "file:///etc/passwd",
        "http://example.com/x",
        "https://example.com/x",
        "ftp://x",
        5,
        None,
        [1],
        {"k": "v"},
        "é" * 300,
        "a" * 300,
        1e308,
        -1,
        True,
    ]
    paths = [
        ("id",),
        ("task",),
        ("license",),
        ("input",),
        ("input", "size"),
        ("input", "mean"),
        ("artifacts",),
        ("artifacts", 0, "file"),
        ("artifacts", 0, "sha256"),
        ("artifacts", 0, "sources"),
        ("artifacts", 0, "sources", 0, "kind"),
        ("artifacts", 0, "sources", 0, "location"),
        ("artifacts", 0, "companions", 0, "file"),
        ("artifacts", 0, "companions", 0, "sha256"),
        ("thresholds",),
        ("params",),
        ("embedding_size",),
        ("outputs",),
    ]
    cases: list[tuple[str, Callable[[], Any]]] = []
    import copy

    def mutated() -> dict[str, Any]:
        d = copy.deepcopy(base)
        if rng.random() < 0.3:  # another source kind with the same (possibly evil) location
            d["artifacts"][0]["sources"][0]["kind"] = rng.choice(["url", "package", "pypi", "recipe", "path"])
        for _ in range(rng.randint(1, 3)):
            path = rng.choice(paths)
            cur: Any = d
            try:
                for p in path[:-1]:
                    cur = cur[p]
                if rng.random() < 0.15:
                    del cur[path[-1]]
                else:
                    cur[path[-1]] = rng.choice(evil)
            except (TypeError, KeyError, IndexError):
                pass  # an earlier mutation replaced a parent of this path
        return d

    def contained(name: str, card: Any) -> None:
        if not isinstance(card, zoo.ModelCard):
            return
        for art in card.artifacts:
            p = zoo._cached_path(card, art)
            assert p.resolve().is_relative_to((zoo.cache_dir() / "models").resolve()), f"{p} escapes"
            for s in art.sources:
                assert s.kind != "url" or s.location.startswith("https://"), s.location

    for i in range(110):
        d = mutated()
        cases.append((f"card dict[{i}]", lambda d=d: zoo.ModelCard.from_dict(d)))
    texts = [
        'id = "x"\n' * 2,
        "= 1",
        "[[artifacts]]\n" * 3,
        "a = 1\na = 2",
        '"\\ud800" = 1',
        "x = 1979-05-27T07:32:00Z",
        "a = [1, 'two']",
        "a = {b = 1, b = 2}",
        "\ufeffid = 'x'",
        "a = " + "[" * 3000 + "]" * 3000,
    ]
    for i, t in enumerate(texts):
        f = tmp_path / f"t{i}.toml"
        f.write_text(t, encoding="utf-8", errors="surrogatepass") if "\\ud800" not in t else f.write_text(t)
        cases.append((f"card toml[{i}]", lambda f=f: zoo.ModelCard.from_toml(f)))
    for i in range(12):
        f = tmp_path / f"r{i}.toml"
        f.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randint(0, 300))))
        cases.append((f"card random bytes[{i}]", lambda f=f: zoo.ModelCard.from_toml(f)))
    run_cases("cards", cases, contained)


# ----------------------------------------------------------------------------- serial frames


def test_hostile_serial_frames() -> None:
    pytest.importorskip("serial")
    from facesdk_backends.max7800x.board import protocol as P

    rng = random.Random(SEED + 5)
    decoders = [
        P.DeviceInfo.decode,
        P.EnrolRequest.decode,
        P.EnrolResult.decode,
        P.RunResult.decode,
        P.LoadDbRequest.decode,
        P.ReadDbRequest.decode,
        P.ReadDbPage.decode,
        P.ErrorReply.decode,
        P.decode_tensors,
        P.decode_image,
    ]
    cases: list[tuple[str, Callable[[], Any]]] = []
    for i in range(150):
        dec = decoders[i % len(decoders)]
        n = rng.choice([0, 1, 2, 5, 17, 64, 300])
        payload = bytes(rng.randrange(256) for _ in range(n))
        if rng.random() < 0.3 and n >= 4:  # plausible headers with absurd sizes
            payload = (
                struct.pack("<HH", rng.choice([0, 1, 0xFFFF]), rng.choice([0, 64, 0xFFFF])) + payload[4:]
            )
        cases.append((f"decode[{i}] {dec.__qualname__}", lambda d=dec, p=payload: d(p)))
    for i in range(30):
        nd = rng.randint(0, 9)
        dims = [rng.choice([0, 1, 7, 2**16, 2**32 - 1]) for _ in range(nd)]
        raw = bytes([1, rng.randrange(4), nd]) + struct.pack(f"<{nd}I", *dims) + bytes(rng.randint(0, 64))
        cases.append((f"tensor header[{i}] {dims}", lambda r=raw: P.decode_tensors(r)))

    sent: list[P.Frame] = []

    def stream_case(i: int) -> Callable[[], Any]:
        frames = [
            P.Frame(
                rng.randrange(256),
                rng.randrange(65536),
                bytes(rng.randrange(256) for _ in range(rng.choice([0, 3, 40, 2000]))),
                rng.randrange(2**32),
            )
            for _ in range(rng.randint(1, 4))
        ]
        wire = b"".join(f.encode() for f in frames)
        if rng.random() < 0.5:  # a valid frame hidden inside a payload
            hidden = P.encode_frame(P.MsgType.LOAD_DB, 1, b"\0" * 6)
            wire = P.encode_frame(P.MsgType.RUN_IMAGE, 2, b"\x10" * 30 + hidden + b"\x20" * 30) + wire
            frames.insert(0, P.Frame(P.MsgType.RUN_IMAGE, 2, b"\x10" * 30 + hidden + b"\x20" * 30))
        noisy = _mutate(wire, rng) if rng.random() < 0.7 else wire
        noise = bytes(rng.randrange(256) for _ in range(rng.randint(0, 100)))
        chunk = rng.choice([1, 7, 64, 4096])

        def fn() -> Any:
            p = P.FrameParser()
            data = noise + noisy
            got = []
            for k in range(0, len(data), chunk):
                got += p.feed(data[k : k + chunk])
            got += p.flush_partial()
            for f in got:  # a right answer: only frames that were really sent come out
                assert f in frames, f"parser produced a frame nobody sent: type 0x{f.type:02x} seq {f.seq}"
            assert p.buffered <= 2 * (P.HEADER_SIZE + P.MAX_PAYLOAD + P.TRAILER_SIZE)
            sent.extend(got)

        return fn

    for i in range(120):
        cases.append((f"stream[{i}]", stream_case(i)))
    run_cases("serial frames", cases)


def test_hostile_requests_to_the_device_simulator() -> None:
    """Valid frames with hostile payloads to the pty simulator: it answers ERROR (never INTERNAL,
    which would mean an untyped exception inside) or a valid response."""
    pytest.importorskip("serial")
    from facesdk_backends.max7800x.board import protocol as P
    from facesdk_backends.max7800x.board.driver import DeviceRejectedError, Max7800xDevice
    from facesdk_backends.max7800x.board.simulator import DeviceSimulator

    rng = random.Random(SEED + 6)
    cases: list[tuple[str, Callable[[], Any]]] = []
    with DeviceSimulator(embedding_size=16) as sim, Max7800xDevice(sim.port, timeout=0.3, retries=1) as dev:

        def req(t: int, payload: bytes) -> Callable[[], Any]:
            def fn() -> Any:
                try:
                    dev.request(P.MsgType(t), payload)
                except DeviceRejectedError as exc:
                    assert exc.code != P.ErrorCode.INTERNAL, f"simulator failed internally: {exc}"
                    raise

            return fn

        types = [
            P.MsgType.INFO,
            P.MsgType.LOAD_DB,
            P.MsgType.ENROL,
            P.MsgType.RUN_IMAGE,
            P.MsgType.READ_DB,
            P.MsgType.RUN_TENSOR,
        ]
        for i in range(60):
            t = types[i % len(types)]
            payload = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 4, 21, 64, 500])))
            cases.append((f"request[{i}] {t.name}", req(int(t), payload)))
        run_cases("device requests", cases)


# ----------------------------------------------------------------------------- command line


def test_hostile_command_lines(shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from facesdk.cli import main

    rng = random.Random(SEED + 7)
    photo = str(shared / "data/photos/obama-240p.jpg")
    corrupt = tmp_path / "c.jpg"
    corrupt.write_bytes(Path(photo).read_bytes()[:900])
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(Path(photo).read_bytes())
    badg = tmp_path / "bad.npz"
    badg.write_bytes(b"PK\x03\x04 not a gallery")
    values = [
        photo,
        str(corrupt),
        str(folder),
        str(tmp_path / "missing.png"),
        "-",
        "",
        "x" * 5000,
        "\u202e.jpg",
        str(badg),
        str(tmp_path),
        "0",
        "-1",
        "5",
        "nan",
        "1e400",
        "--",
        "-x",
        "\0",
    ]
    cmds = ["detect", "identify", "verify", "enroll", "models", "backends", "bench", "max7800x", "nope", ""]
    flags = [
        "--json",
        "--jsonl",
        "--top-k",
        "--threshold",
        "-g",
        "--gallery",
        "--name",
        "--backend",
        "--device",
        "--detector",
        "--embedder",
        "--precision",
        "--no-strict",
        "--exit-code",
        "--task",
        "-v",
        "--limit",
    ]
    cases: list[tuple[str, Callable[[], Any]]] = []

    def cli(argv: list[str], stdin: bytes) -> Callable[[], Any]:
        def fn() -> Any:
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                rc = main(argv)
            assert isinstance(rc, int) and rc != 70, f"exit {rc}: {err.getvalue()[-300:]}"
            assert "Traceback" not in err.getvalue()

        return fn

    for i in range(70):
        argv = [rng.choice(cmds)]
        for _ in range(rng.randint(0, 5)):
            argv.append(rng.choice(flags) if rng.random() < 0.5 else rng.choice(values))
        if argv[0] in ("detect", "identify", "verify", "enroll") and rng.random() < 0.5:
            argv += ["-g", str(tmp_path / f"g{i}.npz")] if argv[0] in ("identify", "enroll") else []
            argv += [rng.choice(values) for _ in range(rng.randint(1, 3))]
        stdin = rng.choice([b"", b"garbage", Path(photo).read_bytes()[: rng.randrange(1, 5000)]])
        cases.append((f"argv[{i}] {argv[:8]!r:.150}", cli(argv, stdin)))
    t0 = time.monotonic()
    run_cases("command lines", cases)
    assert time.monotonic() - t0 < 600


def test_suite_size() -> None:
    """Runs last (file order): the generated cases add up to at least 1,000."""
    if len(COUNTS) < 8:
        pytest.skip(f"only part of the suite ran: {COUNTS}")
    assert sum(COUNTS.values()) >= 1000, COUNTS
