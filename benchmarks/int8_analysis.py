"""Int8 analysis behind the quantisation recipes (issue 13); numbers in benchmarks/RESULTS.md.

``python -m facesdk_bench.int8_analysis mobilefacenet``
    Where MobileFaceNet loses accuracy in int8 and what recovers it. The card's 500 calibration faces
    (LFW DevTrain identities in no evaluated pair, :mod:`facesdk_zoo.calibration`) are split: the first
    400 calibrate, the other 100 (other people) measure the mean / minimum cosine of each int8 variant
    to the fp32 model. Per-tensor error is the signal-to-quantisation-noise ratio
    ``10·log10(Σx² / Σ(x − x̂)²)`` of every intermediate tensor of the int8 model against the fp32 model
    (``onnxruntime.quantization.qdq_loss_debug``, "xmodel" error: accumulated from the input).
    Variants: ONNX Runtime static QDQ (min/max, percentile, entropy, symmetric activations), channel
    equalisation (:func:`facesdk_zoo.quantize.equalize_channels`), layers kept in fp32, the split first
    PReLU (:func:`facesdk_zoo.quantize.split_prelu`), and our full-int8 TFLite on LiteRT.

``python -m facesdk_bench.int8_analysis ort-ceiling``
    What ONNX Runtime int8 can gain on this CPU, in one process, 2 threads, batch 32, interleaved
    repeats (median): a stack of 3×3 convolutions (256 channels, 28×28: large GEMMs) in fp32 and int8
    (QDQ U8S8 / S8S8 / QOperator / reduce_range); dlib ResNet fp32 against its int8 variants (the card's
    QDQ U8S8 file, QOperator, S8S8, U8U8, graph optimisation level "extended" instead of "all");
    and the ONNX Runtime profiler's per-layer convolution times of fp32 against int8.

``python -m facesdk_bench.int8_analysis graph-variants``
    The graph-level changes behind the int8 recipes' speed (issue 13), each measured against the fp32
    model in one process (2 threads, batch 32, interleaved repeats with a 0.2 s pause before each call,
    median) with its mean / minimum cosine
    to fp32 on 100 held-out calibration-set faces (the other 400 calibrate): dlib ResNet QDQ with the
    shortcut Pads in float (the card) and on uint8 (:func:`facesdk_zoo.quantize.fold_qdq_pads`, the recipe's
    ``uint8_pads`` option);
    MobileFaceNet with the first PReLU split (previous recipe) and every PReLU split
    (:func:`facesdk_zoo.quantize.split_prelu` on :func:`facesdk_zoo.quantize.prelu_convs`), on ONNX
    Runtime and as our full-int8 TFLite on LiteRT (XNNPACK). Also where the int8 time goes: ONNX Runtime's
    profiler per operator type, and the LiteRT ops left outside the XNNPACK delegate (``DELEGATE`` nodes
    count the delegated partitions).
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

CONV0 = "MobileFaceNet/MobileFaceNet/Conv2d_0/BatchNorm/FusedBatchNorm"


def _session(path: str | bytes, threads: int = 2, level: str = "all") -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    so.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    }[level]
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def _run(path: str, x: np.ndarray) -> np.ndarray:
    s = _session(path)
    name = s.get_inputs()[0].name
    return np.concatenate([s.run(None, {name: x[i : i + 50]})[0] for i in range(0, len(x), 50)])


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(1)


def _quant(src: str, out: str, x: np.ndarray, **kw: Any) -> None:
    from facesdk_zoo.quantize import TensorReader

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    extra = {"CalibMaxIntermediateOutputs": 7, **kw.pop("extra", {})}
    quantize_static(
        src,
        out,
        TensorReader("input", x, 16),
        quant_format=kw.pop("fmt", QuantFormat.QDQ),
        per_channel=True,
        activation_type=kw.pop("act", QuantType.QUInt8),
        weight_type=kw.pop("wt", QuantType.QInt8),
        calibrate_method=kw.pop("method", CalibrationMethod.MinMax),
        nodes_to_exclude=kw.pop("exclude", []),
        extra_options=extra,
    )


def _sqnr(float_model: str, q_model: str, x: np.ndarray, td: Path) -> dict[str, float]:
    from facesdk_zoo.quantize import TensorReader

    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    fa, qa = str(td / "fa.onnx"), str(td / "qa.onnx")
    modify_model_output_intermediate_tensors(float_model, fa)
    modify_model_output_intermediate_tensors(q_model, qa)
    err = compute_activation_error(
        create_activation_matching(
            collect_activations(qa, TensorReader("input", x, 8)),
            collect_activations(fa, TensorReader("input", x, 8)),
        )
    )
    return {k: float(v["xmodel_err"]) for k, v in err.items()}


def mobilefacenet() -> dict[str, Any]:
    """Variant table and per-tensor SQNR for MobileFaceNet (see the module docstring)."""
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization import CalibrationMethod, QuantType
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from facesdk import zoo
    from facesdk.image import to_tensor
    from facesdk_zoo.calibration import calibration_crops
    from facesdk_zoo.quantize import equalize_channels, fuse_prelu, split_prelu
    from facesdk_zoo.tflite_writer import convert_onnx

    card = zoo.get_card("mobilefacenet-sirius")
    sp = card.input
    crops = calibration_crops(card.id, 500)
    x = to_tensor(crops, layout="NCHW", color=sp.color, mean=sp.mean, std=sp.std, dtype=sp.dtype)
    xc, xe = x[:400], x[400:]
    src = str(zoo.fetch(card.id, "onnx"))
    res: dict[str, Any] = {"calibration": len(xc), "evaluation": len(xe), "variants": {}, "sqnr_db": {}}
    with tempfile.TemporaryDirectory(prefix="facesdk-int8-") as t:
        td = Path(t)

        def prep(equalize: bool, split: bool) -> str:
            m = onnx.load(src)
            fuse_prelu(m)
            if equalize:
                equalize_channels(m, xc[:128])
            if split:
                split_prelu(m, CONV0)
            m = version_converter.convert_version(m, 13)
            name = td / f"f{int(equalize)}{int(split)}.onnx"
            onnx.save(m, str(name))
            pre = td / f"p{int(equalize)}{int(split)}.onnx"
            quant_pre_process(str(name), str(pre), skip_symbolic_shape=True)
            return str(pre)

        base, eq, eqs = prep(False, False), prep(True, False), prep(True, True)
        ref = _run(base, xe)
        pct = {"method": CalibrationMethod.Percentile, "extra": {"CalibPercentile": 99.999}}
        head = [CONV0, "MobileFaceNet/MobileFaceNet/SeparableConv2d/BatchNorm/FusedBatchNorm",
                "MobileFaceNet/MobileFaceNet/Conv/BatchNorm/FusedBatchNorm"]  # fmt: skip
        tail = [n.name for n in onnx.load(eq).graph.node if n.op_type == "Conv" and "Logits" in n.name]
        runs: list[tuple[str, str, dict[str, Any]]] = [
            ("ORT min/max (previous recipe)", base, {}),
            ("ORT symmetric int8 activations", base, {"act": QuantType.QInt8,
                                                       "extra": {"ActivationSymmetric": True}}),
            ("ORT percentile 99.999", base, dict(pct)),
            ("ORT entropy", base, {"method": CalibrationMethod.Entropy}),
            ("ORT + equalisation", eq, {}),
            ("ORT + equalisation, percentile 99.999", eq, dict(pct)),
            ("ORT + equalisation, Logits convs fp32", eq, {"exclude": tail}),
            ("ORT + equalisation, first 3 convs fp32", eq, {"exclude": head}),
            ("ORT + equalisation, first conv fp32", eq, {"exclude": [CONV0]}),
            ("ORT + equalisation, split first PReLU (all int8; the card)", eqs, {}),
        ]  # fmt: skip
        for label, model, kw in runs:
            out = str(td / "q.onnx")
            _quant(model, out, xc, **kw)
            c = _cos(_run(out, xe), ref)
            res["variants"][label] = (float(c.mean()), float(c.min()))
            log.info("%s: %.4f / %.4f", label, c.mean(), c.min())
            if label.startswith("ORT min/max") or label.endswith("(all int8; the card)"):
                res["sqnr_db"][label] = _sqnr(model, out, xe[:40], td)
        for label, model, p in [
            ("TFLite full int8, percentile 99.99 (previous recipe)", base, 99.99),
            ("TFLite + equalisation, percentile 99.99", eq, 99.99),
            ("TFLite + equalisation, split first PReLU, percentile 99.99 (the card)", eqs, 99.99),
        ]:
            out = td / "q.tflite"
            convert_onnx(model, out, int8=True, calibration=xc[:200], percentile=p)
            c = _cos(_tflite_run(out, xe), ref)
            res["variants"][label] = (float(c.mean()), float(c.min()))
            log.info("%s: %.4f / %.4f", label, c.mean(), c.min())
    return res


def _tflite_run(path: Path, x: np.ndarray) -> np.ndarray:
    """A .tflite on NCHW float inputs ``x`` in LiteRT: float in/out as they are, int8 in/out through the
    tensors' own (scale, zero point)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=2)
    d, o = it.get_input_details()[0], it.get_output_details()[0]
    it.resize_tensor_input(d["index"], [len(x), x.shape[2], x.shape[3], x.shape[1]])
    it.allocate_tensors()
    xh = x.transpose(0, 2, 3, 1)
    if d["dtype"] == np.int8:
        s, z = d["quantization"]
        it.set_tensor(d["index"], np.clip(np.round(xh / s + z), -128, 127).astype(np.int8))
    else:
        it.set_tensor(d["index"], xh.astype(np.float32).copy())
    it.invoke()
    y = it.get_tensor(o["index"]).astype(np.float32)
    if o["dtype"] == np.int8:
        s, z = o["quantization"]
        y = (y - z) * s
    return y


