#!/usr/bin/env python3
"""Fine-tuning parity fixtures and the strict-load check, from the OFFICIAL MeDSLIP code.

Regenerate (needs Debian's python3 with torch + torchvision, a built build/medslip, and a git
clone of github.com/Shef-AIRE/MeDSLIP — a bare clone is enough):

    /usr/bin/python3 tests/make_fixtures_finetune.py --repo PATH_TO_CLONE
    (or MEDSLIP_OFFICIAL_REPO=PATH make fixtures)

What it does (nothing of the official code is committed; it is read with `git show` into a
temp dir and imported; `einops` is stubbed when absent):
1. Writes a tiny image set (12 grey 64x64 PNGs with disc masks, a csv with a split column).
2. Per case, `medslip finetune --export-init` writes our initial weights; the official model
   (Sample_Finetuning_SIIMACR/I1_classification/models/resnet.py ModelRes_ft, or
   I2_segmentation/models/resunet.py ModelResUNet_ft) loads them with strict=True, runs one
   forward in train mode (BatchNorm batch statistics; the U-Net's Dropout(0.2) set to p=0 on
   both sides) on an input both sides compute from a formula (x[i] = 1.5 sin(0.0137 i + 0.3 b)),
   takes the official loss (nn.BCEWithLogitsLoss, or utils.py DiceBCELoss on a disc mask) and
   backpropagates it. Stored: the official key list, logits, loss, and per parameter the
   gradient norm plus 48 evenly spaced entries (full gradients of a ResNet-50 U-Net: 160 MB).
   Cases: classify ResNet-50 128 px (use_base=True); classify ResNet-18 224 px use_base=False
   (the official forward hard-codes a 14x14 grid); segment ResNet-50 64 px (the reference
   exactly); segment ResNet-18 64 px, for which the official file is patched in one place —
   `resnet18` added to its resnet_dict and its channel table `self.d` set from ResNet-18's
   widths (bridge 256, up 128/64/32/16) — since the reference only builds ResNet-50.
   Ambiguous decisions (why the gradients are judged against float64 "with ours' decisions"): a
   ReLU input within float32 rounding of zero may go either way in any float32 run, and so may
   a max-pool window whose two largest inputs are that close. A run that takes one the other
   way routes (or stops) one upstream gradient entry, and everything below that layer moves:
   measured, torch float32 takes 29 ReLU and 1 max-pool decisions otherwise than float64 on the
   ResNet-50 classifier at 128 px (its trunk gradients then lie up to 6.4e-2 from float64),
   12 and 1 on the ResNet-50 U-Net at 64 px (5.6e-2). Larger inputs do not help: the float32
   error of a ReLU input grows with depth (relative to its channel's rms: ~5e-6 in the stem,
   ~1e-3 in layer4 of ResNet-50), so more pixels mean more such decisions, each moving less:
   the classifier at 224 px x 2 took 89 (4.1e-2), at 256 px x 4 337 (3.6e-2). With torch
   float32's own ReLU decisions put into the float64 run, the classifier's gradients agree to
   3e-4; the U-Net's conv1 stayed 3.5e-2 off until the one max-pool window (two inputs 1e-6 of
   the rms apart) was found. So per case the
   fixture stores every such site: per ReLU (module name and call number), the inputs whose
   float64 value is within BAND x (torch float32's largest error at that ReLU, relative to the
   channel's rms) of zero, with that value and the rms; for the stem's max-pool, the windows
   whose float64 maximum is within the same band of the runner-up, with both indices and values.
   The C++ test probes ours' ReLUs and max-pool, makes each decision ours took the other way at
   these sites as float64 took it, checks that ours' inputs there are well inside the band (so
   no decision outside it can differ), and holds every gradient to its tier against float64.
3. metric.py's dice() and mIoU() on 7 predicted/true mask pairs (empty truths with empty and
   non-empty predictions, partial overlaps, soft truth values): inputs and outputs.
4. The strict-load check: `medslip finetune` (2 steps, one epoch, validation, best checkpoint)
   for classify ResNet-18 and segment ResNet-50 on the tiny set, `medslip finetune-eval` on its
   csv, then checkpoint_best.safetensors loads into the official model with strict=True and
   the official model's sigmoid outputs on the same images (64 px PNGs: every resize is the
   identity) are compared with ours (predictions.csv: scores; per-image Dice and IoU through
   metric.py). Fails (exit 1) above 1e-4.
Writes tests/fixtures/finetune_ref.safetensors.
"""
import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import types

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FT = "Sample_Finetuning_SIIMACR"
GRAD_SAMPLES = 48
FIXTURE_VERSION = "3"
# Decisions a float32 run may take the other way (docstring): per ReLU, the inputs within BAND x
# torch float32's largest error at that ReLU (relative to the channel's rms; at least BAND_FLOOR)
# of zero in the float64 run; the same for the stem max-pool's two largest window inputs.
BAND = 16.0
BAND_FLOOR = 1e-6

