"""MAX78000 / MAX78002: the accelerator, the FaceID firmware's database, the board.

Three parts (see README.md in this folder):

* :mod:`.accel` — the CNN accelerator: network description (YAML + checkpoint), safe checkpoint
  reader, bit-exact emulator, fit check, importer of ai8x-synthesis C projects.
* :mod:`.firmware` — what the msdk FaceID firmware stores and decides: database formats
  (``weights_3.h``, ``embeddings.h``, record-mode flash) and its matching rule.
* :mod:`.board` — talking to a board: the serial protocol, the driver, a pty simulator of a
  board, the reader of stock msdk demos' UART output.

plus :mod:`.chips` (the one table of chip names and limits), :mod:`.backend` (the ``max78000`` /
``max78002`` facesdk backends) and :mod:`.cli` (``facesdk max7800x …``).

Public API::

    from facesdk_backends.max7800x import load_model, check_fit
    model = load_model("ai85-faceid-qat8-q.pth.tar", "faceid.yaml", chip="max78000")
    outputs = model.run(x_chw_int8)          # list of int8 arrays (output layers)
    per_layer = model.run_all(x_chw_int8)    # every layer's output
    print(check_fit(model).format())

Imports are lazy: importing this package (as plugin discovery does) loads neither the emulator
nor PyYAML; the names below are resolved on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "load_checkpoint", "load_state_dict", "Model", "load_model", "CHIPS", "ChipSpec", "FitReport",
    "check_fit", "chip_spec", "Layer", "Network", "parse_network", "import_c_project",
    "save_network", "load_network",
]

_LAZY = {
    "load_checkpoint": ".accel.checkpoint",
    "load_state_dict": ".accel.checkpoint",
    "Model": ".accel.emulator",
    "load_model": ".accel.emulator",
    "FitReport": ".accel.fit",
    "check_fit": ".accel.fit",
    "CHIPS": ".chips",
    "ChipSpec": ".chips",
    "chip_spec": ".chips",
    "Layer": ".accel.network",
    "Network": ".accel.network",
    "parse_network": ".accel.network",
    "save_network": ".accel.network",
    "load_network": ".accel.network",
    "import_c_project": ".accel.cproject",
}


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(mod, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