def _timed(sessions: dict[str, tuple[Any, dict[str, np.ndarray]]], repeats: int) -> dict[str, float]:
    for s, feed in sessions.values():
        s.run(None, feed)
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(repeats):
        for k, (s, feed) in sessions.items():
            t0 = time.perf_counter()
            s.run(None, feed)
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def ort_ceiling(repeats: int = 5) -> dict[str, Any]:
    """Micro-benchmark, dlib variants and per-layer profile (see the module docstring)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantFormat, QuantType
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from facesdk import zoo
    from facesdk.image import to_tensor
    from facesdk_zoo.calibration import calibration_crops

    res: dict[str, Any] = {}
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="facesdk-int8-") as t:
        td = Path(t)
        c, hw, nodes, inits, cur = 256, 28, [], [], "input"
        for i in range(4):
            inits += [
                numpy_helper.from_array(
                    (rng.standard_normal((c, c, 3, 3)) * 0.05).astype(np.float32), f"w{i}"
                ),
                numpy_helper.from_array(np.zeros(c, np.float32), f"b{i}"),
            ]
            nodes += [
                helper.make_node("Conv", [cur, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                helper.make_node("Relu", [f"c{i}"], [f"r{i}"]),
            ]
            cur = f"r{i}"
        g = helper.make_graph(
            nodes,
            "convs",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", c, hw, hw])],
            [helper.make_tensor_value_info(cur, TensorProto.FLOAT, None)],
            inits,
        )
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
        m.ir_version = 8
        micro = str(td / "micro.onnx")
        onnx.save(m, micro)
        xm = rng.standard_normal((32, c, hw, hw)).astype(np.float32)
        variants = {"fp32": micro}
        for tag, kw in [
            ("QDQ U8S8", {}),
            ("QDQ S8S8", {"act": QuantType.QInt8}),
            ("QOperator U8S8", {"fmt": QuantFormat.QOperator}),
        ]:
            variants[tag] = str(td / f"micro_{len(variants)}.onnx")
            _quant(micro, variants[tag], xm[:4], **kw)
        med = _timed({k: (_session(p), {"input": xm}) for k, p in variants.items()}, repeats)
        gops = 32 * 4 * 2 * c * c * 9 * hw * hw / 1e9
        res["micro"] = {
            k: {"ms": 1000 * v, "gop_s": gops / v, "speedup": med["fp32"] / v} for k, v in med.items()
        }

        card = zoo.get_card("dlib-resnet-v1")
        sp = card.input
        x = to_tensor(calibration_crops(card.id, 500)[:32], layout="NCHW", color=sp.color, mean=sp.mean,
                      std=sp.std, dtype=sp.dtype)  # fmt: skip
        src = str(zoo.fetch(card.id, "onnx"))
        card_int8 = str(zoo.fetch(card.id, "onnx", "int8"))
        pre = str(td / "dlib_pre.onnx")
        quant_pre_process(src, pre, skip_symbolic_shape=True)
        dv = {"fp32": src, "QDQ U8S8 (the card's file)": card_int8}
        for tag, kw in [
            ("QOperator U8S8", {"fmt": QuantFormat.QOperator}),
            ("QDQ S8S8 symmetric", {"act": QuantType.QInt8, "extra": {"ActivationSymmetric": True}}),
            ("QDQ U8U8", {"wt": QuantType.QUInt8}),
        ]:
            dv[tag] = str(td / f"dlib_{len(dv)}.onnx")
            _quant(pre, dv[tag], x[:16], **kw)
        sess = {k: (_session(p), {"input": x}) for k, p in dv.items()}
        sess["QDQ U8S8, graph optimisation 'extended'"] = (
            _session(card_int8, level="extended"),
            {"input": x},
        )
        med = _timed(sess, repeats)
        res["dlib"] = {k: {"ms_per_crop": 1000 * v / 32, "speedup": med["fp32"] / v} for k, v in med.items()}
        res["dlib_layers"] = _profile_convs(src, card_int8, x, td)
    return res


def _kernel_events(path: str, x: np.ndarray, prefix: Path, runs: int) -> list[dict[str, Any]]:
    """ONNX Runtime's profiler: the per-node kernel-time events of ``runs`` runs of ``path`` on ``x``
    (CPU, 2 threads)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.enable_profiling = True
    so.profile_file_prefix = str(prefix)
    so.log_severity_level = 3
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    for _ in range(runs):
        s.run(None, {name: x})
    events = json.loads(Path(s.end_profiling()).read_text())
    return [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]


