#!/usr/bin/python3
"""Fixtures for tests/engine/io.cpp and tests/weights/torch.cpp (suites "io: " and "weights: ").

Regenerate (Debian python with torch 1.13 and the safetensors package):
    /usr/bin/python3 -m pip install --break-system-packages safetensors   # once
    cd /work/main && /usr/bin/python3 tests/make_fixtures_weights.py

Writes to tests/fixtures/ (all small, ~50 KB together):
  weights_dtypes.pth        torch.save (zip, pickle protocol 2) of a dict of tensors: every dtype,
                            a transposed (non-contiguous) view, a sliced view with a storage offset,
                            two tensors sharing one storage, a 0-d scalar, an empty tensor, a Parameter
  weights_dtypes_p4.pth     the same dict saved with pickle protocol 4 (FRAME, STACK_GLOBAL, MEMOIZE)
  weights_nested.pth        {"model": OrderedDict with "module." keys incl. BatchNorm num_batches_tracked,
                             "optimizer": AdamW state_dict, "epoch": 3, "config": {...}} like train_MeDSLIP.py
  weights_deflated.pth      weights_nested.pth re-zipped with deflate
  weights_module.pth        a plain nn.Module state_dict (Conv2d, BatchNorm2d, Linear)
  weights_hf_bert.bin       a tiny BertModel state dict with Hugging Face names as pytorch_model.bin ...
  weights_hf_bert.safetensors  ... and as model.safetensors (metadata format=pt)
  weights_numpy.pth         a dict holding a numpy array -> must fail: unsupported global
  weights_evil.pth          a pickle whose __reduce__ calls os.system -> must fail, never executed
  weights_legacy.pth        the pre-1.6 non-zip torch.save format -> must fail with a "re-save" hint
  weights_badpickle.pth     a valid zip whose data.pkl has an unknown opcode -> must fail
  weights_truncpickle.pth   a valid zip whose data.pkl is cut in half -> must fail
  weights_badview.pth       a tensor view larger than its storage -> must fail
  weights_expected.safetensors  the expected values (contiguous copies), written by the Python
                            safetensors library: "dtypes.<k>", "nested.model.<k>", "module.<k>", "hf_bert.<k>",
                            plus "io.*" tensors read by tests/engine/io.cpp (interop)
"""
import collections
import io
import os
import sys
import zipfile

import numpy as np
import torch
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
os.makedirs(OUT, exist_ok=True)
torch.manual_seed(0)
FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # zip entry dates, so regenerated files are byte-identical


def path(name):
    return os.path.join(OUT, name)


def dtypes_dict():
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6) * 0.25 - 2.0
    shared = torch.randn(5, 3)
    d = {
        "f32": torch.randn(3, 4),
        "f64": torch.randn(2, 3, dtype=torch.float64),
        "i64": torch.tensor([0, -1, 2**40 + 1, 2**63 - 1, -(2**63)], dtype=torch.int64),
        "i32": torch.tensor([[-7, 0], [7, 2**31 - 1]], dtype=torch.int32),
        "i16": torch.tensor([-300, 300], dtype=torch.int16),
        "i8": torch.tensor([-128, 127], dtype=torch.int8),
        "u8": torch.tensor([0, 128, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "bf16": torch.randn(2, 5).to(torch.bfloat16),
        "f16": torch.randn(3, 2).to(torch.float16),
        "transposed": base.t(),  # (6, 4), strides (1, 6): non-contiguous
        "sliced": base[1:3, 2:5],  # storage offset 8, strides (6, 1)
        "step2": base[:, ::2],  # strides (6, 2)
        "shared_full": shared,
        "shared_row": shared[2],  # same storage as shared_full, offset 6
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
        "param": torch.nn.Parameter(torch.randn(2, 2)),
    }
    return d


def nested_checkpoint():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(3, 2)
            self.bn = torch.nn.BatchNorm1d(2)

        def forward(self, x):
            return self.bn(self.a(x))

    net = torch.nn.DataParallel(Net())  # "module." prefix like the DDP-wrapped training script
    net.train()
    net(torch.randn(4, 3)).sum().backward()  # bumps num_batches_tracked, fills running stats
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0.02)
    opt.step()
    return {
        "model": net.state_dict(),
        "optimizer": opt.state_dict(),
        "lr_scheduler": None,
        "config": {"image_res": 224, "lr": 1e-4, "name": "medslip", "flags": [True, False], "pair": (1, 2.5)},
        "epoch": 3,
    }


def module_state_dict():
    m = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3), torch.nn.Flatten(), torch.nn.Linear(3, 2))
    with torch.no_grad():
        m[1].running_mean.uniform_()
        m[1].num_batches_tracked.fill_(7)
    return m.state_dict()


