#!/usr/bin/python3
"""The project's PyTorch fixture driver: writes tests/fixtures/*.safetensors for the parity suites.

Regenerate everything (Debian python: torch 1.13 CPU, numpy, yaml, safetensors):
    /usr/bin/python3 -m pip install --break-system-packages safetensors   # once
    make fixtures                       # = /usr/bin/python3 tests/make_fixtures.py
    /usr/bin/python3 tests/make_fixtures.py --only engine     # one section
    /usr/bin/python3 tests/make_fixtures.py --list            # sections and standalone scripts

Without --only, every section below runs, then every standalone tests/make_fixtures_*.py
(one subprocess each). `--only NAME` runs one section, or the standalone script
tests/make_fixtures_NAME.py. Add a section as `def make_NAME(outdir)` plus a SECTIONS entry.

Conventions of the per-op cases (see docs/testing.md): a case CASE stores its inputs as
CASE.in.K, each output j as CASE.out{j} with a random upstream gradient CASE.R{j}; the
backward seed is loss = sum_j sum(out_j * R_j), and CASE.grad.K holds dloss/dK for every input
that takes a gradient. Integer data (indices, masks) are I64/U8 tensors CASE.idx / CASE.mask.
Float32 throughout, TF32 off, one thread, deterministic algorithms, seeds from the case name.

Section `engine` (tests/engine/parity.cpp) writes, ~0.2 MB in all:
  engine_ops.safetensors    elementwise/broadcast, reductions, matmul/linear, shape ops,
                            softmax/log_softmax, layer_norm, masked cross-entropy and BCE
  engine_conv.safetensors   conv2d variants, max/adaptive-avg pooling, and a
                            conv+BN+ReLU+maxpool+adaptive-avg-pool block in train and eval mode
  engine_finetune.safetensors  conv_transpose2d variants, the reference's DiceBCELoss, and a U-Net
                            up-block (ConvTranspose2d, cat, 2 x Conv+BN+ReLU, Conv1d 1x1 head) in train mode
  engine_mha.safetensors    nn.MultiheadAttention self- and cross-attention with a key padding mask
  engine_adamw.safetensors  three AdamW steps on a Linear-ReLU-Linear MLP with two param groups
  engine_lr.safetensors     the reference's hand-stepped cosine-with-warmup LR (spec D), simulated
                            with the official repo's own scheduler package and training-loop logic.
                            Needs the official repository (a git clone or bare mirror of
                            Shef-AIRE/MeDSLIP): --official-repo PATH, $MEDSLIP_OFFICIAL_REPO, or
                            /work/.mirror/Shef-AIRE+MeDSLIP/repo. Its files are `git show`n into a temp
                            dir at run time; no code of it is committed. Without it, this file is kept.
"""
import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import zlib

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "fixtures")
FIXTURE_VERSION = "1"  # bump when a fixture's layout changes; tests print it on a mismatch
OFFICIAL_CANDIDATES = ["/work/.mirror/Shef-AIRE+MeDSLIP/repo"]


def setup_torch():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # summation order independent of the machine
    torch.set_default_dtype(torch.float32)


def seed_for(name):
    """A stable seed per case, so adding a case does not change the others."""
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


class Fixture:
    """Tensors for one safetensors file, with the per-op case convention of the docstring."""

    def __init__(self, section):
        self.section = section
        self.t = {}

    def put(self, name, x):
        if name in self.t:
            raise KeyError(f"duplicate fixture tensor {name}")
        if x.dtype == torch.bool:
            x = x.to(torch.uint8)
        self.t[name] = x.detach().contiguous().clone()

    def case(self, name, fn, inputs, grad=None, extra=None):
        """inputs: dict K -> float tensor; grad: the Ks that take a gradient (default all);
        extra: dict of integer tensors stored as CASE.<key>. fn(*inputs.values()) -> tensor or tuple."""
        grad = list(inputs) if grad is None else grad
        g = torch.Generator().manual_seed(seed_for(name) + 1)
        leaves = {}
        for k, v in inputs.items():
            leaves[k] = v.detach().clone().requires_grad_(k in grad)
            self.put(f"{name}.in.{k}", v)
        outs = fn(*leaves.values())  # positional, in the order of `inputs`
        outs = outs if isinstance(outs, (tuple, list)) else (outs,)
        loss = 0
        for j, o in enumerate(outs):
            r = torch.randn(o.shape, generator=g)
            self.put(f"{name}.out{j}", o)
            self.put(f"{name}.R{j}", r)
            loss = loss + (o * r).sum()
        loss.backward()
        for k in grad:
            gk = leaves[k].grad
            self.put(f"{name}.grad.{k}", gk if gk is not None else torch.zeros_like(leaves[k]))
        for k, v in (extra or {}).items():
            self.put(f"{name}.{k}", v)

    def save(self, outdir, fname, note):
        path = os.path.join(outdir, fname)
        meta = {"generator": f"tests/make_fixtures.py --only {self.section}", "fixture_version": FIXTURE_VERSION,
                "torch": torch.__version__, "note": note}
        write_safetensors(path, self.t, meta)
        print(f"  wrote {os.path.relpath(path)} ({len(self.t)} tensors, {os.path.getsize(path) / 1024:.1f} KiB)")


DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.int64: "I64", torch.uint8: "U8"}


