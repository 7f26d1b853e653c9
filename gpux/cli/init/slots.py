"""The values ``gpux init`` writes into a template's slots from the model's signature, and the
filling itself (the slot syntax: gpux/cli/templates/__init__.py).

``minimal`` and ``full`` list the inputs and outputs by name, dtype and shape in comments; the
pipeline templates cite the signature in a comment, and the image templates (``image-
classification``, ``ocr-detection``) also name the input they feed and the output they read,
and take the layout, channels, size and dtype from the image input, in the keys
``preprocess[].image`` has for them (``to``, ``layout``, ``color``, ``resize``, ``crop``,
``dtype``; docs/gpuxfile.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from gpux.cli.init.signature import ImageTensor, ModelSignature, describe, image_tensor

SLOT = re.compile(r"\{(\w+)(?:=([^}]*))?\}")
IMAGE_TEMPLATES = ("image-classification", "ocr-detection")
# ImageNet's evaluation: resize the shorter side to 256/224 of the crop, then crop the centre.
CLASSIFIER_RESIZE = (256, 224)
DETECTOR_MULTIPLE = 32  # the ocr-detection template's multiple_of, kept when the size allows


def fill(template: str, values: Mapping[str, str]) -> str:
    """``template`` with each ``{slot}`` or ``{slot=default}`` replaced by its value (else its
    default); a slot with neither is a bug in the template, raised as KeyError."""

    def value(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in values:
            return values[name]
        if default is None:
            raise KeyError(f"template slot '{name}' has no value and no default")
        return default

    return SLOT.sub(value, template)


def yaml_scalar(text: str) -> str:
    """``text`` as written when YAML reads it back unchanged, else quoted (colons, '#', ...)."""
    import yaml

    try:
        if yaml.safe_load(f"key: {text}") == {"key": text}:
            return text
    except yaml.YAMLError:
        pass
    return json.dumps(text)  # a JSON string is a valid YAML scalar


def template_slots(template: str, signature: ModelSignature | None) -> dict[str, str]:
    """What the model says for ``template``'s slots; nothing when it could not be read."""
    if signature is None:
        return {}
    if template in ("minimal", "full"):
        return {"tensors": _tensor_listing(signature)}
    slots = {"signature": _signature_comment(signature)}
    if template in IMAGE_TEMPLATES:
        slots.update(_image_slots(template, signature))
    elif template == "text-embedding":
        names = [t.name for t in signature.outputs]
        token_vectors = [t.name for t in signature.outputs if t.shape and len(t.shape) == 3]
        if "last_hidden_state" not in names and len(token_vectors) == 1:
            slots["hidden_states"] = yaml_scalar(token_vectors[0])  # [batch, tokens, features]
    return slots


def _tensor_listing(signature: ModelSignature) -> str:
    entries = [
        (section, f"  - name: {yaml_scalar(t.name)}", describe(t))
        for section, tensors in (("inputs", signature.inputs), ("outputs", signature.outputs))
        for t in tensors
    ]
    width = max([len(line) for _, line, _ in entries], default=0) + 2
    lines = [
        "",  # a blank line after the slot's line
        "",
        f"# This model, as gpux init read it from {signature.source} (dtype and shape in the",
        "# comments; add dtype:, shape: or example: to check or fix them, as above):",
    ]
    for section in ("inputs", "outputs"):
        listed = [(line, what) for name, line, what in entries if name == section]
        if listed:
            lines.append(f"{section}:")
            lines += [f"{line.ljust(width)}# {what}" for line, what in listed]
    return "\n".join(lines)


def _signature_comment(signature: ModelSignature) -> str:
    rows = [("input", t) for t in signature.inputs] + [("output", t) for t in signature.outputs]
    width = max([len(t.name) for _, t in rows], default=0) + 2
    lines = ["", "", f"# The model, as gpux init read it from {signature.source}:"]
    lines += [f"#   {kind:<7}{t.name.ljust(width)}{describe(t)}" for kind, t in rows]
    return "\n".join(lines)


def _image_slots(template: str, signature: ModelSignature) -> dict[str, str]:
    slots: dict[str, str] = {}
    if signature.outputs:  # what postprocess reads by default, named
        slots["output"] = f"\n    from: {yaml_scalar(signature.outputs[0].name)}"
    found = image_tensor(signature)
    if isinstance(found, str):
        slots["layout_note"] = f"  # kept from the template: {found}"
        return slots
    tensor = found.tensor
    slots["to"] = f"\n      to: {yaml_scalar(tensor.name)}"
    if found.layout is None:
        slots["layout_note"] = (
            f"  # kept from the template: gpux init cannot tell which axis of {tensor.name} "
            f"{describe(tensor)} holds the channels (1, 3 or 4); check it"
        )
        return slots
    slots["layout"] = found.layout
    if found.channels == 1:
        slots["color"] = "L"
        if template == "image-classification":  # imagenet's mean and std are per colour
            slots["normalize"] = yaml_scalar("[0,1]")
    if tensor.dtype in ("float16", "uint8"):
        slots["dtype"] = f"\n      dtype: {tensor.dtype}"
        if tensor.dtype == "uint8":
            slots["normalize"] = "none"  # uint8 tensors hold raw pixels
    if found.height is not None and found.width is not None:
        slots.update(_size_slots(template, found))
    return slots


def _size_slots(template: str, found: ImageTensor) -> dict[str, str]:
    height, width = found.height, found.width
    assert height is not None and width is not None
    if template == "image-classification":
        resized, cropped = CLASSIFIER_RESIZE
        # The shorter side covers both crop sides, so the crop never leaves the image.
        return {
            "shorter_side": str(-(-max(height, width) * resized // cropped)),  # ceil, exact
            "crop": f"[{height}, {width}]",
        }
    fits = height % DETECTOR_MULTIPLE == 0 and width % DETECTOR_MULTIPLE == 0
    return {
        "resize": f"size: [{height}, {width}]",
        "multiple_of": str(DETECTOR_MULTIPLE if fits else 1),
    }
