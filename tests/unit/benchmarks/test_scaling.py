import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from benchmarks.scaling import graph_costs, prompt_flops


def test_graph_costs_count_weight_matmuls_softmax_layers_and_width(tmp_path) -> None:
    w1 = numpy_helper.from_array(np.zeros((4, 8), np.float32), "W1")
    w2 = numpy_helper.from_array(np.zeros((8, 4), np.int8), "W2")
    nodes = [helper.make_node("MatMul", ["X", "W1"], ["H"]),
             helper.make_node("Softmax", ["H"], ["S"]),
             helper.make_node("MatMul", ["S", "S"], ["A"]),  # no weight: attention, not linear
             helper.make_node("MatMulInteger", ["A", "W2"], ["Y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [1, 4])], [w1, w2])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), str(path))
    assert graph_costs(path) == {"linear_flops_per_token": 2 * 32 + 2 * 32,
                                 "attention_layers": 1, "hidden": 4}


def test_prompt_flops_add_attention_quadratic_in_tokens() -> None:
    costs = {"linear_flops_per_token": 1000, "attention_layers": 6, "hidden": 384}
    got = prompt_flops(np.array([1, 10, 100]), costs)
    assert np.allclose(got, [1000 + 6 * 4 * 384, 10_000 + 6 * 4 * 100 * 384,
                             100_000 + 6 * 4 * 10_000 * 384])
