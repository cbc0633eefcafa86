"""Constants of the msdk FaceID firmware's dot-product layer and record-mode flash, per chip.

Facts from msdk: ``cnn_3.h`` (``CNN_3_NUM_OUTPUTS`` 1024, ``output_shift`` −1), ``baseaddr.h``
(kernel-memory address of each processor), ``faceID.c`` (``Threshold`` 70 on the MAX78000 demo,
64 on MAX78002), ``record.c`` and ``max78002.h`` (flash layout). See :mod:`.` for the formats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from facesdk.errors import ConfigError

from ..chips import chip_key

__all__ = [
    "DotProductProfile", "PROFILES", "get_profile", "FIRMWARE_MODEL_ID", "FIRMWARE_MODEL_ALIASES", "UNKNOWN",
    "NAME_LEN", "DB_SCALE", "PROBE_SCALE",
    "FLASH_BASE", "FLASH_PAGE", "FLASH_SIZE", "DB_ADDRESS", "STATUS_ADDRESS", "DB_PAGES", "MAGIC",
    "MAX_PERSON_ID", "MAX_RECORD_COUNT",
]

#: The model whose 64-d embeddings the firmware's rows are (card ``ai85-faceid-112``: msdk's faceid_112).
FIRMWARE_MODEL_ID = "ai85-faceid-112"
#: Other names galleries may carry for that same model.
FIRMWARE_MODEL_ALIASES = frozenset({"ai85-faceid-112", "ai85-faceid_112", "faceid_112"})

UNKNOWN = "Unknown"
NAME_LEN = 6  # char names[...][7] in the firmware, NUL included
DB_SCALE = 256  # 128 * CNN_3_OUTPUT_SHIFT (2)
PROBE_SCALE = 128

# MAX78002 flash (msdk max78002.h) and record.c layout
FLASH_BASE = 0x10000000
FLASH_PAGE = 0x4000
FLASH_SIZE = 0x00280000
DB_ADDRESS = FLASH_BASE + FLASH_SIZE - 5 * FLASH_PAGE
STATUS_ADDRESS = FLASH_BASE + FLASH_SIZE - 6 * FLASH_PAGE
DB_PAGES = 5
MAGIC = 0xFEEDBEEF
MAX_PERSON_ID = 0xFFF
MAX_RECORD_COUNT = 0xF


def _baseaddr_max78000() -> tuple[int, ...]:
    return tuple(0x50180000 + q * 0x400000 + k * 0x4000 for q in range(4) for k in range(16))


def _baseaddr_max78002() -> tuple[int, ...]:
    return tuple(0x51400000 + q * 0x1000000 + k * 0x20000 + 0x1F40 for q in range(4) for k in range(16))


@dataclass(frozen=True)
class DotProductProfile:
    """Constants of one firmware's dot-product layer.

    Attributes:
        name: ``max78000`` or ``max78002``.
        capacity: slots in the layer (``CNN_3_NUM_OUTPUTS``).
        embedding_size: input width (one processor per dimension).
        output_shift: the layer's ``output_shift``.
        threshold: the firmware's ``Threshold`` (an int8 score).
        baseaddr: kernel-memory address of each processor's slot weights (``baseaddr.h``).
    """

    name: str
    capacity: int
    threshold: int
    baseaddr: tuple[int, ...]
    embedding_size: int = 64
    output_shift: int = -1

    def with_capacity(self, capacity: int) -> "DotProductProfile":
        """The same profile with another slot count (e.g. 512 for the ai85 checkpoint)."""
        if not 1 <= capacity <= 4096:
            raise ConfigError(f"capacity {capacity} out of range 1..4096")
        return DotProductProfile(self.name, capacity, self.threshold, self.baseaddr,
                                 self.embedding_size, self.output_shift)

    @property
    def words_per_processor(self) -> int:
        """32-bit words of slot data per processor (9-byte kernels, padded to a word)."""
        return math.ceil(math.ceil(self.capacity / 9) * 9 / 4)


PROFILES: dict[str, DotProductProfile] = {
    "max78000": DotProductProfile("max78000", 1024, 70, _baseaddr_max78000()),
    "max78002": DotProductProfile("max78002", 1024, 64, _baseaddr_max78002()),
}


def get_profile(name: str | DotProductProfile, capacity: int | None = None) -> DotProductProfile:
    """Profile by name (``max78000``/``max78002``), optionally with another capacity."""
    prof = name if isinstance(name, DotProductProfile) else PROFILES[chip_key(name, "profile")]
    return prof.with_capacity(capacity) if capacity and capacity != prof.capacity else prof
