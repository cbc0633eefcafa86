"""izer-exact behaviour (section 3 of issue 14): each expected value is a fact of ai8x-synthesis @ ab4f4c0
(the file and line it comes from is named next to it)."""

from __future__ import annotations

import numpy as np
import pytest
from facesdk_backends.max7800x.accel.emulator import pool2d
from facesdk_backends.max7800x.accel.network import _mask, _parse_layer, izer_weight_bits

from facesdk.errors import ModelFormatError


def test_avg_pool_rounding_is_half_away_from_zero():
    # izer/compute.py pool2d(floor=False): ceil(avg - 0.5) for avg < 0, floor(avg + 0.5) otherwise
    sums = np.array([6, -6, 10, -10, 2, -2, 5, -5, 508, -512])  # 2x2 windows: avg = sum / 4
    want_round = [2, -2, 3, -3, 1, -1, 1, -1, 127, -128]  # 2.5 -> 3 (half-to-even would give 2)
    want_trunc = [1, -1, 2, -2, 0, 0, 1, -1, 127, -128]  # floor=True: np.nanmean(dtype=int64) truncates
    x = np.zeros((1, len(sums), 2, 2), np.int64)
    for c, s in enumerate(sums):
        q, r = divmod(int(s), 4)
        x[0, c] = np.array([[q, q], [q, q]]) + np.array([[r, 0], [0, 0]])
    assert x.reshape(len(sums), 4).sum(1).tolist() == sums.tolist()
    got, _ = pool2d(x, "avg", (2, 2), (2, 2), round_avg=True)
    assert got.ravel().tolist() == want_round
    got, _ = pool2d(x, "avg", (2, 2), (2, 2), round_avg=False)
    assert got.ravel().tolist() == want_trunc


def test_yaml_dialect_of_upstream():
    # izer/yamlcfg.py: processor masks are hex strings with '.'/'_' removed (int(..., 16))
    assert _mask("0xffff.ffff.ffff.ffff") == 2**64 - 1
    assert _mask("ffff_0000") == 0xFFFF0000 and _mask(0x7) == 7
    # operation under convolution:/operator:/op:, one of them only
    assert _parse_layer(0, {"operator": "Conv2d", "kernel_size": "1x1", "pad": 0}).op == "conv2d"
    assert _parse_layer(0, {"convolution": "conv2d"}).kernel_size == (3, 3)
    with pytest.raises(ModelFormatError, match="duplicate operation"):
        _parse_layer(0, {"operation": "conv2d", "op": "conv2d"})
    # operation: add = no convolution, 2-operand element-wise add, pad 0 (yamlcfg.py `elif conv == 'add'`)
    add = _parse_layer(3, {"operation": "add", "in_sequences": [1, 2]})
    assert (add.op, add.eltwise, add.pad) == ("none", "add", (0, 0))
    assert _parse_layer(3, {"op": "bitwise_xor", "in_sequences": [1, 2]}).eltwise == "xor"
    # conv_groups: is the same as groups:, both at once is an error
    assert _parse_layer(0, {"op": "conv2d", "conv_groups": 4}).groups == 4
    with pytest.raises(ModelFormatError, match="conv_groups"):
        _parse_layer(0, {"op": "conv2d", "conv_groups": 4, "groups": 4})
    # quantization: 1, 2, 4, 8, bin/binary (-1); anything else is a typed error, not a ValueError
    assert _parse_layer(0, {"op": "conv2d", "quantization": "bin"}).yaml["quantization"] == -1
    assert _parse_layer(0, {"op": "conv2d", "quantization": 4}).yaml["quantization"] == 4
    with pytest.raises(ModelFormatError, match="quantization"):
        _parse_layer(0, {"op": "conv2d", "quantization": 3})
    # defaults: padding [[1, 1]], conv1d kernel 9 (DEFAULT_1D_KERNEL), pad 0 for linear / no convolution
    assert _parse_layer(0, {"op": "conv2d", "kernel_size": "1x1"}).pad == (1, 1)
    c1 = _parse_layer(0, {"op": "conv1d"})
    assert (c1.kernel_size, c1.pad) == ((9, 1), (1, 0))
    assert _parse_layer(0, {"op": "mlp"}).pad == (0, 0)


