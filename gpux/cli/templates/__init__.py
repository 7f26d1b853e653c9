"""The GPUXfile templates ``gpux init`` writes (``<template>.yaml``).

Slots: ``{name}`` and ``{model}`` are always filled. ``{slot=default}`` holds what the model
itself says, when ``gpux init`` could read it (a local .onnx file): the input and output names,
the image layout and size, the model's signature as comments. Without it (a URL, an hf: source,
a file not there yet) each slot keeps its default, so the template reads as written here. A
slot at the end of a line with an empty default adds whole lines (its value starts with a
newline). Filled by :func:`gpux.cli.init.slots.fill`.
"""