def write_safetensors(path, tensors, metadata):
    """safetensors by hand (huggingface/safetensors format), byte-reproducible: the library orders
    the metadata differently on every run, which would churn the committed fixtures."""
    header, blobs, off = {"__metadata__": dict(sorted(metadata.items()))}, [], 0
    for name in sorted(tensors):
        t = tensors[name]
        b = t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)  # the data buffer starts 8-byte aligned, as the library writes it
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h + b"".join(blobs))
    os.replace(tmp, path)


def rand(name, *shape, lo=None, hi=None, scale=1.0):
    """N(0, scale^2), or U(lo, hi) when bounds are given; seeded by `name`."""
    g = torch.Generator().manual_seed(seed_for(name))
    if lo is not None:
        return lo + (hi - lo) * torch.rand(shape, generator=g)
    return scale * torch.randn(shape, generator=g)


# --------------------------------------------------------------------------------------
# section engine: op families (engine_ops.safetensors)
# --------------------------------------------------------------------------------------

def engine_ops(fx):
    # elementwise with NumPy broadcasting
    fx.case("ew_add", lambda a, b: a + b, {"a": rand("ew_add.a", 2, 3, 4), "b": rand("ew_add.b", 3, 1)})
    fx.case("ew_sub", lambda a, b: a - b, {"a": rand("ew_sub.a", 2, 1, 4), "b": rand("ew_sub.b", 3, 4)})
    fx.case("ew_mul", lambda a, b: a * b, {"a": rand("ew_mul.a", 2, 3, 4), "b": rand("ew_mul.b", 4)})
    fx.case("ew_div", lambda a, b: a / b,
            {"a": rand("ew_div.a", 2, 3, 4), "b": rand("ew_div.b", 2, 1, 1, lo=0.5, hi=2.0)})
    fx.case("ew_div_bcast_a", lambda a, b: a / b,
            {"a": rand("ew_div_bcast_a.a", 3, 1), "b": rand("ew_div_bcast_a.b", 2, 3, 4, lo=0.5, hi=2.0)})
    fx.case("ew_square", lambda a: a * a, {"a": rand("ew_square.a", 3, 4)})  # one tensor, both operands
    fx.case("ew_add_scalar", lambda a: a + 1.5, {"a": rand("ew_add_scalar.a", 3, 4)})
    fx.case("ew_mul_scalar", lambda a: a * -0.7, {"a": rand("ew_mul_scalar.a", 3, 4)})
    fx.case("ew_rsub", lambda a: 2.0 - a, {"a": rand("ew_rsub.a", 3, 4)})
    fx.case("ew_neg", lambda a: -a, {"a": rand("ew_neg.a", 3, 4)})
    fx.case("ew_pow", lambda a: a ** 2.5, {"a": rand("ew_pow.a", 3, 4, lo=0.2, hi=2.0)})
    fx.case("ew_pow2", lambda a: a ** 2.0, {"a": rand("ew_pow2.a", 3, 4)})
    fx.case("ew_exp", torch.exp, {"a": rand("ew_exp.a", 3, 5)})
    fx.case("ew_log", torch.log, {"a": rand("ew_log.a", 3, 5, lo=0.1, hi=3.0)})
    fx.case("ew_sqrt", torch.sqrt, {"a": rand("ew_sqrt.a", 3, 5, lo=0.1, hi=3.0)})
    fx.case("ew_rsqrt", torch.rsqrt, {"a": rand("ew_rsqrt.a", 3, 5, lo=0.1, hi=3.0)})
    fx.case("ew_relu", torch.relu, {"a": rand("ew_relu.a", 3, 5)})
    fx.case("ew_gelu", F.gelu, {"a": rand("ew_gelu.a", 3, 5, scale=2.0)})  # erf form (torch default)
    fx.case("ew_tanh", torch.tanh, {"a": rand("ew_tanh.a", 3, 5, scale=2.0)})
    fx.case("ew_sigmoid", torch.sigmoid, {"a": rand("ew_sigmoid.a", 3, 5, scale=2.0)})

    # reductions (random data: no ties for max)
    a = lambda n: rand(n, 3, 4, 5)
    fx.case("red_sum_all", lambda a: a.sum(), {"a": a("red_sum_all")})
    fx.case("red_mean_all", lambda a: a.mean(), {"a": a("red_mean_all")})
    fx.case("red_sum_d1_keep", lambda a: a.sum(1, keepdim=True), {"a": a("red_sum_d1_keep")})
    fx.case("red_sum_dm1", lambda a: a.sum(-1), {"a": a("red_sum_dm1")})
    fx.case("red_mean_d0", lambda a: a.mean(0), {"a": a("red_mean_d0")})
    fx.case("red_mean_d2_keep", lambda a: a.mean(2, keepdim=True), {"a": a("red_mean_d2_keep")})
    fx.case("red_max_d1", lambda a: a.max(1).values, {"a": a("red_max_d1")})
    fx.case("red_max_dm1_keep", lambda a: a.max(-1, keepdim=True).values, {"a": a("red_max_dm1_keep")})

    # matrix products
    t = lambda x: x.transpose(-1, -2)
    fx.case("mm_2d", torch.matmul, {"a": rand("mm_2d.a", 3, 4), "b": rand("mm_2d.b", 4, 5)})
    fx.case("mm_batched", torch.matmul, {"a": rand("mm_batched.a", 2, 3, 4), "b": rand("mm_batched.b", 2, 4, 5)})
    fx.case("mm_ta", lambda a, b: t(a) @ b, {"a": rand("mm_ta.a", 2, 4, 3), "b": rand("mm_ta.b", 2, 4, 5)})
    fx.case("mm_tb", lambda a, b: a @ t(b), {"a": rand("mm_tb.a", 2, 3, 4), "b": rand("mm_tb.b", 2, 5, 4)})
    fx.case("mm_tab_2d", lambda a, b: t(a) @ t(b), {"a": rand("mm_tab_2d.a", 4, 3), "b": rand("mm_tab_2d.b", 5, 4)})
    fx.case("mm_shared_b", torch.matmul, {"a": rand("mm_shared_b.a", 2, 3, 4), "b": rand("mm_shared_b.b", 4, 5)})
    fx.case("mm_shared_b_tb", lambda a, b: a @ t(b),
            {"a": rand("mm_shared_b_tb.a", 2, 3, 4), "b": rand("mm_shared_b_tb.b", 5, 4)})
    fx.case("mm_linear", F.linear, {"x": rand("mm_linear.x", 2, 3, 4), "w": rand("mm_linear.w", 5, 4),
                                    "b": rand("mm_linear.b", 5)})
    fx.case("mm_linear_nobias", F.linear,
            {"x": rand("mm_linear_nobias.x", 3, 4), "w": rand("mm_linear_nobias.w", 5, 4)})

    # shape ops
    fx.case("sh_reshape", lambda a: a.reshape(3, 4), {"a": rand("sh_reshape.a", 2, 6)})
    fx.case("sh_permute", lambda a: a.permute(2, 0, 1), {"a": rand("sh_permute.a", 2, 3, 4)})
    fx.case("sh_transpose", lambda a: a.transpose(0, 2), {"a": rand("sh_transpose.a", 2, 3, 4)})
    fx.case("sh_concat1", lambda a, b, c: torch.cat([a, b, c], 1),
            {"a": rand("sh_concat1.a", 2, 3), "b": rand("sh_concat1.b", 2, 1), "c": rand("sh_concat1.c", 2, 4)})
    fx.case("sh_concat0", lambda a, b: torch.cat([a, b], 0),
            {"a": rand("sh_concat0.a", 1, 3, 2), "b": rand("sh_concat0.b", 2, 3, 2)})
    fx.case("sh_narrow", lambda a: a.narrow(1, 1, 3), {"a": rand("sh_narrow.a", 4, 5)})
    idx0 = torch.tensor([4, 0, 4, 2, 4])  # repeated indices: their grads add up
    fx.case("sh_index_select0", lambda a: a.index_select(0, idx0), {"a": rand("sh_index_select0.a", 5, 3)},
            extra={"idx": idx0})
    idx1 = torch.tensor([1, 1, 3])
    fx.case("sh_index_select1", lambda a: a.index_select(1, idx1), {"a": rand("sh_index_select1.a", 2, 5, 3)},
            extra={"idx": idx1})
    ids = torch.tensor([[1, 5, 1], [0, 1, 2]])
    fx.case("sh_embedding", lambda w: F.embedding(ids, w), {"w": rand("sh_embedding.w", 6, 4)}, extra={"idx": ids})
    m = rand("sh_masked_select.m", 3, 4) > 0
    fx.case("sh_masked_select", lambda a: a.masked_select(m), {"a": rand("sh_masked_select.a", 3, 4)},
            extra={"mask": m})
    m = rand("sh_where.m", 2, 3, 4) > 0
    fx.case("sh_where", lambda a, b: torch.where(m, a, b),
            {"a": rand("sh_where.a", 2, 3, 4), "b": rand("sh_where.b", 4)}, extra={"mask": m})
    m = rand("sh_masked_fill.m", 3, 4) > 0
    fx.case("sh_masked_fill", lambda a: a.masked_fill(m, -2.5), {"a": rand("sh_masked_fill.a", 3, 4)},
            extra={"mask": m})
    fx.case("sh_expand", lambda a: a.expand(2, 3, 4), {"a": rand("sh_expand.a", 3, 1)})

    # softmax family and layer_norm
    fx.case("sm_softmax_last", lambda a: a.softmax(-1), {"a": rand("sm_softmax_last.a", 3, 5, scale=3.0)})
    fx.case("sm_softmax_d1", lambda a: a.softmax(1), {"a": rand("sm_softmax_d1.a", 2, 4, 3, scale=3.0)})
    fx.case("sm_log_softmax_last", lambda a: a.log_softmax(-1), {"a": rand("sm_log_softmax_last.a", 3, 5, scale=3.0)})
    fx.case("sm_log_softmax_d0", lambda a: a.log_softmax(0), {"a": rand("sm_log_softmax_d0.a", 4, 3, scale=3.0)})
    m = torch.tensor([[0, 1, 0, 1, 1], [0, 0, 0, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.bool)  # never a full row
    fx.case("sm_softmax_neginf", lambda a: a.masked_fill(m, float("-inf")).softmax(-1),
            {"a": rand("sm_softmax_neginf.a", 3, 5, scale=3.0)}, extra={"mask": m})
    fx.case("ln_affine", lambda x, w, b: F.layer_norm(x, (8,), w, b, 1e-5),
            {"x": rand("ln_affine.x", 2, 3, 8, scale=2.0) + 0.5, "w": rand("ln_affine.w", 8) + 1.0,
             "b": rand("ln_affine.b", 8)})
    fx.case("ln_plain_eps12", lambda x: F.layer_norm(x, (6,), None, None, 1e-12),  # BERT's eps
            {"x": rand("ln_plain_eps12.x", 4, 6)})

    # losses with a validity mask (spec B.6.5: mean over the counted rows, 0 when none)
    def ce(logits, target, valid):
        n = int(valid.sum())
        t = torch.where(valid, target, torch.full_like(target, -100))  # ignore_index rows add 0
        return F.cross_entropy(logits, t, reduction="none").sum() / max(n, 1)

    target = torch.tensor([2, 0, 4, 1, 3, 1])
    valid = torch.tensor([1, 1, 0, 1, 0, 1], dtype=torch.bool)
    fx.case("loss_ce_mask", lambda x: ce(x, target, valid), {"x": rand("loss_ce_mask.x", 6, 5, scale=2.0)},
            extra={"idx": target, "mask": valid})
    none = torch.zeros(6, dtype=torch.bool)
    fx.case("loss_ce_allmasked", lambda x: ce(x, target, none), {"x": rand("loss_ce_allmasked.x", 6, 5)},
            extra={"idx": target, "mask": none})

    def bce(x, t, valid):
        l = F.binary_cross_entropy_with_logits(x, t, reduction="none")
        return (l * valid).sum() / max(int(valid.sum()), 1)

    t = torch.cat([(rand("loss_bce_mask.t", 2, 5) > 0).float(), rand("loss_bce_mask.ts", 2, 5, lo=0.0, hi=1.0)])
    valid = rand("loss_bce_mask.m", 4, 5) > -0.5
    fx.case("loss_bce_mask", lambda x, t: bce(x, t, valid), {"x": rand("loss_bce_mask.x", 4, 5, scale=3.0), "t": t},
            grad=["x"], extra={"mask": valid})
    none = torch.zeros(4, 5, dtype=torch.bool)
    fx.case("loss_bce_allmasked", lambda x, t: bce(x, t, none), {"x": rand("loss_bce_allmasked.x", 4, 5), "t": t},
            grad=["x"], extra={"mask": none})


# --------------------------------------------------------------------------------------
# section engine: convolution, pooling, the conv+BN block (engine_conv.safetensors)
# --------------------------------------------------------------------------------------

def engine_conv(fx):
    convs = [  # name, N,C,H,W, O, k, stride, pad, bias
        ("conv_7x7_s2_p3_bias", 2, 3, 12, 12, 4, 7, 2, 3, True),
        ("conv_7x7_s2_p3", 2, 3, 11, 11, 4, 7, 2, 3, False),
        ("conv_3x3_s1_p1_bias", 2, 4, 6, 6, 5, 3, 1, 1, True),
        ("conv_3x3_s2_p1", 2, 4, 7, 7, 5, 3, 2, 1, False),
        ("conv_1x1_s2_bias", 2, 4, 7, 7, 6, 1, 2, 0, True),
        ("conv_1x1_s2", 2, 4, 8, 8, 6, 1, 2, 0, False),
    ]
    for name, n, c, h, w, o, k, s, p, has_bias in convs:
        inputs = {"x": rand(name + ".x", n, c, h, w), "w": rand(name + ".w", o, c, k, k, scale=(c * k * k) ** -0.5)}
        if has_bias:
            inputs["b"] = rand(name + ".b", o)
        fx.case(name, lambda x, w, b=None, s=s, p=p: F.conv2d(x, w, b, stride=s, padding=p), inputs,
                extra={"geom": torch.tensor([s, p])})
    fx.case("pool_max_3_2_1", lambda x: F.max_pool2d(x, 3, 2, 1), {"x": rand("pool_max_3_2_1.x", 2, 3, 7, 7)})
    fx.case("pool_max_3_2_1_even", lambda x: F.max_pool2d(x, 3, 2, 1), {"x": rand("pool_max_3_2_1_even.x", 1, 2, 8, 6)})
    fx.case("pool_adapt_1x1", lambda x: F.adaptive_avg_pool2d(x, (1, 1)), {"x": rand("pool_adapt_1x1.x", 2, 3, 5, 5)})
    fx.case("pool_adapt_3x2", lambda x: F.adaptive_avg_pool2d(x, (3, 2)), {"x": rand("pool_adapt_3x2.x", 2, 3, 7, 5)})

    # conv(3->8, 7x7 s2 p3, no bias) + BN + ReLU + maxpool(3,2,1) + adaptive_avg_pool(1,1): the ResNet stem.
    for mode in ("train", "eval"):
        name = f"block_{mode}"
        torch.manual_seed(seed_for(name))
        block = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 7, 2, 3, bias=False), torch.nn.BatchNorm2d(8),
                                    torch.nn.ReLU(), torch.nn.MaxPool2d(3, 2, 1), torch.nn.AdaptiveAvgPool2d(1))
        with torch.no_grad():  # non-trivial affine and running statistics
            block[1].weight.copy_(rand(name + ".bnw", 8, lo=0.5, hi=1.5))
            block[1].bias.copy_(rand(name + ".bnb", 8, scale=0.3))
            block[1].running_mean.copy_(rand(name + ".rm", 8, scale=0.2))
            block[1].running_var.copy_(rand(name + ".rv", 8, lo=0.5, hi=2.0))
            block[1].num_batches_tracked.fill_(7)
        for k, v in block.state_dict().items():
            fx.put(f"{name}.sd.{k}", v)
        block.train(mode == "train")
        x = rand(name + ".x", 4, 3, 16, 16).requires_grad_(True)
        feat = block[:4](x)  # [4,8,4,4] after maxpool
        pooled = block[4](feat)  # [4,8,1,1]
        g = torch.Generator().manual_seed(seed_for(name) + 1)
        r0, r1 = torch.randn(feat.shape, generator=g), torch.randn(pooled.shape, generator=g)
        ((feat * r0).sum() + (pooled * r1).sum()).backward()
        fx.put(f"{name}.in.x", x)
        fx.put(f"{name}.out0", feat)
        fx.put(f"{name}.R0", r0)
        fx.put(f"{name}.out1", pooled)
        fx.put(f"{name}.R1", r1)
        fx.put(f"{name}.grad.x", x.grad)
        for k, p in block.named_parameters():
            fx.put(f"{name}.grad.{k}", p.grad)
        for k, v in block.state_dict().items():  # running stats after one forward
            fx.put(f"{name}.after.{k}", v)
        x2 = rand(name + ".x2", 4, 3, 16, 16)
        with torch.no_grad():
            fx.put(f"{name}.out_second", block(x2))
        fx.put(f"{name}.in.x2", x2)
        for k, v in block.state_dict().items():  # and after a second one
            fx.put(f"{name}.after2.{k}", v)