@pytest.mark.parametrize(
    "extra,match",
    [
        ({"dilation": 2}, "dilation"),
        ({"pool_dilation": [2, 2]}, "pool_dilation"),
        ({"in_dim": [4, 4]}, "in_dim"),
        ({"in_crop": [1, 1]}, "in_crop"),
        ({"in_skip": 1}, "in_skip"),
        ({"read_gap": 1}, "read_gap"),
        ({"bypass": True}, "bypass"),
        ({"weight_source": 2}, "weight_source"),
        ({"sequence": 5}, "sequence"),
        ({"buffer_shift": 1}, "buffer_shift"),
        ({"pool_first": False, "max_pool": 2}, "pool_first"),
        ({"operands": 2}, "operands"),
    ],
)
def test_value_changing_options_are_refused_not_ignored(extra, match):
    with pytest.raises(ModelFormatError, match=match):
        _parse_layer(1, {"op": "conv2d", **extra})
    assert _parse_layer(1, {"op": "conv2d", "dilation": 1, "pool_first": True}).op == "conv2d"  # harmless


@pytest.mark.parametrize(
    "layer,match",
    [
        (
            {"op": "conv2d", "output_width": 32, "activate": "ReLU"},
            "32-bit",
        ),  # raw accumulator: no activation
        (
            {"op": "none", "eltwise": "mul", "in_sequences": [0, 1]},
            "mul",
        ),  # yamlcfg.py: add, or, sub, xor only
        ({"op": "conv2d", "stride": 2}, "stride"),  # izer.py: "does not support stride other than 1"
        (
            {"op": "conv2d", "max_pool": 2, "pool_stride": [2, 1]},
            "non-square",
        ),  # izer.py: non-square pooling stride
        ({"op": "conv2d", "pad": 3}, "pad"),  # izer.py: "does not support `pad` >= 3"
    ],
)
def test_izer_refusals(layer, match):
    with pytest.raises(ModelFormatError, match=match):
        _parse_layer(2, layer)


def test_weight_bits_default_is_8_not_guessed():
    # izer/checkpoint.py: wb = checkpoint_state[...weight_bits] if present else 8; all-zero weights -> 1
    w = np.array([[-2, 1], [0, 1]])  # would fit 2 bits; izer still says 8
    assert izer_weight_bits(w) == 8
    assert izer_weight_bits(w, ckpt_bits=np.array([2])) == 2
    assert izer_weight_bits(w, ckpt_bits=np.array([0])) == 8  # `if quantization[seq] == 0: ... = 8`
    assert izer_weight_bits(np.zeros((2, 2)), ckpt_bits=np.array([8])) == 1
    assert izer_weight_bits(w, yaml_bits=4, ckpt_bits=np.array([8])) == 4