CASES = [
    # name, task, arch, use_base, size
    ("cls_r50", "classify", "resnet50", True, 128),
    ("cls_r18_path", "classify", "resnet18", False, 224),
    ("seg_r50", "segment", "resnet50", True, 64),
    ("seg_r18", "segment", "resnet18", True, 64),
]


def git(repo, *args):
    return subprocess.run(["git", "--git-dir", repo, *args] if not os.path.isdir(os.path.join(repo, ".git")) else
                          ["git", "-C", repo, *args], check=True, capture_output=True).stdout


def rearrange(t, pattern, **sizes):
    """Minimal einops.rearrange for the patterns resnet.py uses."""
    lhs, rhs = [s.strip() for s in pattern.split("->")]
    if lhs == "b d n1 n2" and rhs == "b (n1 n2) d":
        b, d, n1, n2 = t.shape
        return t.reshape(b, d, n1 * n2).permute(0, 2, 1)
    if lhs == "b n d" and rhs == "(b n) d":
        return t.reshape(-1, t.shape[-1])
    if lhs == "(b n) d" and rhs == "b n d":
        return t.reshape(sizes["b"], -1, t.shape[-1])
    if lhs == "b (n1 n2) d" and rhs == "b d n1 n2":
        b, n, d = t.shape
        return t.permute(0, 2, 1).reshape(b, d, sizes["n1"], sizes["n2"])
    raise ValueError(pattern)


def load_official(repo):
    try:
        import einops  # noqa: F401
    except ImportError:
        m = types.ModuleType("einops")
        m.rearrange = rearrange
        sys.modules["einops"] = m
    tmp = tempfile.mkdtemp(prefix="medslip_official_ft_")
    res = git(repo, "show", f"HEAD:{FT}/I1_classification/models/resnet.py").decode()
    unet = git(repo, "show", f"HEAD:{FT}/I2_segmentation/models/resunet.py").decode()
    utils = git(repo, "show", f"HEAD:{FT}/I2_segmentation/utils.py").decode()
    metric = git(repo, "show", f"HEAD:{FT}/I2_segmentation/metric.py").decode()
    # The ResNet-18 U-Net (not in the reference): resnet18 in the dict, widths from ResNet-18.
    unet18 = unet.replace('"resnet50": models.resnet50(weights=imagenet_pretrain),',
                          '"resnet50": models.resnet50(weights=imagenet_pretrain),\n'
                          '            "resnet18": models.resnet18(weights=imagenet_pretrain),')
    unet18 = re.sub(r"(\n(\s*)self\.downscale_factors = )",
                    r"\n\2if res_base_model == 'resnet18':\n\2    self.d.update({'conv2': 64, 'conv3': 128, 'conv4': 256,"
                    r" 'bridge': 256, 'up1': 128, 'up2': 64, 'up3': 32, 'up4': 16})\1", unet18, count=1)
    assert unet18.count("'up4': 16") == 1 and '"resnet18"' in unet18, "the ResNet-18 patch did not apply"
    pkg = os.path.join(tmp, "medslip_official_ft")
    os.makedirs(pkg)
    for name, text in [("__init__.py", ""), ("resnet.py", res), ("resunet.py", unet), ("resunet18.py", unet18),
                       ("utils.py", utils), ("metric.py", metric)]:
        with open(os.path.join(pkg, name), "w") as f:
            f.write(text)
    sys.path.insert(0, tmp)
    import importlib
    return {n: importlib.import_module("medslip_official_ft." + n) for n in ["resnet", "resunet", "resunet18", "utils", "metric"]}