# --------------------------------------------------------------------------------------
# section engine: the fine-tuning ops (engine_finetune.safetensors)
# --------------------------------------------------------------------------------------

def dice_bce_reference(inputs, targets, smooth=1):
    """utils.py DiceBCELoss.forward of the official I2_segmentation, verbatim in substance (spec E.6)."""
    inputs = torch.sigmoid(inputs)
    inputs = inputs.view(-1)
    targets = targets.view(-1)
    intersection = (inputs * targets).sum()
    dice_loss = 1 - (2.0 * intersection + smooth) / (inputs.sum() + targets.sum() + smooth)
    bce = F.binary_cross_entropy(inputs, targets, reduction="mean")
    return bce + dice_loss


def engine_finetune(fx):
    deconvs = [  # name, N,C,H,W, O, kh,kw, stride, pad, bias
        ("deconv_2x2_s2_bias", 2, 4, 3, 4, 3, 2, 2, 2, 0, True),  # the U-Net's up-sampling (k2 s2)
        ("deconv_2x2_s2", 1, 3, 4, 3, 5, 2, 2, 2, 0, False),
        ("deconv_3x3_s2_p1_bias", 2, 3, 4, 4, 2, 3, 3, 2, 1, True),  # overlapping windows, cropped
        ("deconv_3x3_s1_p1", 2, 2, 5, 4, 3, 3, 3, 1, 1, False),
        ("deconv_3x2_s3_bias", 2, 2, 3, 3, 2, 3, 2, 3, 0, True),  # non-square kernel; gaps when k < stride
        ("deconv_1x1_s1", 2, 4, 3, 3, 2, 1, 1, 1, 0, False),
    ]
    for name, n, c, h, w, o, kh, kw, s, p, has_bias in deconvs:
        inputs = {"x": rand(name + ".x", n, c, h, w), "w": rand(name + ".w", c, o, kh, kw, scale=(o * kh * kw) ** -0.5)}
        if has_bias:
            inputs["b"] = rand(name + ".b", o)
        fx.case(name, lambda x, w, b=None, s=s, p=p: F.conv_transpose2d(x, w, b, stride=s, padding=p), inputs,
                extra={"geom": torch.tensor([s, p])})

    # The reference's DiceBCELoss; the target is data (no gradient). Logits within |x| < 6, where
    # F.binary_cross_entropy on sigmoid outputs and our logits form agree to float rounding.
    for name, shape, smooth, soft in [("dicebce_mask", (2, 1, 6, 5), 1.0, False),
                                      ("dicebce_soft", (3, 7), 0.5, True),
                                      ("dicebce_empty_mask", (2, 1, 4, 4), 1.0, False)]:
        x = rand(name + ".x", *shape, scale=2.0).clamp(-6, 6)
        if soft:
            t = rand(name + ".t", *shape, lo=0.0, hi=1.0)
        elif name.endswith("empty_mask"):
            t = torch.zeros(shape)  # no foreground: dice is smooth / (sum p + smooth)
        else:
            t = (rand(name + ".t", *shape) > 0.3).float()
        fx.case(name, lambda x, t, smooth=smooth: dice_bce_reference(x, t, smooth), {"x": x, "t": t}, grad=["x"],
                extra={"smooth": torch.tensor([smooth], dtype=torch.float64)})

    # One up-block of the U-Net (resunet.py UpBlockForUNetWithResNet50) at small widths, train
    # mode: ConvTranspose2d(k2, s2) -> cat with the skip -> 2 x (Conv3x3 + BN + ReLU), then the
    # head's Conv1d 1x1 and the DiceBCE loss on a mask. Names as the reference's state_dict.
    name = "upblock"
    torch.manual_seed(seed_for(name))

    class ConvBlock(torch.nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.conv = torch.nn.Conv2d(cin, cout, padding=1, kernel_size=3, stride=1)
            self.bn = torch.nn.BatchNorm2d(cout)
            self.relu = torch.nn.ReLU()

        def forward(self, x):
            return self.relu(self.bn(self.conv(x)))

    class UpBlock(torch.nn.Module):
        def __init__(self, cin, cout, up_in, up_out):
            super().__init__()
            self.upsample = torch.nn.ConvTranspose2d(up_in, up_out, kernel_size=2, stride=2)
            self.conv_block_1 = ConvBlock(cin, cout)
            self.conv_block_2 = ConvBlock(cout, cout)

        def forward(self, up_x, down_x):
            x = torch.cat([self.upsample(up_x), down_x], 1)
            return self.conv_block_2(self.conv_block_1(x))

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.up = UpBlock(6 + 3, 6, 8, 6)  # up_x 8 channels -> 6, skip 3 channels
            self.seg_classifier = torch.nn.Conv1d(6, 1, kernel_size=1, bias=True)

        def forward(self, up_x, down_x):
            o = self.up(up_x, down_x)  # [N,6,2H,2W]
            n, c, h, w = o.shape
            return self.seg_classifier(o.reshape(n, c, h * w)).reshape(n, 1, h, w)

    net = Net().train()
    for k, v in net.state_dict().items():
        fx.put(f"{name}.sd.{k}", v)
    up_x = rand(name + ".up_x", 2, 8, 4, 5).requires_grad_(True)
    down_x = rand(name + ".down_x", 2, 3, 8, 10).requires_grad_(True)
    mask = (rand(name + ".mask", 2, 1, 8, 10) > 0.5).float()
    logits = net(up_x, down_x)
    loss = dice_bce_reference(logits, mask)
    loss.backward()
    fx.put(f"{name}.in.up_x", up_x)
    fx.put(f"{name}.in.down_x", down_x)
    fx.put(f"{name}.mask", mask)
    fx.put(f"{name}.logits", logits)
    fx.put(f"{name}.loss", loss)
    fx.put(f"{name}.grad.up_x", up_x.grad)
    fx.put(f"{name}.grad.down_x", down_x.grad)
    for k, p in net.named_parameters():
        fx.put(f"{name}.grad.{k}", p.grad)


# --------------------------------------------------------------------------------------
# section engine: nn.MultiheadAttention (engine_mha.safetensors)
# --------------------------------------------------------------------------------------

def engine_mha(fx):
    for name, E, H, L, S, B, self_attn in [("mha_self", 16, 4, 5, 5, 2, True), ("mha_cross", 32, 4, 3, 6, 2, False)]:
        torch.manual_seed(seed_for(name))
        mha = torch.nn.MultiheadAttention(E, H, dropout=0.0)
        with torch.no_grad():  # torch zero-initialises the biases; make them matter
            mha.in_proj_bias.copy_(rand(name + ".ipb", 3 * E, scale=0.2))
            mha.out_proj.bias.copy_(rand(name + ".opb", E, scale=0.2))
        mha.eval()
        sd = mha.state_dict()
        for k, v in sd.items():
            fx.put(f"{name}.sd.{k}", v)
        mask = torch.zeros(B, S, dtype=torch.bool)  # 1 = ignore this key; never a whole row
        mask[0, S - 1] = True
        mask[1, 1] = True
        mask[1, S - 2] = True
        fx.put(f"{name}.mask", mask)
        fx.put(f"{name}.heads", torch.tensor([H]))
        if self_attn:
            x = rand(name + ".x", L, B, E).requires_grad_(True)
            q = k = v = x
            leaves = {"x": x}
        else:
            q = rand(name + ".q", L, B, E).requires_grad_(True)
            k = rand(name + ".k", S, B, E).requires_grad_(True)
            v = rand(name + ".v", S, B, E).requires_grad_(True)
            leaves = {"q": q, "k": k, "v": v}
        out, w = mha(q, k, v, key_padding_mask=mask, need_weights=True)  # w: [B,L,S], head-averaged
        g = torch.Generator().manual_seed(seed_for(name) + 1)
        r0, r1 = torch.randn(out.shape, generator=g), torch.randn(w.shape, generator=g)
        ((out * r0).sum() + (w * r1).sum()).backward()
        for kk, t in leaves.items():
            fx.put(f"{name}.in.{kk}", t)
            fx.put(f"{name}.grad.{kk}", t.grad)
        fx.put(f"{name}.out0", out)
        fx.put(f"{name}.R0", r0)
        fx.put(f"{name}.out1", w)
        fx.put(f"{name}.R1", r1)
        for kk, p in mha.named_parameters():
            fx.put(f"{name}.grad.{kk}", p.grad)


# --------------------------------------------------------------------------------------
# section engine: AdamW (engine_adamw.safetensors)
# --------------------------------------------------------------------------------------

def engine_adamw(fx):
    lr, wd, betas, eps, steps = 1e-3, 0.02, (0.9, 0.999), 1e-8, 3
    torch.manual_seed(seed_for("adamw"))

    class MLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Linear(6, 16)
            self.fc2 = torch.nn.Linear(16, 3)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x)))

    mlp = MLP()
    x = rand("adamw.x", 8, 6)
    y = rand("adamw.y", 8, 3)
    # The reference's grouping (optim_factory.py): 1-D and `.bias` without decay, [no_decay, decay].
    no_decay = [p for n, p in mlp.named_parameters() if p.ndim <= 1 or n.endswith(".bias")]
    decay = [p for n, p in mlp.named_parameters() if not (p.ndim <= 1 or n.endswith(".bias"))]
    opt = torch.optim.AdamW([{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": wd}],
                            lr=lr, betas=betas, eps=eps)
    for k, v in mlp.state_dict().items():
        fx.put(f"adamw.sd.{k}", v)
    fx.put("adamw.x", x)
    fx.put("adamw.y", y)
    fx.put("adamw.hparams", torch.tensor([lr, wd, betas[0], betas[1], eps, steps], dtype=torch.float64))
    losses = []
    for step in range(1, steps + 1):
        opt.zero_grad()
        loss = ((mlp(x) - y) ** 2).mean()
        loss.backward()
        if step == 1:  # well conditioned: the first update is ~lr*sign(g), so no tiny nonzero grads
            for n, p in mlp.named_parameters():
                nz = p.grad[p.grad != 0].abs()
                ratio = float(nz.min() / nz.max())
                if ratio < 1e-4:
                    raise RuntimeError(f"adamw fixture: {n} has a gradient {ratio:.1e} x its max; change the seed")
        losses.append(loss.item())
        opt.step()
        for k, v in mlp.state_dict().items():
            fx.put(f"adamw.step{step}.{k}", v)
    with torch.no_grad():
        losses.append(((mlp(x) - y) ** 2).mean().item())
    fx.put("adamw.losses", torch.tensor(losses, dtype=torch.float32))


# --------------------------------------------------------------------------------------
# section engine: the reference's LR schedule (engine_lr.safetensors)
# --------------------------------------------------------------------------------------

def find_official():
    for p in [os.environ.get("MEDSLIP_OFFICIAL_REPO", "")] + OFFICIAL_CANDIDATES:
        if p and os.path.isdir(p):
            return p
    return None


def load_official_scheduler(official, tmp):
    """`git show`s PreTrain_MeDSLIP/scheduler/*.py and the pretraining config into tmp; imports them."""
    import importlib
    import yaml

    def show(path):
        return subprocess.run(["git", "-C", official, "show", f"HEAD:{path}"], check=True, capture_output=True).stdout

    files = subprocess.run(["git", "-C", official, "ls-tree", "--name-only", "HEAD", "PreTrain_MeDSLIP/scheduler/"],
                           check=True, capture_output=True, text=True).stdout.split()
    pkg = os.path.join(tmp, "medslip_official_scheduler")
    os.makedirs(pkg)
    for f in files:
        with open(os.path.join(pkg, os.path.basename(f)), "wb") as out:
            out.write(show(f))
    sys.path.insert(0, tmp)
    try:
        mod = importlib.import_module("medslip_official_scheduler")
    finally:
        sys.path.remove(tmp)
    # The reference reads it with ruamel (YAML 1.2), where `1e-4` is a float; PyYAML (YAML 1.1) would
    # make it a string, so teach SafeLoader the 1.2 float syntax.
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(
        r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))
    cfg = yaml.load(show("PreTrain_MeDSLIP/configs/Pretrain_MeDSLIP.yaml"), Loader=Loader)
    for k in ("lr", "min_lr", "warmup_lr"):
        if not isinstance(cfg["schedular"][k], float):
            raise TypeError(f"config schedular.{k} = {cfg['schedular'][k]!r}: expected a float")
    commit = subprocess.run(["git", "-C", official, "rev-parse", "HEAD"], check=True, capture_output=True,
                            text=True).stdout.strip()
    return mod.create_scheduler, cfg, commit


class AttrDict(dict):  # the reference's utils.AttrDict
    def __getattr__(self, k):
        try:
            return self[k]
        except KeyError:
            raise AttributeError(k)


def simulate_lr(create_scheduler, optimizer_cfg, sched_cfg, iters_per_epoch, epochs, record):
    """train_MeDSLIP.py's loop (l.351-353 and l.88-140) with the model step removed: returns
    (epoch, iter, lr) for the update of each recorded iteration; record(epoch, i) selects them."""
    p = torch.nn.Parameter(torch.zeros(2, 2))
    b = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([{"params": [b], "weight_decay": 0.0},
                             {"params": [p], "weight_decay": optimizer_cfg["weight_decay"]}], lr=optimizer_cfg["lr"])
    lr_scheduler, _ = create_scheduler(AttrDict(sched_cfg), opt)
    warmup_steps = sched_cfg["warmup_epochs"]
    step_size = 100
    warmup_iterations = warmup_steps * step_size
    rows = []
    for epoch in range(0, epochs):
        if epoch > 0:
            lr_scheduler.step(epoch + warmup_steps)
        n = iters_per_epoch(epoch)
        for i in range(n):
            lrs = [g["lr"] for g in opt.param_groups]
            assert lrs[0] == lrs[1]
            if record(epoch, i, n):
                rows.append((epoch, i, lrs[0]))
            # (zero_grad, forward, backward, optimizer.step() happen here with lr = lrs)
            if epoch == 0 and i % step_size == 0 and i <= warmup_iterations:
                lr_scheduler.step(i // step_size)
    return rows


def engine_lr(fx, official):
    create_scheduler, cfg, commit = load_official_scheduler(official, fx.tmp)
    opt_cfg, sched = cfg["optimizer"], cfg["schedular"]
    print(f"  LR schedule simulated with the official scheduler at {commit[:12]}: {sched}")

    def put(name, sched_cfg, rows):
        fx.put(f"{name}.epoch", torch.tensor([r[0] for r in rows], dtype=torch.int64))
        fx.put(f"{name}.iter", torch.tensor([r[1] for r in rows], dtype=torch.int64))
        fx.put(f"{name}.lr", torch.tensor([r[2] for r in rows], dtype=torch.float64))
        # LrSchedule fields: lr, lr_min, warmup_lr_init, t_initial, warmup_t
        fx.put(f"{name}.config", torch.tensor([sched_cfg["lr"], sched_cfg["min_lr"], sched_cfg["warmup_lr"],
                                               sched_cfg["epochs"], sched_cfg["warmup_epochs"]], dtype=torch.float64))

    # The pretraining config: every update of 3 epochs of 650 iterations, then the first,
    # a middle and the last iteration of epochs 3..99.
    rows = simulate_lr(create_scheduler, opt_cfg, sched, lambda e: 650, sched["epochs"],
                       lambda e, i, n: e < 3 or i in (0, n // 2, n - 1))
    put("lr_pretrain", sched, rows)
    # Epoch 0 shorter than the 500 warmup iterations: warmup is cut at step 3, epoch 1 jumps to cosine.
    rows = simulate_lr(create_scheduler, opt_cfg, sched, lambda e: 350, 4, lambda e, i, n: True)
    put("lr_short_epoch", sched, rows)
    # A small config (as a demo would use): 2 warmup steps, 4 cosine epochs, then lr_min past the cycle.
    small = dict(sched, lr=1e-3, epochs=4, min_lr=1e-6, warmup_lr=1e-6, warmup_epochs=2)
    rows = simulate_lr(create_scheduler, dict(opt_cfg, lr=1e-3), small, lambda e: 250, 8, lambda e, i, n: True)
    put("lr_small", small, rows)
    fx.meta_note = f"official commit {commit}"


# --------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------

def make_engine(outdir):
    setup_torch()
    fx = Fixture("engine")
    engine_ops(fx)
    fx.save(outdir, "engine_ops.safetensors", "per-op parity cases for tests/engine/parity.cpp")
    fx = Fixture("engine")
    engine_conv(fx)
    fx.save(outdir, "engine_conv.safetensors", "conv2d, pooling and conv+BN block, tests/engine/parity.cpp")
    fx = Fixture("engine")
    engine_finetune(fx)
    fx.save(outdir, "engine_finetune.safetensors", "conv_transpose2d, DiceBCE loss and a U-Net up-block "
            "(spec E.6), tests/engine/parity.cpp")
    fx = Fixture("engine")
    engine_mha(fx)
    fx.save(outdir, "engine_mha.safetensors", "nn.MultiheadAttention, tests/engine/parity.cpp")
    fx = Fixture("engine")
    engine_adamw(fx)
    fx.save(outdir, "engine_adamw.safetensors", "three AdamW steps, tests/engine/parity.cpp")
    official = find_official()
    if official is None:
        print("  WARNING: official MeDSLIP repository not found (--official-repo / $MEDSLIP_OFFICIAL_REPO); "
              "keeping engine_lr.safetensors as it is")
        return
    fx = Fixture("engine")
    with tempfile.TemporaryDirectory(prefix="medslip_sched_") as tmp:
        fx.tmp = tmp
        engine_lr(fx, official)
    fx.save(outdir, "engine_lr.safetensors", "LR schedule of spec D, " + fx.meta_note)


SECTIONS = {
    "engine": make_engine,
}


def standalone_scripts():
    """tests/make_fixtures_NAME.py -> {NAME: path}"""
    out = {}
    for p in sorted(glob.glob(os.path.join(HERE, "make_fixtures_*.py"))):
        out[os.path.basename(p)[len("make_fixtures_"):-3]] = p
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", metavar="SECTION", help="one section (" + ", ".join(SECTIONS) +
                    ") or the NAME of a standalone tests/make_fixtures_NAME.py")
    ap.add_argument("--out", default=DEFAULT_OUT, help="output folder for sections (default tests/fixtures)")
    ap.add_argument("--official-repo", default=None, help="clone/mirror of Shef-AIRE/MeDSLIP (engine LR schedule)")
    ap.add_argument("--list", action="store_true", help="list sections and standalone scripts")
    args = ap.parse_args()
    scripts = standalone_scripts()
    if args.list:
        print("sections:", ", ".join(SECTIONS))
        print("standalone:", ", ".join(f"{k} ({os.path.relpath(v)})" for k, v in scripts.items()))
        return 0
    os.makedirs(args.out, exist_ok=True)
    if args.official_repo:  # read by the sections (and standalone scripts) that need the original code
        os.environ["MEDSLIP_OFFICIAL_REPO"] = args.official_repo

    def run_section(name):
        print(f"[{name}]", flush=True)
        SECTIONS[name](args.out)

    def run_script(name):
        print(f"[{name}] {os.path.relpath(scripts[name])}", flush=True)
        r = subprocess.run([sys.executable, scripts[name]], cwd=os.path.dirname(HERE))
        return r.returncode == 0

    if args.only:
        if args.only in SECTIONS:
            run_section(args.only)
        elif args.only in scripts:
            if not run_script(args.only):
                return 1
        else:
            ap.error(f"--only {args.only}: unknown; sections are {list(SECTIONS)}, scripts {list(scripts)}")
        return 0
    for name in SECTIONS:
        run_section(name)
    failed = [name for name in scripts if not run_script(name)]  # the others still run
    if failed:
        print(f"FAILED: {', '.join(os.path.relpath(scripts[n]) for n in failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
