"""CTC prefix beam search for a PaddleOCR recogniser, as a GPUX handler.

Greedy decoding (the `ctc` step) reads the single most probable path through the model's
per-step probabilities. Prefix beam search keeps the BEAM most probable texts, summing the
probability of every path that spells each one (Graves 2006; Hannun et al. 2014), so a text
spread over several paths can win over the best single path.

GPUX calls postprocess() with the whole batch: outputs[name] is [items, steps, classes].
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

BEAM = 10
PRUNE = 1e-3  # classes below this probability at a step are not tried (speed, not accuracy)


def postprocess(outputs, context):
    classes = _classes(context.config)
    (probabilities,) = outputs.values()
    return [_read(line, classes) for line in probabilities]


def _read(probabilities, classes):
    """Best text and its probability for one line: [steps, classes] -> {text, probability}."""
    beams = {(): (1.0, 0.0)}  # prefix -> (P(ends in blank), P(ends in its last class))
    for step in probabilities:
        candidates = np.flatnonzero(step >= PRUNE)
        grown = defaultdict(lambda: [0.0, 0.0])
        for prefix, (blank, last) in beams.items():
            total = blank + last
            for c in candidates:
                p = float(step[c])
                if c == 0:  # the blank: the prefix stays
                    grown[prefix][0] += total * p
                elif prefix and prefix[-1] == c:
                    grown[prefix][1] += last * p  # the same class again: collapsed
                    grown[prefix + (c,)][1] += blank * p  # after a blank: a second one
                else:
                    grown[prefix + (c,)][1] += total * p
        best = sorted(grown.items(), key=lambda kv: -(kv[1][0] + kv[1][1]))[:BEAM]
        beams = {prefix: (b, n) for prefix, (b, n) in best}
    prefix, (blank, last) = max(beams.items(), key=lambda kv: kv[1][0] + kv[1][1])
    return {"beam": "".join(classes[c] for c in prefix), "beam_probability": blank + last}


def _classes(config):
    """PaddleOCR's classes: the blank, the charset the build read from the model's metadata
    (kept in the stored GPUXfile's ctc step), and a space last."""
    for result in config["postprocess"]:
        for step in result["steps"]:
            if isinstance(step, dict) and "ctc" in step:
                return ["", *step["ctc"]["charset"], " "]
    raise ValueError(
        "beam_search.py needs the greedy ctc step in the GPUXfile: it reads its charset"
    )