def _profile_convs(fp32: str, int8: str, x: np.ndarray, td: Path) -> list[dict[str, Any]]:
    per: dict[str, collections.Counter] = {}
    for tag, path in (("fp32", fp32), ("int8", int8)):
        cnt: collections.Counter = collections.Counter()
        for e in _kernel_events(path, x, td / f"prof_{tag}", 3):
            if e["args"]["op_name"] in ("Conv", "QLinearConv"):
                shape = next(iter(e["args"]["output_type_shape"][0].values()))
                key = f"{shape[1]}ch {shape[2]}px" if tag == "fp32" else f"{shape[3]}ch {shape[1]}px"
                cnt[key] += e["dur"]
            cnt["(all ops)"] += e["dur"]
        per[tag] = cnt
    return [
        {"layers": k, "fp32_ms": per["fp32"][k] / 3000, "int8_ms": per["int8"][k] / 3000,
         "speedup": per["fp32"][k] / per["int8"][k] if per["int8"][k] else None}
        for k in sorted(per["fp32"])
    ]  # fmt: skip


def _ort_op_times(path: str, x: np.ndarray, td: Path, runs: int = 3) -> dict[str, float]:
    """ONNX Runtime profiler: ms per run by operator type (kernel time)."""
    cnt: collections.Counter = collections.Counter()
    for e in _kernel_events(path, x, td / f"prof_{Path(path).stem}", runs):
        cnt[e["args"]["op_name"]] += e["dur"]
    return {k: v / 1000 / runs for k, v in cnt.most_common()}


