"""ONNX stand-ins for the speaker encoder (CAM++) and the speech tokenizer, written with ``onnx.helper``.

They take what upstream's frontend feeds the real ones and answer in the same shapes, so cloning runs
upstream's whole path; they cost next to nothing, so a benchmark's figures are the LLM, flow and vocoder's.
"""

from pathlib import Path

SPEECH_TOKEN_SIZE = 6561  # the speech tokenizer's code book; fixed by upstream's frontend and flow
SPK_EMBED_DIM = 192  # CAM++ embedding width
ONNX_OPSET = 13
ONNX_IR_VERSION = 8  # old enough for any onnxruntime that supports opset 13


def _save(graph, path: Path) -> None:
    import onnx
    from onnx import helper

    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], producer_name="tests.support.models"
    )
    model.ir_version = ONNX_IR_VERSION
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def write_campplus(path: Path, rng) -> None:
    """fbank (B, T, 80) -> per-bin std over T (the frontend subtracts the mean) -> linear -> (B, 192)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weight = rng.standard_normal((80, SPK_EMBED_DIM)).astype(np.float32)
    bias = rng.standard_normal(SPK_EMBED_DIM).astype(np.float32)
    nodes = [
        helper.make_node("Mul", ["input", "input"], ["squared"]),
        helper.make_node("ReduceMean", ["squared"], ["variance"], axes=[1], keepdims=0),
        helper.make_node("Sqrt", ["variance"], ["std"]),
        helper.make_node("MatMul", ["std", "weight"], ["projected"]),
        helper.make_node("Add", ["projected", "bias"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "campplus_stand_in",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", "frames", 80])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", SPK_EMBED_DIM])],
        [numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(bias, "bias")],
    )
    _save(graph, path)


def write_speech_tokenizer(path: Path, rng) -> None:
    """log-mel (1, 128, T) at 100 Hz -> ids (1, ceil(T / 4)) at 25 Hz: every 4th frame, randomly projected.

    ``feats_length`` is accepted, as upstream's frontend passes it, but unused.
    """
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    initializers = [
        numpy_helper.from_array(np.array([0], dtype=np.int64), "starts"),
        numpy_helper.from_array(np.array([np.iinfo(np.int64).max], dtype=np.int64), "ends"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "axes"),
        numpy_helper.from_array(np.array([4], dtype=np.int64), "steps"),
        numpy_helper.from_array(1000.0 * rng.standard_normal((128, 1)).astype(np.float32), "projection"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "last_axis"),
        numpy_helper.from_array(np.array(SPEECH_TOKEN_SIZE, dtype=np.int64), "code_book_size"),
    ]
    nodes = [
        helper.make_node("Slice", ["feats", "starts", "ends", "axes", "steps"], ["frames_25hz"]),
        helper.make_node("Transpose", ["frames_25hz"], ["frames_last"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["frames_last", "projection"], ["projected"]),
        helper.make_node("Squeeze", ["projected", "last_axis"], ["scores"]),
        helper.make_node("Abs", ["scores"], ["magnitudes"]),
        helper.make_node("Cast", ["magnitudes"], ["ints"], to=TensorProto.INT64),
        helper.make_node("Mod", ["ints", "code_book_size"], ["tokens"]),
    ]
    graph = helper.make_graph(
        nodes,
        "speech_tokenizer_stand_in",
        [
            helper.make_tensor_value_info("feats", TensorProto.FLOAT, [1, 128, "frames"]),
            helper.make_tensor_value_info("feats_length", TensorProto.INT32, [1]),
        ],
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, [1, "tokens"])],
        initializers,
    )
    _save(graph, path)