def formula_input(b, size):
    """x[b, i] = 1.5 sin(0.0137 i + 0.3 b) in float64, rounded to float32 (the C++ test's formula)."""
    n = 3 * size * size
    i = np.arange(n, dtype=np.float64)
    return np.stack([(1.5 * np.sin(0.0137 * i + 0.3 * k)).astype(np.float32) for k in range(b)]).reshape(b, 3, size, size)


def formula_mask(b, size):
    """A disc per image: centre (size/2 + 4k, size/2 - 3k), radius size/4 (the C++ test's formula)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    out = []
    for k in range(b):
        cy, cx, r = size / 2 + 4 * k, size / 2 - 3 * k, size / 4
        out.append(((x - cx) ** 2 + (y - cy) ** 2 < r * r).astype(np.float32))
    return np.stack(out)[:, None]


class RecordingReLU(torch.nn.Module):
    """nn.ReLU that records its input per call (key: module name, call number)."""
    record = None  # dict (name, call) -> input, or None

    def __init__(self, name):
        super().__init__()
        self.name, self.calls = name, 0

    def forward(self, x):
        if RecordingReLU.record is not None:
            RecordingReLU.record[(self.name, self.calls)] = x.detach().clone()
        self.calls += 1
        return torch.relu(x)


class RecordingMaxPool(torch.nn.Module):
    """The stem's nn.MaxPool2d(3, 2, 1), recording its input and routing (plane-local argmax)."""
    record = None  # dict name -> (input, indices), or None

    def __init__(self, name):
        super().__init__()
        self.name = name

    def forward(self, x):
        y, idx = torch.nn.functional.max_pool2d(x, 3, 2, 1, return_indices=True)
        if RecordingMaxPool.record is not None:
            RecordingMaxPool.record[self.name] = (x.detach().clone(), idx.clone())
        return y


def use_recording_relus(model):
    """Every nn.ReLU module becomes a RecordingReLU (the pathology branch's F.relu: see run_case)."""
    for mname, mod in list(model.named_modules()):
        for cname, child in list(mod.named_children()):
            if isinstance(child, torch.nn.ReLU):
                setattr(mod, cname, RecordingReLU(f"{mname}.{cname}".lstrip(".")))
    assert isinstance(model.res_features[3], torch.nn.MaxPool2d), "res_features[3] is not the stem's max-pool"
    model.res_features[3] = RecordingMaxPool("res_features.3")
    return model


def build_official(mods, task, arch, use_base):
    if task == "classify":
        return mods["resnet"].ModelRes_ft(arch, 1, imagenet_pretrain=False, use_base=use_base)
    mod = mods["resunet18"] if arch == "resnet18" else mods["resunet"]
    return mod.ModelResUNet_ft(arch, 1, imagenet_pretrain=None)


NP = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "U8": np.uint8}