def hf_bert_state_dict():
    """A tiny BertModel state dict with Hugging Face names, as save_pretrained writes it (the Debian
    torch 1.13 is too old for current transformers, so the layout is reproduced by hand)."""
    H, I, V, P = 8, 16, 30, 16
    g = torch.Generator().manual_seed(1)
    sd = collections.OrderedDict()

    def lin(name, o, i):
        sd[name + ".weight"] = torch.randn(o, i, generator=g)
        sd[name + ".bias"] = torch.randn(o, generator=g)

    def ln(name):
        sd[name + ".weight"] = 1 + 0.1 * torch.randn(H, generator=g)
        sd[name + ".bias"] = 0.1 * torch.randn(H, generator=g)

    sd["embeddings.position_ids"] = torch.arange(P).unsqueeze(0)  # I64 buffer older transformers saved
    sd["embeddings.word_embeddings.weight"] = torch.randn(V, H, generator=g)
    sd["embeddings.position_embeddings.weight"] = torch.randn(P, H, generator=g)
    sd["embeddings.token_type_embeddings.weight"] = torch.randn(2, H, generator=g)
    ln("embeddings.LayerNorm")
    pre = "encoder.layer.0."
    for n in ("query", "key", "value"):
        lin(pre + "attention.self." + n, H, H)
    lin(pre + "attention.output.dense", H, H)
    ln(pre + "attention.output.LayerNorm")
    lin(pre + "intermediate.dense", I, H)
    lin(pre + "output.dense", H, I)
    ln(pre + "output.LayerNorm")
    lin("pooler.dense", H, H)
    return sd


class Evil:
    def __reduce__(self):
        return (os.system, ("echo medslip-fixture-pwned > /tmp/medslip_pwned",))


def patched_zip(p, patch):
    """A real torch.save zip of {"x": ones(2)} whose data.pkl is rewritten by patch(bytes)."""
    buf = io.BytesIO()
    torch.save({"x": torch.ones(2)}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    with zipfile.ZipFile(p, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("data.pkl"):
                data = patch(data)
            dst.writestr(zipfile.ZipInfo(info.filename, date_time=FIXED_TIME), data)


def oversized_view(pkl):
    # the size tuple (2,) -> (9,): a view beyond its 2-element storage
    assert pkl.count(b"K\x02\x85") == 1
    return pkl.replace(b"K\x02\x85", b"K\x09\x85")


def main():
    d = dtypes_dict()
    torch.save(d, path("weights_dtypes.pth"))
    torch.save(d, path("weights_dtypes_p4.pth"), pickle_protocol=4)
    nested = nested_checkpoint()
    torch.save(nested, path("weights_nested.pth"))
    msd = module_state_dict()
    torch.save(msd, path("weights_module.pth"))
    hf = hf_bert_state_dict()
    torch.save(hf, path("weights_hf_bert.bin"))  # what save_pretrained(safe_serialization=False) does
    save_file(hf, path("weights_hf_bert.safetensors"), metadata={"format": "pt"})
    torch.save({"x": np.arange(3)}, path("weights_numpy.pth"))
    torch.save({"x": Evil()}, path("weights_evil.pth"))
    torch.save({"x": torch.ones(2)}, path("weights_legacy.pth"), _use_new_zipfile_serialization=False)
    patched_zip(path("weights_badpickle.pth"), lambda d: d[:2] + b"\xff" + d[2:])  # opcode outside our subset
    patched_zip(path("weights_truncpickle.pth"), lambda d: d[: len(d) // 2])
    # torch never compresses, but a re-zipped checkpoint may be deflated
    with zipfile.ZipFile(path("weights_nested.pth")) as src, \
            zipfile.ZipFile(path("weights_deflated.pth"), "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(zipfile.ZipInfo(info.filename, date_time=FIXED_TIME), src.read(info.filename),
                         compress_type=zipfile.ZIP_DEFLATED)
    patched_zip(path("weights_badview.pth"), oversized_view)

    exp = {}
    for k, v in d.items():
        exp["dtypes." + k] = v.detach().contiguous().clone()
    for k, v in nested["model"].items():
        exp["nested.model." + k] = v.contiguous().clone()
    for k, v in msd.items():
        exp["module." + k] = v.contiguous().clone()
    for k, v in hf.items():
        exp["hf_bert." + k] = v.contiguous().clone()
    # interop tensors for tests/engine/io.cpp (values restated there)
    exp["io.f32_ramp"] = torch.arange(12, dtype=torch.float32).reshape(3, 4) * 0.5 - 1.0
    exp["io.i64_big"] = torch.tensor([-3, 2**53 + 1, 2**63 - 1], dtype=torch.int64)
    exp["io.f64"] = torch.tensor([0.1, -2.5, 1e-310], dtype=torch.float64)
    exp["io.bf16"] = torch.tensor([1.0, -2.0, 0.5, 256.0], dtype=torch.bfloat16)
    exp["io.f16"] = torch.tensor([1.0, -2.0, 0.5, 65504.0], dtype=torch.float16)
    exp["io.i32"] = torch.tensor([-7, 0, 7], dtype=torch.int32)
    exp["io.u8"] = torch.tensor([0, 128, 255], dtype=torch.uint8)
    exp["io.bool"] = torch.tensor([True, False, True])
    save_file(exp, path("weights_expected.safetensors"), metadata={"generator": "tests/make_fixtures_weights.py"})

    total = 0
    for name in sorted(os.listdir(OUT)):
        if name.startswith("weights_"):
            total += os.path.getsize(path(name))
            print(f"{name:32s} {os.path.getsize(path(name)):8d} bytes")
    print(f"total {total} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