def _model(layers_spec, chip, input_shape):
    """A synthetic network: (in, out, kernel, bias) per conv2d layer, all 64 processors."""
    from facesdk_backends.max7800x.accel.emulator import Model
    from facesdk_backends.max7800x.accel.network import Layer, Network

    layers = []
    for i, (cin, cout, k, bias) in enumerate(layers_spec):
        w = np.ones((cout, cin, k, k), np.int64)
        layers.append(
            Layer(
                index=i,
                op="conv2d",
                in_sequences=[i - 1],
                kernel_size=(k, k),
                pad=((k - 1) // 2,) * 2,
                weights=w,
                bias=np.ones(cout, np.int64) if bias else None,
                processors=(1 << 64) - 1 if cin >= 64 else (1 << cin) - 1,
            )
        )
    return Model(Network("synthetic", layers, input_shape), chip=chip)


def test_max78002_kernel_memory_per_processor():
    from facesdk_backends.max7800x.accel.fit import check_fit
    from facesdk_backends.max7800x.chips import chip_spec

    spec = chip_spec("max78002")
    # izer tornadocnn.py DevAI87: MASK_WIDTH_SMALL 4,096; MASK_WIDTH_LARGE 5,120 (mask_large: proc % 16 == 0)
    assert [spec.kernel_rows_of(p) for p in (0, 1, 15, 16, 32, 48, 63)] == [
        5120,
        4096,
        4096,
        5120,
        5120,
        5120,
        4096,
    ]
    assert spec.weight_bytes == 2_396_160 and chip_spec("max78000").weight_bytes == 442_368
    # 4 x 1,024 + 64 = 4,160 rows on every processor: izer "Kernel memory exhausted at processor 63"
    m = _model(
        [
            (64, 1024, 3, False),
            (1024, 64, 3, False),
            (64, 1024, 3, False),
            (1024, 64, 3, False),
            (64, 64, 3, False),
        ],
        "max78002",
        (64, 4, 4),
    )
    rep = check_fit(m)
    assert rep.kernel_rows_used == 4160 and not rep.fits
    assert any("exhausted at processor 63" in p for p in rep.problems)
    assert rep.to_dict()["weights"]["kernel_rows_are_estimate"] is True
    # the same net with 4,096 rows fits
    ok = _model(
        [(64, 1024, 3, False), (1024, 64, 3, False), (64, 1024, 3, False), (1024, 64, 3, False)],
        "max78002",
        (64, 4, 4),
    )
    assert check_fit(ok).fits


def test_bias_memory_is_per_layer_bank():
    from facesdk_backends.max7800x.accel.fit import check_fit

    # izer kbias.py: a layer's biases go to one quadrant bank of BIAS_SIZE (512 B on MAX78000):
    # 600 biased outputs in one layer -> "bias memory capacity exhausted" (total 600 < 2,048 is not the test)
    rep = check_fit(_model([(64, 600, 1, True)], "max78000", (64, 2, 2)))
    assert not rep.fits and any("bias memory capacity exhausted" in p for p in rep.problems)
    assert check_fit(_model([(64, 600, 1, True)], "max78002", (64, 2, 2))).fits  # 2,048 B banks
    # four layers of 500 fill the four banks; a fifth of 100 does not fit anywhere
    four = [(64, 500, 1, True), (500, 64, 1, False)] * 4
    assert not any("bias" in p for p in check_fit(_model(four, "max78000", (64, 2, 2))).problems)
    five = four + [(64, 100, 1, True)]
    assert any("bias memory" in p for p in check_fit(_model(five, "max78000", (64, 2, 2))).problems)


def test_max_dimension_and_flatten_limits():
    from facesdk_backends.max7800x.accel.fit import check_fit

    # izer tornadocnn.py MAX_ROW_COL: 1,024 (AI85) / 2,048 (AI87) -> largest dimension 1,023 / 2,047
    assert any(
        "dimension 1100 > 1023" in p
        for p in check_fit(_model([(3, 8, 3, False)], "max78000", (3, 1100, 8))).problems
    )
    assert not any(
        "dimension" in p for p in check_fit(_model([(3, 8, 3, False)], "max78002", (3, 1100, 8))).problems
    )
    # izer.py: "`flatten` exceeds supported input dimensions (H * W > 256)"
    m = _model([(3, 8, 1, False)], "max78000", (3, 17, 16))
    m.layers[0].flatten = True
    m.layers[0].weights = np.ones((8, 3 * 17 * 16, 1, 1), np.int64)
    assert any("flatten" in p and "272" in p for p in check_fit(m).problems)


def test_exported_files_follow_the_umask(tmp_path):
    import os

    from facesdk_backends.max7800x.accel.network import Layer, Network, save_network
    from facesdk_backends.max7800x.firmware import export_firmware_db

    from facesdk.gallery import Gallery

    g = Gallery("ai85-faceid-112", 64)
    g.add("a", np.random.default_rng(0).normal(size=64))
    old = os.umask(0o027)
    try:
        files = export_firmware_db(g, tmp_path / "fw", flash=True, weights_bin=True)
        net = save_network(
            Network("n", [Layer(index=0, op="passthrough", in_sequences=[-1])], (3, 2, 2)), tmp_path / "n.npz"
        )
    finally:
        os.umask(old)
    for p in [*files.values(), net]:
        assert oct(os.stat(p).st_mode & 0o777) == oct(0o640), p  # 0o666 & ~0o027, not mkstemp's 0o600


def test_run_shape_error_names_the_given_shape():
    from facesdk_backends.max7800x.accel.emulator import Model
    from facesdk_backends.max7800x.accel.network import Layer, Network

    from facesdk.errors import ConfigError

    m = Model(Network("n", [Layer(index=0, op="passthrough", in_sequences=[-1])], (3, 4, 4)))
    with pytest.raises(ConfigError, match=r"got \(3, 5, 4\)$"):
        m.run(np.zeros((3, 5, 4), np.int8))