def st_read(path):
    """safetensors -> {name: numpy array} (the format by hand: no safetensors package needed)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out[k] = np.frombuffer(data[a:b], dtype=NP[v["dtype"]]).reshape(v["shape"])
    return out


def st_write(path, tensors, metadata):
    """Sorted names and metadata, 8-byte aligned data: byte-reproducible."""
    dt = {np.dtype(np.float32): "F32", np.dtype(np.float64): "F64", np.dtype(np.int64): "I64"}
    header, blobs, off = {"__metadata__": dict(sorted(metadata.items()))}, [], 0
    for name in sorted(tensors):
        t = np.ascontiguousarray(tensors[name])
        b = t.astype(t.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dt[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h + b"".join(blobs))
    os.replace(path + ".tmp", path)


def load_ours_into(model, path, strict=True):
    sd = {k: torch.from_numpy(v.copy()) for k, v in st_read(path).items()}
    model.load_state_dict(sd, strict=strict)


def write_tiny_set(root):
    """12 grey 64x64 PNGs: a soft vertical gradient plus a bright disc on half of them; masks
    are the discs (0/255); split: 8 train, 4 test; label = disc present."""
    from PIL import Image
    os.makedirs(os.path.join(root, "images"))
    os.makedirs(os.path.join(root, "masks"))
    rows = []
    rng = np.random.RandomState(3)
    for k in range(12):
        y, x = np.mgrid[0:64, 0:64].astype(np.float64)
        img = 60 + 80 * y / 63 + rng.uniform(0, 20, (64, 64))
        has = k % 2 == 0
        mask = np.zeros((64, 64), np.uint8)
        if has:
            cy, cx, r = 20 + 2 * k, 24 + k, 9 + k % 3
            inside = (x - cx) ** 2 + (y - cy) ** 2 < r * r
            img[inside] += 90
            mask[inside] = 255
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "L").save(os.path.join(root, "images", f"im{k:02d}.png"))
        Image.fromarray(mask, "L").save(os.path.join(root, "masks", f"im{k:02d}.png"))
        rows.append([f"images/im{k:02d}.png", f"masks/im{k:02d}.png", int(has), "train" if k < 8 else "test"])
    with open(os.path.join(root, "tiny.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_path", "mask_path", "finding", "split"])
        w.writerows(rows)


def config_text(root, task, arch, use_base, size, epochs=1, steps=2):
    label = "label_columns: [finding]\n" if task == "classify" else "mask_column: mask_path\n"
    return (f"task: {task}\nres_base_model: {arch}\nuse_base: {str(use_base).lower()}\nimage_res: {size}\n"
            f"train_file: {root}/tiny.csv\nsplit_column: split\nvalid_fraction: 0.25\n{label}"
            f"batch_size: 2\ntest_batch_size: 4\nnum_workers: 0\nmax_steps_per_epoch: {steps}\nseed: 7\n"
            f"optimizer: {{opt: adamW, lr: 1e-4, weight_decay: 0.02}}\n"
            f"schedular: {{sched: cosine, epochs: {epochs}, min_lr: 1e-4, warmup_lr: 1e-4, warmup_epochs: 0}}\n")


def grad_samples(out, name, g):
    flat = g.detach().reshape(-1).double()
    n = flat.numel()
    idx = np.unique(np.linspace(0, n - 1, min(GRAD_SAMPLES, n)).round().astype(np.int64))
    out[f"{name}.gradnorm"] = np.array([flat.norm().item()], np.float64)
    out[f"{name}.gradidx"] = idx
    out[f"{name}.gradval"] = flat[torch.from_numpy(idx)].float().numpy()


def run_case(mods, a, work, name, task, arch, use_base, size, out, meta):
    cfg = os.path.join(work, f"{name}.yaml")
    with open(cfg, "w") as f:
        f.write(config_text(work, task, arch, use_base, size))
    wpath = os.path.join(work, f"{name}_init.safetensors")
    subprocess.run([a.bin, "finetune", "--config", cfg, "--out", os.path.join(work, name), "--export-init", wpath, "--quiet"],
                   check=True)
    meta[f"{name}.keys"] = ""
    B = 2

    def one_run(dtype, recording=False):
        model = build_official(mods, task, arch, use_base)
        load_ours_into(model, wpath, strict=True)  # ours -> official, strict key and shape match
        meta[f"{name}.keys"] = "\n".join(model.state_dict().keys())
        model = model.to(dtype)
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        if recording:
            use_recording_relus(model)
            mods["resnet"].F = types.SimpleNamespace(relu=RecordingReLU("pathology.F.relu"))
        model.train()
        x = torch.from_numpy(formula_input(B, size)).to(dtype)
        logits = model(x)
        mods["resnet"].F = torch.nn.functional
        if task == "classify":
            logits = logits.reshape(B, 1)
            target = torch.tensor([[1.0], [0.0]], dtype=dtype)
            loss = torch.nn.BCEWithLogitsLoss()(logits, target)
        else:
            target = torch.from_numpy(formula_mask(B, size)).to(dtype)
            loss = mods["utils"].DiceBCELoss()(logits, target)
        loss.backward()
        return logits.detach(), loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    recorded = {}
    results = {}
    for dtype in (torch.float32, torch.float64):
        RecordingReLU.record, RecordingMaxPool.record = {}, {}
        results[dtype] = one_run(dtype, recording=True)
        recorded[dtype] = (RecordingReLU.record, RecordingMaxPool.record)
    RecordingReLU.record, RecordingMaxPool.record = None, None
    (l32, s32, g32), (l64, s64, g64) = results[torch.float32], results[torch.float64]
    # float64 runs of the same model: the judge of the ill-conditioned trunk gradients (BatchNorm in
    # train mode over few values per channel amplifies float32 summation-order noise).
    out[f"{name}.logits"] = l32.numpy()
    out[f"{name}.logits64"] = l64.numpy()
    out[f"{name}.loss"] = np.array([s32.item()], np.float32)
    out[f"{name}.loss64"] = np.array([s64.item()], np.float64)
    worst = 0.0
    for pname in g32:
        key = f"{name}.{pname}"
        grad_samples(out, key, g32[pname])
        flat64 = g64[pname].reshape(-1)
        idx = torch.from_numpy(out[f"{key}.gradidx"])
        out[f"{key}.gradval64"] = flat64[idx].numpy()
        out[f"{key}.gradnorm64"] = np.array([flat64.norm().item()], np.float64)
        d = (g32[pname].double().reshape(-1)[idx] - flat64[idx]).norm().item() / max(flat64[idx].norm().item(), 1e-300)
        out[f"{key}.torch32_err64"] = np.array([d], np.float64)
        worst = max(worst, d)
    meta[f"{name}.grad_params"] = "\n".join(g32)
    print(f"{name}: loss {s32.item():.6f} (float64 {s64.item():.6f}), {len(g32)} gradients, torch float32 vs float64 worst {worst:.2e}")
    ambiguous_decisions(name, recorded[torch.float32], recorded[torch.float64], out, meta)


def channel_rms(x):
    """Per-channel rms: dim 1 of [B,C,H,W] (over B,H,W) or of [N,C] (over N), broadcastable to x."""
    dims = (0, 2, 3) if x.dim() == 4 else (0,)
    return x.pow(2).mean(dim=dims, keepdim=True).sqrt().clamp_min(1e-300)


def ambiguous_decisions(name, rec32, rec64, out, meta):
    """The float64 run's decisions where a float32 run may decide otherwise (docstring): per ReLU
    (module name and call), the inputs within BAND x (torch float32's largest error there, relative
    to the channel's rms) of zero; for the stem's max-pool, the windows whose two largest inputs are
    that close. The C++ test makes the decisions ours took the other way at these sites as float64
    took them, and judges every gradient against float64 unchanged."""
    (relu32, pool32), (relu64, pool64) = rec32, rec64
    sites, bands, cand, x64v, rms64v = [], [], [], [], []
    flips32 = 0
    for key, x64 in relu64.items():
        rms = channel_rms(x64)
        err = ((relu32[key].double() - x64).abs() / rms).max().item()
        band = BAND * max(err, BAND_FLOOR)
        r = (x64.abs() / rms).reshape(-1)
        flips32 += int(((relu32[key] > 0) != (x64 > 0)).sum())
        idx = torch.nonzero(r < band).reshape(-1)
        if not len(idx):
            continue
        k = len(sites)
        sites.append(f"{key[0]}#{key[1]}")
        bands.append(band)
        cand += [[k, i] for i in idx.tolist()]
        x64v.append(x64.reshape(-1)[idx])
        rms64v.append(rms.expand_as(x64).reshape(-1)[idx])
    meta[f"{name}.relu_sites"] = "\n".join(sites)
    out[f"{name}.relu_band"] = np.array(bands, np.float64)
    out[f"{name}.relu_cand"] = np.array(cand, np.int64).reshape(len(cand), 2)
    out[f"{name}.relu_x64"] = torch.cat(x64v).numpy() if x64v else np.zeros(0)
    out[f"{name}.relu_rms64"] = torch.cat(rms64v).numpy() if rms64v else np.zeros(0)
    # The stem's max-pool: windows (output flat index) whose float64 maximum is positive and within
    # the band of the runner-up; stored: float64's argmax and runner-up (plane-local input indices),
    # their float64 values and the channel's rms.
    (h32, i32), (h64, i64) = pool32["res_features.3"], pool64["res_features.3"]
    B, C, H, W = h64.shape
    rms = channel_rms(h64)
    band = BAND * max(((h32.double() - h64).abs() / rms).max().item(), BAND_FLOOR)
    cols = torch.nn.functional.unfold(torch.nn.functional.pad(h64, (1, 1, 1, 1), value=-float("inf")), 3, stride=2)
    plane = torch.nn.functional.pad(torch.arange(H * W, dtype=torch.float64).reshape(1, 1, H, W), (1, 1, 1, 1), value=-1)
    pidx = torch.nn.functional.unfold(plane, 3, stride=2).reshape(9, -1).long()  # [9, OH*OW]
    OH, OW = i64.shape[2], i64.shape[3]
    vals = cols.reshape(B, C, 9, OH * OW)
    top = vals.topk(2, dim=2)
    gap = (top.values[:, :, 0] - top.values[:, :, 1]) / rms.reshape(B if rms.shape[0] > 1 else 1, C, 1)
    first = i64.reshape(B, C, OH * OW)
    ok = (top.values[:, :, 0] > 0) & (gap < band)
    pool_cand, pool_val, pool_rms = [], [], []
    for b, c, o in torch.nonzero(ok).tolist():
        j0 = top.indices[b, c, 0, o].item()
        j1 = top.indices[b, c, 1, o].item()
        a0, a1 = pidx[j0, o].item(), pidx[j1, o].item()
        if a0 != first[b, c, o].item():  # ties in float64: torch's argmax first
            a0, a1 = a1, a0
        assert a0 == first[b, c, o].item()
        pool_cand.append([(b * C + c) * OH * OW + o, a0, a1])
        pool_val.append([h64[b, c].reshape(-1)[a0].item(), h64[b, c].reshape(-1)[a1].item()])
        pool_rms.append(rms.reshape(-1)[c].item())
    out[f"{name}.pool_band"] = np.array([band], np.float64)
    out[f"{name}.pool_cand"] = np.array(pool_cand, np.int64).reshape(len(pool_cand), 3)
    out[f"{name}.pool_val64"] = np.array(pool_val, np.float64).reshape(len(pool_cand), 2)
    out[f"{name}.pool_rms64"] = np.array(pool_rms, np.float64).reshape(len(pool_cand))
    pool_flips32 = int((i32 != i64).sum())
    print(f"{name}: {len(cand)} ReLU inputs near zero at {len(sites)} ReLUs (of {sum(x.numel() for x in relu64.values())}),"
          f" {len(pool_cand)} near-tied max-pool windows; torch float32 decided {flips32} ReLUs and {pool_flips32} windows"
          f" otherwise than float64")


def metric_case(mods, out):
    rng = np.random.RandomState(11)
    N, P = 7, 256
    prob = rng.uniform(0, 1, (N, P)).astype(np.float32)
    truth = (rng.uniform(0, 1, (N, P)) < 0.3).astype(np.float32)
    truth[0] = 0                       # empty truth, non-empty prediction -> 0
    truth[1] = 0
    prob[1] = rng.uniform(0, 0.5, P)   # empty truth, empty prediction -> 1
    prob[2] = rng.uniform(0, 0.5, P)   # non-empty truth, empty prediction -> 0
    truth[3] = truth[3] * 0.8          # soft truth values: dice thresholds them, mIoU does not
    prob[4, :40] = 0.5                 # exactly at the threshold: not predicted (strict >)
    d, dn, dp, nn_, np_ = mods["metric"].dice(torch.from_numpy(prob), torch.from_numpy(truth))
    iou = mods["metric"].mIoU(torch.from_numpy(prob), torch.from_numpy(truth))
    out["metric.prob"] = prob
    out["metric.truth"] = truth
    out["metric.dice"] = np.array([d, dn, dp, nn_, np_], np.float64)
    out["metric.miou"] = np.array([float(iou)], np.float64)
    print(f"metric.py: dice {d:.6f} (neg {dn:.4f}, pos {dp:.4f}, {nn_}/{np_}), mIoU {float(iou):.6f}")


def strict_check(mods, a, work):
    """Ours -> official with strict=True, then the official outputs against finetune-eval's."""
    from PIL import Image
    worst = 0.0
    for name, task, arch, size in [("check_cls", "classify", "resnet18", 64), ("check_seg", "segment", "resnet50", 64)]:
        cfg = os.path.join(work, f"{name}.yaml")
        with open(cfg, "w") as f:
            f.write(config_text(work, task, arch, True, size))
        run = os.path.join(work, name)
        subprocess.run([a.bin, "finetune", "--config", cfg, "--out", run, "--quiet"], check=True)
        best = os.path.join(run, "checkpoint_best.safetensors")
        ev = os.path.join(run, "eval")
        subprocess.run([a.bin, "finetune-eval", "--checkpoint", best, "--csv", os.path.join(work, "tiny.csv"), "--out", ev,
                        "--samples", "0"], check=True, capture_output=True)
        model = build_official(mods, task, arch, True)
        load_ours_into(model, best, strict=True)
        model.eval()
        rows = list(csv.DictReader(open(os.path.join(work, "tiny.csv"))))
        mean = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
        std = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
        xs, ms = [], []
        for r in rows:
            im = np.asarray(Image.open(os.path.join(work, r["image_path"])).convert("RGB"), np.float32) / 255.0
            xs.append((im.transpose(2, 0, 1) - mean) / std)
            ms.append(np.asarray(Image.open(os.path.join(work, r["mask_path"])), np.float32)[None] / 255.0)
        with torch.no_grad():
            prob = torch.sigmoid(model(torch.from_numpy(np.stack(xs))))
        pred = list(csv.DictReader(open(os.path.join(ev, "predictions.csv"))))
        if task == "classify":
            ref = prob.reshape(-1).numpy()
            ours = np.array([float(p["score_finding"]) for p in pred])
            err = float(np.abs(ref - ours).max())
            what = "sigmoid scores"
        else:
            truth = torch.from_numpy(np.stack(ms))
            p = (prob > 0.5).float().reshape(len(rows), -1)
            t = (truth > 0.5).float().reshape(len(rows), -1)
            inter = (p * t).sum(1)
            dice_img = torch.where(t.sum(1) == 0, (p.sum(1) == 0).float(), 2 * inter / (p + t).sum(1))
            iou_img = (inter + 1) / (p.sum(1) + truth.reshape(len(rows), -1).sum(1) - inter + 1)
            ours_d = np.array([float(r["dice"]) for r in pred])
            ours_i = np.array([float(r["iou"]) for r in pred])
            err = float(max(np.abs(dice_img.numpy() - ours_d).max(), np.abs(iou_img.numpy() - ours_i).max()))
            d, *_ = mods["metric"].dice(prob, truth)
            ours_m = json.load(open(os.path.join(ev, "metrics.json")))
            err = max(err, abs(d - ours_m["dice"]))
            what = "per-image Dice/IoU and the mean Dice (metric.py)"
        print(f"{name}: checkpoint_best loads into the official {task} model (strict=True); {what}: max |diff| {err:.2e}")
        worst = max(worst, err)
    if worst > 1e-4:
        sys.exit(f"strict-load check FAILED: the official model's outputs differ from ours by {worst:.2e} (> 1e-4)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", default=os.environ.get("MEDSLIP_OFFICIAL_REPO", "/work/.mirror/Shef-AIRE+MeDSLIP/repo"))
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "medslip"))
    ap.add_argument("--out", default=os.path.join(HERE, "fixtures", "finetune_ref.safetensors"))
    ap.add_argument("--only-check", action="store_true", help="run only the strict-load check")
    ap.add_argument("--cases", default="", help="comma-separated case names (development; the fixture needs all)")
    ap.add_argument("--skip-check", action="store_true", help="skip the strict-load check (development)")
    a = ap.parse_args()
    if not a.repo or not os.path.exists(a.repo):
        sys.exit("need --repo PATH (a clone of github.com/Shef-AIRE/MeDSLIP) or MEDSLIP_OFFICIAL_REPO")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    mods = load_official(a.repo)
    work = tempfile.mkdtemp(prefix="medslip_ft_")
    write_tiny_set(work)
    if not a.only_check:
        out, meta = {}, {"fixture_version": FIXTURE_VERSION}
        for c in CASES:
            if a.cases and c[0] not in a.cases.split(","):
                continue
            run_case(mods, a, work, *c, out, meta)
        metric_case(mods, out)
        st_write(a.out, out, meta)
        print(f"wrote {a.out} ({os.path.getsize(a.out) / 1e3:.0f} kB)")
    if not a.skip_check:
        strict_check(mods, a, work)


if __name__ == "__main__":
    main()
