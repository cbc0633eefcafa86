"""The one table of MAX7800x chips: names, aliases and accelerator limits.

Every part of this package (emulator, fit check, firmware database profiles, CLI, simulator,
backends) resolves a chip name through :func:`chip_key` / :func:`chip_spec`, so the names and
aliases (``max78000`` = ``ai85``, ``max78002`` = ``ai87``, any case) live here only.

Limits are from ai8x-synthesis ``izer/tornadocnn.py`` (``DevAI85`` / ``DevAI87``) and the data
sheets: 64 processors in 4 quadrants of 16; kernel memory of 72-bit rows per processor; bias
memory; data memory; layer count. See :mod:`.accel.fit` for how a network is placed.
"""

from __future__ import annotations

from dataclasses import dataclass

from facesdk.errors import ConfigError

__all__ = ["ChipSpec", "CHIPS", "CHIP_NAMES", "chip_key", "chip_spec", "chip_prefix"]


@dataclass(frozen=True)
class ChipSpec:
    """Accelerator limits of one chip.

    Attributes:
        name: display name (``MAX78000``).
        key: the canonical lower-case name (``max78000``).
        prefix: ai8x's device prefix (``ai85`` / ``ai87``), used in checkpoint file names.
        processors: CNN processors (64).
        kernel_rows: 72-bit kernel-memory rows of most processors (see :meth:`kernel_rows_of`).
        bias_bytes: total bias memory.
        data_bytes: total data memory.
        max_layers: hardware layers.
        depthwise: depthwise (grouped) convolution supported.
    """

    name: str
    key: str
    prefix: str
    processors: int
    kernel_rows: int
    bias_bytes: int
    data_bytes: int
    max_layers: int
    depthwise: bool
    max_channels: int = 1024
    max_pool: int = 16
    supports_binary: bool = False
    kernel_rows_large: int = 0  # rows of processors 0/16/32/48 (0: same as kernel_rows)
    bias_bank_bytes: int = 512  # bias memory of one quadrant; a layer's biases sit in one bank
    max_dim: int = 1023  # largest row/column count (izer MAX_ROW_COL - 1)

    def kernel_rows_of(self, proc: int) -> int:
        """72-bit kernel rows of processor ``proc`` (izer ``Dev.mask_width``: large on ``proc % 16 == 0``)."""
        return (self.kernel_rows_large or self.kernel_rows) if proc % 16 == 0 else self.kernel_rows

    @property
    def weight_bytes(self) -> int:
        return sum(self.kernel_rows_of(p) for p in range(self.processors)) * 9

    @property
    def data_words(self) -> int:
        """32-bit words per data-memory instance (16 instances)."""
        return self.data_bytes // 16 // 4


CHIPS: dict[str, ChipSpec] = {
    # izer tornadocnn.py DevAI85: MASK_WIDTH_SMALL = MASK_WIDTH_LARGE = 768, BIAS_SIZE = 512, MAX_ROW_COL 1024
    "max78000": ChipSpec("MAX78000", "max78000", "ai85", 64, 768, 2048, 512 * 1024, 32, depthwise=False,
                         kernel_rows_large=768, bias_bank_bytes=512, max_dim=1023),
    # DevAI87: MASK_WIDTH_SMALL = 4 * 1024 = 4,096, MASK_WIDTH_LARGE = 4,096 + 4 * 256 = 5,120 (processors
    # 0/16/32/48), BIAS_SIZE = 2048, MAX_ROW_COL 2048
    "max78002": ChipSpec("MAX78002", "max78002", "ai87", 64, 4096, 8192, 1280 * 1024, 128, depthwise=True,
                         supports_binary=True, kernel_rows_large=5120, bias_bank_bytes=2048, max_dim=2047),
}

#: Canonical chip names, in order.
CHIP_NAMES: tuple[str, ...] = tuple(CHIPS)

_ALIASES = {spec.prefix: key for key, spec in CHIPS.items()}


def chip_key(name: object, what: str = "chip") -> str:
    """Canonical name (``max78000``/``max78002``) of a chip name or alias, any case.

    Raises:
        ConfigError: a one-line error naming ``what`` (e.g. ``profile``) for an unknown name.
    """
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in CHIPS:
        raise ConfigError(f"unknown {what} {name!r}; use {' or '.join(CHIP_NAMES)}")
    return key


def chip_spec(chip: str | ChipSpec) -> ChipSpec:
    """The :class:`ChipSpec` of a chip name or alias (ConfigError otherwise)."""
    if isinstance(chip, ChipSpec):
        return chip
    return CHIPS[chip_key(chip)]


def chip_prefix(chip: str) -> str:
    """ai8x's prefix (``ai85``/``ai87``) of a chip."""
    return chip_spec(chip).prefix
