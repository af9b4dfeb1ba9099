#!/usr/bin/python3
"""Fixtures for tests/data/datasets.cpp (suite "data: ...").

Regenerate (Debian python: numpy 1.24, torch 1.13):
    cd /work/main && /usr/bin/python3 tests/make_fixtures_data.py

Writes tests/fixtures/data/ (about 160 kB):
  npy_v1_f8.npy ... npy_v3_f8.npy  np.save / np.lib.format.write_array of small arrays in
                                   the dtypes and header versions the reader must accept,
                                   each holding arange(24).reshape(2,3,4) (scaled per dtype,
                                   see VALUES below); npy_fortran.npy is Fortran-ordered (the
                                   reader must refuse it), npy_scalar.npy is 0-d.
  seg_refs.npy                     uint8 [3,224,224]: the RSNA seg map of spec §C.7 computed
                                   as dataset_RSNA.py does (1024x1024 float64 zeros, each box
                                   [int(y):int(y)+int(h), int(x):int(x)+int(w)] = 1, then
                                   torch nearest interpolation to 224x224) for SEG_CASES.
"""
import os

import numpy as np
import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "data")

# The RSNA box strings of the seg-map cases (also listed in tests/data/datasets.cpp).
SEG_CASES = [
    "197.5;291.9;289.2;454.7",
    "197.0;291.0;289.0;454.0|683.0;265.0;247.0;524.0",
    "0.9;1000.2;30.7;40.9|1020.5;3.3;10.0;10.0",
]


def seg_map(boxes):
    m = np.zeros((1024, 1024), dtype=np.float64)
    for b in boxes.split("|"):
        x, y, w, h = (float(v) for v in b.split(";"))
        m[int(y):int(y) + int(h), int(x):int(x) + int(w)] = 1
    t = torch.from_numpy(m)[None, None]  # ToTensor of a 2-D float64 array: [1,H,W], unscaled
    return F.interpolate(t, size=(224, 224), mode="nearest")[0, 0].numpy()


def main():
    os.makedirs(OUT, exist_ok=True)
    base = np.arange(24).reshape(2, 3, 4)
    arrays = {
        "npy_v1_f8.npy": (base * 0.5 - 3).astype("<f8"),
        "npy_v1_f4.npy": (base * 0.25).astype("<f4"),
        "npy_v1_i8.npy": (base - 10).astype("<i8"),
        "npy_v1_u1.npy": (base * 10).astype("u1"),
        "npy_v1_be_f8.npy": (base * 0.5 - 3).astype(">f8"),
        "npy_v1_bool.npy": (base % 3 == 0),
        "npy_v1_i4.npy": (base - 10).astype("<i4"),
    }
    for name, a in arrays.items():
        with open(os.path.join(OUT, name), "wb") as f:
            np.lib.format.write_array(f, a, version=(1, 0))
    for ver in [(2, 0), (3, 0)]:
        with open(os.path.join(OUT, "npy_v%d_f8.npy" % ver[0]), "wb") as f:
            np.lib.format.write_array(f, (base * 0.5 - 3).astype("<f8"), version=ver)
    with open(os.path.join(OUT, "npy_fortran.npy"), "wb") as f:
        np.lib.format.write_array(f, np.asfortranarray((base * 0.5 - 3).astype("<f8")), version=(1, 0))
    np.save(os.path.join(OUT, "npy_scalar.npy"), np.float64(2.5))
    refs = np.stack([seg_map(c) for c in SEG_CASES]).astype(np.uint8)
    np.save(os.path.join(OUT, "seg_refs.npy"), refs)
    print("wrote", OUT, "seg positives:", refs.reshape(len(SEG_CASES), -1).sum(1).tolist())


if __name__ == "__main__":
    main()
