"""MAX78000 / MAX78002 backends: safe ai8x checkpoint import, bit-exact accelerator emulator, fit check.

Public API (see README.md in this folder)::

    from facesdk_backends.max7800x import load_model, check_fit
    model = load_model("ai85-faceid-qat8-q.pth.tar", "faceid.yaml", chip="max78000")
    outputs = model.run(x_chw_int8)          # list of int8 arrays (output layers)
    per_layer = model.run_all(x_chw_int8)    # every layer's output
    print(check_fit(model).format())
"""

from .checkpoint import load_checkpoint, load_state_dict
from .emulator import Model, load_model
from .fit import CHIPS, ChipSpec, FitReport, check_fit, chip_spec
from .network import Layer, Network, parse_network

__all__ = [
    "load_checkpoint", "load_state_dict", "Model", "load_model", "CHIPS", "ChipSpec", "FitReport",
    "check_fit", "chip_spec", "Layer", "Network", "parse_network",
]
