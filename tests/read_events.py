#!/usr/bin/env python3
"""Reads TensorBoard event files with TensorBoard's own reader and prints what it found as JSON.

    python3 tests/read_events.py RUN_DIR_OR_EVENT_FILE

Used by tests/train/tensorboard.cpp and by hand to check a run (e.g. demo/run). Needs the
`tensorboard` package from PyPI:
    /usr/bin/python3 -m pip install --break-system-packages tensorboard
Exit code 3 (and a one-line reason on stderr) when it is not installed.

Output: {"scalars": {tag: [[step, value], ...]},
         "images": {tag: [[step, width, height, png_hex], ...]},
         "text": {tag: [[step, text], ...]}}
Values are float32 widened to double, exactly as TensorBoard stores them.
"""
import json
import sys

try:
    from tensorboard.backend.event_processing import event_accumulator as ea
except ImportError as e:  # pragma: no cover - depends on the machine
    print(f"tensorboard is not installed ({e}); pip install tensorboard", file=sys.stderr)
    sys.exit(3)


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    # size_guidance 0 = keep every event (the default keeps a sample of images and scalars)
    acc = ea.EventAccumulator(sys.argv[1], size_guidance={ea.SCALARS: 0, ea.IMAGES: 0, ea.TENSORS: 0})
    acc.Reload()
    tags = acc.Tags()
    out = {"scalars": {}, "images": {}, "text": {}}
    for t in tags.get("scalars", []):
        out["scalars"][t] = [[e.step, e.value] for e in acc.Scalars(t)]
    for t in tags.get("images", []):
        out["images"][t] = [[e.step, e.width, e.height, e.encoded_image_string.hex()] for e in acc.Images(t)]
    for t in tags.get("tensors", []):
        meta = acc.SummaryMetadata(t)
        if meta.plugin_data.plugin_name != "text":
            continue
        out["text"][t] = [[e.step, b"".join(e.tensor_proto.string_val).decode("utf-8")] for e in acc.Tensors(t)]
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
