"""Face database files of the MAX7800x FaceID demo firmware, and the firmware's matching rule.

The msdk FaceID demos (``Examples/MAX78000/CNN/faceid_evkit``, the MAX78002 FaceID demos)
identify a face with a third network, ``cnn_3``: one dot-product (1x1 linear) layer whose
weights *are* the database — one 64-byte int8 row per enrolled embedding ("slot") — and the
firmware picks the slot with the largest int8 output. This package reads and writes the files
that database lives in, reproduces the arithmetic, and converts to and from a core
:class:`facesdk.gallery.Gallery`.

Formats (facts read from msdk's ``db_gen/utils.py``, ``faceID.c``, ``record.c``, ``cnn_3.h``):

* **Quantisation (db_gen)**: the network's ``F.normalize``-d float32 embedding ``x`` becomes, in
  float32, ``clip(x * 128 * 2, -128, 127)`` (``CNN_3_OUTPUT_SHIFT`` = 2), ``+ 256`` where negative,
  ``np.around`` (half to even), ``uint8`` — rounding after the (float32) addition, as db_gen does
  (:func:`quantize_db_embeddings`). Rows of the shipped ``ai8{5,7}-dot_emb_112`` checkpoints have
  norm ~256.
* **Probe (firmware)**: the embedding network's int8 output ``v`` is normalised on the CPU to
  ``n = 128 * v / ||v||`` in float, then cast to a byte (``n + 256`` when negative, truncated), so
  the probe is at scale 128.
* **Dot-product layer**: ``acc = sum(w * n)``; ``out = clip(floor(0.5 + acc / 2**(7 - s)), -128, 127)``
  with ``s = output_shift`` (−1 in the checkpoints, 8-bit weights), i.e. ``out ≈ 128 * cos``.
* **Decision**: ``max = 0, idx = 0``; for every slot in order, ``if out > max: max, idx = out, slot``;
  the face is ``names[idx]`` if ``max > Threshold`` else ``Unknown`` (``Threshold`` is 70 on the
  MAX78000 demo, 64 on the MAX78002 demo).
* ``weights_3.h``: ``#define KERNELS_3 { ... }`` — for each of the 64 processors (one per embedding
  dimension): its kernel-memory base address, a word count, then the slot bytes packed 4 per
  big-endian word, in groups of 9 stored in reverse order (``i -> 9*(i//9) + 8 - i%9``), zero padded;
  a final ``0x00000000``. The ``.bin`` variant holds only the data words, little-endian.
* ``embeddings.h``: ``#define DEFAULT_EMBS_NUM <n>`` and ``#define DEFAULT_NAMES { "name", ... }``,
  one name per slot, at most 6 characters (``char names[][7]``).
* **MAX78002 record-mode flash** (6 pages of 16 KiB at the end of the 2.5 MiB flash): the status page
  at ``0x10268000`` holds ``u32 persons, u32 embeddings``; the database at ``0x1026C000`` holds
  ``u32 0xFEEDBEEF``, then per person ``u32 name[0..3] (big-endian chars)``,
  ``u32 name[4]<<24 | name[5]<<16 | id<<4 | count`` and ``count`` 64-byte embeddings. Recorded slots
  follow the ``DEFAULT_EMBS_NUM`` slots of ``embeddings.h`` in the dot-product layer.
"""

from __future__ import annotations

from .database import DotProductDB, MatchResult, firmware_name
from .embeddings_h import read_embeddings_h, write_embeddings_h
from .export import export_firmware_db, import_firmware_db, load_dot_checkpoint
from .flash import read_flash_db, write_flash_db
from .matching import dot_product_scores, firmware_decision, quantize_db_embeddings, quantize_probe
from .profiles import (
    DB_ADDRESS,
    DB_SCALE,
    FLASH_BASE,
    FLASH_PAGE,
    FLASH_SIZE,
    MAGIC,
    NAME_LEN,
    PROBE_SCALE,
    PROFILES,
    STATUS_ADDRESS,
    UNKNOWN,
    DotProductProfile,
    get_profile,
)
from .scorer import FirmwareGalleryScorer, float_threshold_to_score, score_threshold_to_float
from .weights_h import read_weights_bin, read_weights_h, write_weights_bin, write_weights_h

__all__ = [
    "DotProductProfile", "PROFILES", "get_profile", "DotProductDB", "MatchResult", "firmware_name",
    "quantize_db_embeddings", "quantize_probe", "dot_product_scores", "firmware_decision",
    "write_weights_h", "read_weights_h", "write_weights_bin", "read_weights_bin",
    "write_embeddings_h", "read_embeddings_h", "write_flash_db", "read_flash_db",
    "export_firmware_db", "import_firmware_db", "load_dot_checkpoint",
    "FirmwareGalleryScorer", "float_threshold_to_score", "score_threshold_to_float",
    "FLASH_BASE", "FLASH_PAGE", "FLASH_SIZE", "STATUS_ADDRESS", "DB_ADDRESS", "MAGIC",
    "UNKNOWN", "NAME_LEN", "DB_SCALE", "PROBE_SCALE",
]
