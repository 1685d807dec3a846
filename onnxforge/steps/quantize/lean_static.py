"""Static int8 (min-max calibration) with the weights left in their files: what ORT's
``quantize_static`` writes, without holding the model several times over.

``quantize_static`` loads the model through shape inference, and its calibrator loads it
again, saves an augmented copy and opens a session on it while both copies stay in
memory: BERT-base (418 MiB of weights) peaked at 5.7x. Here the model is loaded with its
weights by reference (fileio's ``weights_by_reference``): ORT's own MinMaxCalibrater
augments that graph and runs it in a session that reads the weights from the model's
folder, and ORT's own QDQ (or QOperator) quantizer then reads each weight it quantizes
from there (``numpy_helper.to_array`` relative to the current directory), so the output
is ORT's. Min-max only: the histogram methods keep ORT's ``quantize_static``.
"""

from __future__ import annotations

from pathlib import Path

from onnxforge.backends.onnx.inspection import inspect_model
from onnxforge.core.fileio import load_onnx, working_dir
from onnxforge.steps.artifacts import save_scratch_ir
from onnxforge.steps.quantize import lean_quant

LEAN_METHODS = ("minmax",)


def decide(src, method: str, notes: list) -> bool:
    """Whether static quantization takes this path: min-max calibration of a model of
    lean_quant.LEAN_MIN_BYTES of weights or more. The reason goes to ``notes``."""
    if inspect_model(src, runtime=False).parameter_bytes < lean_quant.LEAN_MIN_BYTES:
        return False
    if method not in LEAN_METHODS:
        notes.append(f"large model calibrated by ORT's quantize_static ({method} calibration), which holds it in "
                     "memory several times")
        return False
    notes.append("large model: calibrated and quantized with its weights read from their files (ORT's calibrator "
                 "and quantizer, the same output, without holding the model); ORT's pre-processing skipped")
    return True


def _model(src: Path):
    """As ORT's load_model_with_shape_infer, on the graph with its weights by reference."""
    import onnx
    from onnxruntime.quantization.quant_utils import add_infer_metadata

    model = onnx.shape_inference.infer_shapes(load_onnx(src, weights_by_reference=True))
    add_infer_metadata(model)
    return model


def _calibrate(src: Path, tmp: Path, reader, op_types: list, providers: list | None):
    """ORT's MinMaxCalibrater (create_calibrator's defaults), its model and session the
    graph's with weights read from ``src``'s folder."""
    import onnxruntime as ort
    from onnxruntime.quantization.calibrate import MinMaxCalibrater

    class ByReference(MinMaxCalibrater):
        def __init__(self):  # CalibraterBase loads the model from a path, weights and all
            self.model = _model(src)
            self.op_types_to_calibrate, self.augmented_model_path = op_types, str(tmp / "augmented.onnx")
            self.symmetric = self.use_external_data_format = self.per_channel = False
            self.augment_model = self.infer_session = None
            self.execution_providers = providers or ["CPUExecutionProvider"]
            self.intermediate_outputs, self.calibrate_tensors_range = [], None
            self.num_model_outputs = len(self.model.graph.output)
            self.model_original_outputs = {o.name for o in self.model.graph.output}
            self.moving_average, self.averaging_constant, self.max_intermediate_outputs = False, 0.01, None

        def create_inference_session(self):
            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            so.add_session_config_entry("session.model_external_initializers_file_folder_path", str(src.parent))
            self.infer_session = ort.InferenceSession(self.model.SerializeToString(), so,
                                                      providers=self.execution_providers)

    calibrator = ByReference()
    calibrator.augment_graph()  # also writes the (small) augmented graph to tmp, as ORT does
    calibrator.create_inference_session()
    calibrator.collect_data(reader)
    ranges = calibrator.compute_data()
    del calibrator
    return ranges


def quantize_static_lean(src, dst, reader, *, tmp: Path, quant_format, activation_type, weight_type,
                         per_channel: bool, reduce_range: bool, op_types_to_quantize, nodes_to_exclude,
                         extra_options: dict, calibration_providers=None, **_) -> None:
    """``quantize_static(src, dst, reader, ...)`` with calibrate_method MinMax, written to
    ``dst`` (its weights in ``dst.name + '.data'``). Arguments as quantize_static's."""
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization.onnx_quantizer import ONNXQuantizer
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
    from onnxruntime.quantization.quant_utils import QuantizationMode
    from onnxruntime.quantization.quantize import check_static_quant_arguments, update_opset_version
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    src, dst = Path(src).resolve(), Path(dst)
    extra_options = dict(extra_options or {})
    op_types = list(op_types_to_quantize or []) or list(set(QLinearOpsRegistry) | set(QDQRegistry))
    ranges = _calibrate(src, tmp, reader, op_types, calibration_providers)
    model = update_opset_version(_model(src), weight_type, activation_type,
                                 tensor_quant_overrides=extra_options.get("TensorQuantOverrides"),
                                 block_size=extra_options.get("BlockSize", 0))
    check_static_quant_arguments(quant_format, activation_type, weight_type)
    common = (ranges, [], list(nodes_to_exclude or []), op_types, extra_options)
    if quant_format is QuantFormat.QOperator:
        q = ONNXQuantizer(model, per_channel, reduce_range, QuantizationMode.QLinearOps, True, weight_type,
                          activation_type, *common)
    else:
        q = QDQQuantizer(model, per_channel, reduce_range, weight_type, activation_type, *common)
    with working_dir(src.parent):  # the quantizer reads each weight it quantizes from there (it writes nothing)
        q.quantize_model()
    q.model.topological_sort()  # as save_model_to_file
    save_scratch_ir(q.model.model, dst, src.parent)  # fp32 weights left are copied from src's files one at a time