def _tflite_ops(path: Path) -> dict[str, int]:
    """Operator counts of a LiteRT interpreter with its default (XNNPACK) delegate applied."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=2)
    it.allocate_tensors()
    return dict(collections.Counter(o["op_name"] for o in it._get_ops_details()))


def _tflite_call(path: Path, x: np.ndarray) -> Any:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=2)
    d = it.get_input_details()[0]
    it.resize_tensor_input(d["index"], [len(x), x.shape[2], x.shape[3], x.shape[1]])
    it.allocate_tensors()
    v = x.transpose(0, 2, 3, 1).copy()
    if d["dtype"] == np.int8:
        sc, z = d["quantization"]
        v = np.clip(np.round(v / sc + z), -128, 127).astype(np.int8)

    def call() -> None:
        it.set_tensor(d["index"], v)
        it.invoke()

    return call


def _timed_calls(calls: dict[str, Any], repeats: int, pause: float = 0.2) -> dict[str, float]:
    """Median seconds per call, the calls interleaved within each repeat; ``pause`` seconds before each
    call let the previous engine's spinning worker threads go idle (see facesdk_bench.precision)."""
    for f in calls.values():
        f()
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(repeats):
        for k, f in calls.items():
            time.sleep(pause)
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def graph_variants(repeats: int = 7) -> dict[str, Any]:
    """Speed and cosine of the recipes' graph changes (see the module docstring)."""
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from facesdk import zoo
    from facesdk.image import to_tensor
    from facesdk_zoo.calibration import calibration_crops
    from facesdk_zoo.quantize import equalize_channels, fold_qdq_pads, fuse_prelu, prelu_convs, split_prelu
    from facesdk_zoo.tflite_writer import convert_onnx

    res: dict[str, Any] = {"batch": 32, "threads": 2, "repeats": repeats}
    with tempfile.TemporaryDirectory(prefix="facesdk-int8-") as t:
        td = Path(t)
        for model_id in ("dlib-resnet-v1", "mobilefacenet-sirius"):
            card = zoo.get_card(model_id)
            sp = card.input
            x = to_tensor(calibration_crops(card.id, 500), layout="NCHW", color=sp.color, mean=sp.mean,
                          std=sp.std, dtype=sp.dtype)  # fmt: skip
            xc, xe, xb = x[:400], x[400:], x[:32]
            src = str(zoo.fetch(card.id, "onnx"))
            ref = _run(src, xe)
            onnx_v: dict[str, str] = {"ORT fp32": src}
            tfl_v: dict[str, Path] = {}
            if model_id == "dlib-resnet-v1":
                pre = str(td / "dlib_pre.onnx")
                quant_pre_process(src, pre, skip_symbolic_shape=True)
                r4 = str(td / "dlib_r4.onnx")
                _quant(pre, r4, xc)
                m = onnx.load(r4)
                folded = fold_qdq_pads(m)
                r5 = str(td / "dlib_r5.onnx")
                onnx.save(m, r5)
                onnx_v["ORT int8, shortcut Pads in float (the card)"] = r4
                onnx_v["ORT int8, Pads on uint8 (uint8_pads = true)"] = r5
                res[f"{model_id} folded pads"] = folded
            else:
                for tag, split_all in (("first PReLU split (previous recipe)", False),
                                       ("every PReLU split (the card)", True)):  # fmt: skip
                    m = onnx.load(src)
                    fuse_prelu(m)
                    equalize_channels(m, xc)
                    names = prelu_convs(m)
                    for n in names if split_all else names[:1]:
                        split_prelu(m, n)
                    fm = td / f"mfn_{int(split_all)}_float.onnx"  # what the TFLite recipe writes from
                    onnx.save(m, str(fm))
                    m = version_converter.convert_version(m, 13)
                    f = td / f"mfn_{int(split_all)}.onnx"
                    onnx.save(m, str(f))
                    pre = td / f"mfn_{int(split_all)}_pre.onnx"
                    quant_pre_process(str(f), str(pre), skip_symbolic_shape=True)
                    q = str(td / f"mfn_{int(split_all)}_q.onnx")
                    _quant(str(pre), q, xc)
                    onnx_v[f"ORT int8, {tag}"] = q
                    tq = td / f"mfn_{int(split_all)}.int8.tflite"
                    convert_onnx(fm, tq, int8=True, calibration=xc, percentile=99.99)
                    tfl_v[f"LiteRT int8, {tag}"] = tq
                tf32 = td / "mfn_fp32.tflite"
                convert_onnx(src, tf32)
                tfl_v = {"LiteRT fp32 (our export)": tf32, **tfl_v}
            rows: dict[str, dict[str, Any]] = {}
            for k, p in onnx_v.items():
                c = _cos(_run(p, xe), ref)
                rows[k] = {"cos_mean": float(c.mean()), "cos_min": float(c.min()),
                           "ort_ms_by_op": _ort_op_times(p, xb, td)}  # fmt: skip
            for k, p in tfl_v.items():
                c = _cos(_tflite_run(p, xe), ref)
                rows[k] = {"cos_mean": float(c.mean()), "cos_min": float(c.min()),
                           "litert_ops": _tflite_ops(p)}  # fmt: skip
            calls = {k: (lambda s=_session(p), xv=xb: s.run(None, {s.get_inputs()[0].name: xv}))
                     for k, p in onnx_v.items()}  # fmt: skip
            calls.update({k: _tflite_call(p, xb) for k, p in tfl_v.items()})
            med = _timed_calls(calls, repeats)
            for k, v in med.items():
                rows[k]["ms_per_crop"] = 1000 * v / len(xb)
                rows[k]["speedup_vs_ort_fp32"] = med["ORT fp32"] / v
                log.info("%s %s: %.2f ms/crop, %.2fx ORT fp32, cos %.4f / %.4f", model_id, k,
                         rows[k]["ms_per_crop"], rows[k]["speedup_vs_ort_fp32"], rows[k]["cos_mean"],
                         rows[k]["cos_min"])  # fmt: skip
            res[model_id] = rows
    return res


def main(argv: list[str] | None = None) -> None:
    """CLI: print the analysis as JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["mobilefacenet", "ort-ceiling", "graph-variants"])
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if a.what == "graph-variants":
        out = graph_variants(a.repeats)
    else:
        out = mobilefacenet() if a.what == "mobilefacenet" else ort_ceiling(a.repeats)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
