"""The max7800x package's structure: three parts, one chips table, one CLI module, lazy import."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from facesdk.errors import ConfigError


def test_plugin_discovery_imports_neither_emulator_nor_yaml():
    code = (
        "import sys\n"
        "from facesdk.plugins import get_plugin_manager\n"
        "pm = get_plugin_manager()\n"
        "names = [p.__name__ for p in pm.get_plugins() if hasattr(p, '__name__')]\n"
        "assert 'facesdk_backends.max7800x.plugin' in names, names\n"
        "bad = [m for m in ('yaml', 'facesdk_backends.max7800x.accel.emulator',\n"
        "       'facesdk_backends.max7800x.accel.network', 'facesdk_backends.max7800x.board.simulator')\n"
        "       if m in sys.modules]\n"
        "print(bad)\n"
        "assert not bad, bad\n"
        "import facesdk_backends.max7800x as m\n"
        "assert 'yaml' not in sys.modules\n"
        "m.load_model\n"  # resolved lazily
        "assert 'facesdk_backends.max7800x.accel.emulator' in sys.modules\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_three_parts_and_one_cli_module():
    for mod in ("accel.emulator", "accel.fit", "accel.network", "accel.checkpoint", "accel.cproject",
                "firmware.weights_h", "firmware.embeddings_h", "firmware.flash", "firmware.matching",
                "board.protocol", "board.driver", "board.simulator", "board.uart", "chips", "cli"):
        assert importlib.util.find_spec(f"facesdk_backends.max7800x.{mod}") is not None, mod
    for gone in ("serial_cli", "dbexport", "emulator", "protocol"):
        assert importlib.util.find_spec(f"facesdk_backends.max7800x.{gone}") is None, gone


def test_one_chips_table_resolves_every_alias():
    from facesdk_backends.max7800x.accel.fit import chip_spec as fit_chip_spec
    from facesdk_backends.max7800x.chips import CHIPS, chip_key, chip_spec
    from facesdk_backends.max7800x.firmware import get_profile

    for alias, key in (("MAX78000", "max78000"), ("ai85", "max78000"), ("AI87", "max78002"),
                       ("max78002", "max78002")):
        assert chip_key(alias) == key
        assert chip_spec(alias) is CHIPS[key] is fit_chip_spec(alias)
        assert get_profile(alias).name == key
    with pytest.raises(ConfigError, match="profile 'max7800'"):
        get_profile("max7800")
    with pytest.raises(ConfigError, match="chip"):
        chip_spec("max78001")
