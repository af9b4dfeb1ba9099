#!/usr/bin/env python3
"""OpenCV resize fixtures for fine-tuning's image pipeline (data/finetune_data.h cv_resize).

The reference's segmentation transforms are albumentations, which call cv2.resize on uint8
arrays: RandomResizedCrop(S, scale (0.2, 1), interpolation=3) on the image (3 is
Image.BICUBIC in PIL's numbering, which OpenCV reads as INTER_AREA) and INTER_NEAREST on the
mask; the test transform Resize(S, S) is INTER_LINEAR on the image, nearest on the mask.

Needs Debian's python3-opencv (4.6) and numpy, and the real radiographs in ../shared/data
(jsrt-seg-256, pneumonia-kermany-224). Regenerate:

    apt-get install -y python3-opencv                      # once
    /usr/bin/python3 tests/make_fixtures_finetune_resize.py

Writes tests/fixtures/finetune_resize.safetensors: the uint8 sources (a real radiograph and its
lung mask, a second radiograph, three crops of it as RGB channels), and per case (metadata
"cases": name, source, crop y x h w, output w h, interpolation) cv2.resize's output. The
crops are those RandomResizedCrop hands to cv2.resize: enlarging, shrinking by integer and
non-integer factors, and the mixed case (one axis shrinks, the other grows), which takes
OpenCV's area-weighted linear kernel rather than exact averaging.
"""
import json
import os
import sys

import cv2
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.environ.get("MEDSLIP_SHARED", os.path.join(HERE, "..", "..", "shared"))
OUT = os.path.join(HERE, "fixtures", "finetune_resize.safetensors")
INTERP = {"nearest": cv2.INTER_NEAREST, "linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA}


def read_grey(path):
    img = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if img is None:
        sys.exit(f"cannot read {path} (is ../shared/data there? set MEDSLIP_SHARED)")
    return img


def st_write(path, tensors, metadata):
    header, blobs, off = {"__metadata__": metadata}, [], 0
    for name in sorted(tensors):
        b = np.ascontiguousarray(tensors[name]).astype(np.uint8).tobytes()
        header[name] = {"dtype": "U8", "shape": list(tensors[name].shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h + b"".join(blobs))
    os.replace(path + ".tmp", path)


def main():
    jsrt = os.path.join(SHARED, "data", "jsrt-seg-256")
    kerm = os.path.join(SHARED, "data", "pneumonia-kermany-224")
    img = read_grey(os.path.join(jsrt, "images", "JPCLN001.png"))          # 256x256
    mask = read_grey(os.path.join(jsrt, "masks", "JPCLN001_lungs.png"))     # 0/255
    kimg = read_grey(os.path.join(kerm, "images", "IM-0115-0001.jpeg"))     # 224x224
    rgb = np.stack([kimg[:96, :112], kimg[30:126, 20:132], kimg[60:156, 40:152]], -1)  # three real channels
    sources = {"jsrt": img, "mask": mask, "kermany": kimg, "rgb": rgb}
    # (name, source, crop (y, x, h, w) or None, out_w, out_h, interp)
    cases = [
        ("test_linear_256_to_224", "jsrt", None, 224, 224, "linear"),       # the reference's test Resize(224)
        ("test_linear_256_to_128", "jsrt", None, 128, 128, "linear"),       # the demo's
        ("test_linear_kermany_to_96", "kermany", None, 96, 96, "linear"),
        ("crop_area_enlarge", "jsrt", (17, 30, 100, 131), 160, 160, "area"),
        ("crop_area_mixed", "jsrt", (5, 40, 200, 120), 160, 160, "area"),   # shrink h, enlarge w
        ("crop_area_shrink2", "jsrt", None, 128, 128, "area"),
        ("crop_area_shrink_frac", "jsrt", (9, 11, 201, 233), 128, 128, "area"),
        ("crop_area_shrink3", "jsrt", (7, 9, 240, 240), 80, 80, "area"),      # resizeAreaFast, float rounding
        ("crop_area_shrink4", "jsrt", None, 64, 64, "area"),
        ("crop_area_rgb_shrink2", "rgb", None, 56, 48, "area"),
        ("crop_linear_rgb_half", "rgb", None, 56, 48, "linear"),               # INTER_LINEAR at 2x is area-fast
        ("crop_area_kermany_frac", "kermany", (3, 50, 171, 150), 96, 96, "area"),
        ("crop_area_rgb_mixed", "rgb", None, 150, 64, "area"),
        ("crop_linear_rgb", "rgb", None, 77, 131, "linear"),
        ("mask_nearest_enlarge", "mask", (17, 30, 100, 131), 160, 160, "nearest"),
        ("mask_nearest_shrink", "mask", (9, 11, 201, 233), 128, 128, "nearest"),
        ("mask_nearest_256_to_96", "mask", None, 96, 96, "nearest"),
    ]
    tensors = {f"source.{k}": (v if v.ndim == 3 else v[:, :, None]) for k, v in sources.items()}
    names = []
    for name, src_name, crop, w, h, interp in cases:
        src = sources[src_name]
        y, x, ch, cw = crop if crop else (0, 0, src.shape[0], src.shape[1])
        out = cv2.resize(np.ascontiguousarray(src[y:y + ch, x:x + cw]), (w, h), interpolation=INTERP[interp])
        tensors[f"{name}.out"] = out if out.ndim == 3 else out[:, :, None]
        names.append(f"{name} {src_name} {y} {x} {ch} {cw} {w} {h} {interp}")
        print(f"{name}: {src_name} crop {cw}x{ch} at ({x},{y}) -> {w}x{h} {interp}")
    st_write(OUT, tensors, {"cases": "\n".join(names), "opencv": cv2.__version__,
                            "sources": "jsrt-seg-256 JPCLN001 (image, lungs mask); pneumonia-kermany-224 IM-0115-0001"})
    print(f"wrote {OUT} ({os.path.getsize(OUT) / 1e3:.0f} kB, OpenCV {cv2.__version__})")


if __name__ == "__main__":
    main()
