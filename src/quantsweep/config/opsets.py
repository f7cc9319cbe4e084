"""The ONNX opsets ``framework_args.opset`` may name: those the installed torch exporter writes.

Apart because finding that range is the one check that reads an installed package, and
it must do so without importing torch (seconds at start-up, before any config error
could be shown): the exporter's constants are read from their file.
"""

from __future__ import annotations

from quantsweep.config.base import invalid


def exporter_opset_range() -> tuple[int, int]:
    """The opsets torch's ONNX exporter can write, read without importing torch itself."""
    from importlib.util import find_spec

    # torch.onnx._constants is a tiny module; importing it through the torch package
    # would cost seconds, so it is loaded from its file directly.
    spec = find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return (7, 20)
    import importlib.util
    import os

    path = os.path.join(next(iter(spec.submodule_search_locations)), "onnx", "_constants.py")
    if not os.path.exists(path):
        return (7, 20)
    module_spec = importlib.util.spec_from_file_location("_quantsweep_torch_onnx_constants", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    low = int(getattr(module, "ONNX_MIN_OPSET", 7))
    high = int(getattr(module, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", getattr(module, "ONNX_MAX_OPSET", 20)))
    return (low, high)


def check_opset(opset: int) -> None:
    low, high = exporter_opset_range()
    if not low <= opset <= high:
        raise invalid(
            "framework_args.opset",
            opset,
            f"the installed torch ONNX exporter writes opsets {low} to {high}.",
        )
