"""embed_aligned: already-aligned face crops embedded without a detector."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import facesdk
from facesdk.errors import ConfigError


@pytest.fixture(scope="module")
def mfn() -> facesdk.FaceRecognizer:
    return facesdk.FaceRecognizer(detector="yunet-2023mar", embedder="mobilefacenet-sirius",
                                  backend="onnxruntime")


def test_own_template_and_scaled_crops(mfn: facesdk.FaceRecognizer, shared: Path, tmp_path: Path) -> None:
    img = mfn.load(shared / "data/lfw/images/Babe_Ruth/Babe_Ruth_0001.jpg")
    d = max(mfn.detect(img), key=lambda d: d.width * d.height)
    crop = mfn.align(img, [d])
    want = mfn.embed_crops(crop)[0]
    assert np.allclose(mfn.embed_aligned(crop, template="arcface-112")[0], want, atol=1e-6)
    # a file on disk and a 2x upscaled crop of the same template
    from PIL import Image

    Image.fromarray(crop[0]).resize((224, 224), Image.BICUBIC).save(tmp_path / "c.png")
    got = mfn.embed_aligned([tmp_path / "c.png"])[0]
    assert float(got @ want) > 0.98
    with pytest.raises(ConfigError):
        mfn.embed_aligned(crop, template="vggface")
    with pytest.raises(ConfigError):
        mfn.embed_aligned(np.zeros((1, 100, 60, 3), np.uint8))


def test_arcface_crops_into_the_dlib_embedder(mfn: facesdk.FaceRecognizer, shared: Path) -> None:
    """Tight ArcFace crops through dlib's aligner match the full default pipeline's embedding."""
    dl = facesdk.FaceRecognizer(backend="onnxruntime")
    for name in ("Babe_Ruth/Babe_Ruth_0001.jpg", "Barbara_Bach/Barbara_Bach_0001.jpg"):
        img = mfn.load(shared / "data/lfw/images" / name)
        d = max(mfn.detect(img), key=lambda d: d.width * d.height)
        crop = mfn.align(img, [d])
        full = dl.embed_face(img).embedding
        assert float(dl.embed_aligned(crop, template="arcface112")[0] @ full) > 0.97, name
