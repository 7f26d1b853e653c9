"""Execution: the Backend contract, backend registry, ONNX Runtime backend, input checking."""
