#!/usr/bin/env python3
"""Model parity fixture and `medslip verify` constants, from the OFFICIAL MeDSLIP code.

Regenerate (needs Debian's python3 with torch, a built build/medslip, and a git clone of
github.com/Shef-AIRE/MeDSLIP — a bare clone is enough):

    /usr/bin/python3 tests/make_fixtures_model.py --repo PATH_TO_CLONE
    (or MEDSLIP_OFFICIAL_REPO=PATH make fixtures)

What it does:
1. `build/medslip verify --export DIR` writes the reference problem: a ResNet-18 MeDSLIP
   (64 px, batch 2, dropout 0) with weights, books and a batch drawn from our engine RNG.
2. The official model code is read out of the clone with `git show` into a temp dir and
   imported unmodified (nothing of it is committed). Only `transformers` is stubbed: the
   books are set to the exported tensors. `einops` is stubbed if absent.
3. The official model loads the exported weights (strict), runs one forward/backward in
   train mode (BatchNorm batch statistics, every dropout 0) and then 10 AdamW steps
   (groups [no_decay, decay], wd 0.02, lr 1e-4, as the reference's optimizer factory).
4. Writes tests/fixtures/model_r18_ref.safetensors (losses, logits, attention maps, and for
   every parameter its gradient norm plus 48 evenly spaced gradient entries — the full
   gradients would be 45 MB) and train/verify_reference.inc (the constants that
   `medslip verify` compiles in).
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import types

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MODEL_DIR = "PreTrain_MeDSLIP/models"
CONFIG_PATH = "PreTrain_MeDSLIP/configs/Pretrain_MeDSLIP.yaml"
GRAD_SAMPLES = 48


def git(repo, *args):
    return subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True).stdout


def st_read(path):
    from safetensors.numpy import load_file
    return load_file(path)


def rearrange(t, pattern, **sizes):
    """Minimal einops.rearrange for the two patterns the model uses."""
    lhs, rhs = [s.strip() for s in pattern.split("->")]
    if lhs == "b d n1 n2" and rhs == "b (n1 n2) d":
        b, d, n1, n2 = t.shape
        return t.reshape(b, d, n1 * n2).permute(0, 2, 1)
    if lhs == "b n d" and rhs == "(b n) d":
        return t.reshape(-1, t.shape[-1])
    if lhs == "(b n) d" and rhs == "b n d":
        return t.reshape(sizes["b"], -1, t.shape[-1])
    raise ValueError(pattern)


def load_official(repo):
    fake = types.ModuleType("transformers")

    class _Out:
        def __init__(self, h):
            self.last_hidden_state = h

    class _Bert:
        def to(self, *a, **k):
            return self

        def __call__(self, input_ids=None, attention_mask=None, **kw):
            return _Out(torch.zeros(input_ids.shape[0], input_ids.shape[1], 768))

    class AutoModel:
        @staticmethod
        def from_pretrained(*a, **k):
            return _Bert()

    fake.AutoModel = AutoModel
    sys.modules["transformers"] = fake
    try:
        import einops  # noqa: F401
    except ImportError:
        m = types.ModuleType("einops")
        m.rearrange = rearrange
        sys.modules["einops"] = m
    try:
        import sklearn.metrics  # noqa: F401
    except ImportError:
        sk, skm = types.ModuleType("sklearn"), types.ModuleType("sklearn.metrics")
        skm.log_loss = lambda *a, **k: None
        sk.metrics = skm
        sys.modules["sklearn"], sys.modules["sklearn.metrics"] = sk, skm
    tmp = tempfile.mkdtemp(prefix="medslip_official_")
    pkg = os.path.join(tmp, "medslip_official")
    os.makedirs(pkg)
    for name in ["__init__.py", "transformer.py", "model_MeDSLIP.py"]:
        with open(os.path.join(pkg, name), "wb") as f:
            f.write(git(repo, "show", f"HEAD:{MODEL_DIR}/{name}"))
    sys.path.insert(0, tmp)
    import importlib
    return importlib.import_module("medslip_official.model_MeDSLIP")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", default=os.environ.get("MEDSLIP_OFFICIAL_REPO", ""))
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "medslip"))
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--out", default=os.path.join(HERE, "fixtures", "model_r18_ref.safetensors"))
    ap.add_argument("--constants", default=os.path.join(ROOT, "train", "verify_reference.inc"))
    a = ap.parse_args()
    if not a.repo or not os.path.isdir(a.repo):
        sys.exit("need --repo PATH (a git clone of github.com/Shef-AIRE/MeDSLIP) or MEDSLIP_OFFICIAL_REPO")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_num_threads(1)

    work = tempfile.mkdtemp(prefix="medslip_ref_")
    subprocess.run([a.bin, "verify", "--export", work], check=True)
    w = st_read(os.path.join(work, "weights.safetensors"))
    books = st_read(os.path.join(work, "books.safetensors"))
    batch = st_read(os.path.join(work, "batch.safetensors"))

    import yaml
    mod = load_official(a.repo)
    cfg = yaml.safe_load(git(a.repo, "show", f"HEAD:{CONFIG_PATH}"))
    ours = yaml.safe_load(open(os.path.join(work, "config.yaml")))
    cfg["res_base_model"] = ours["res_base_model"]
    tok = {"input_ids": torch.zeros(1, 4, dtype=torch.long), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    model = mod.MeDSLIP(cfg, tok, tok, mode="train")
    model.pathology_book = torch.from_numpy(books["pathology_book"].copy())
    model.anatomy_book = torch.from_numpy(books["anatomy_book"].copy())
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if isinstance(m, torch.nn.MultiheadAttention):
            m.dropout = 0.0
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in w.items()}, strict=True)
    model.train()

    def inputs():
        return dict(images=torch.from_numpy(batch["image"].copy()),
                    labels_pathology=torch.from_numpy(batch["label_pathology"].astype(np.float64)),
                    labels_anatomy=torch.from_numpy(batch["label_anatomy"].astype(np.float64)),
                    matrix=torch.from_numpy(batch["matrix"].copy()),  # a fresh copy: the model mutates it
                    sample_index_pathology=torch.from_numpy(batch["index_pathology"].copy()),
                    sample_index_anatomy=torch.from_numpy(batch["index_anatomy"].copy()),
                    is_train=True)

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim == 1 or name.endswith(".bias") else decay).append(p)
    opt = torch.optim.AdamW([{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": 0.02}],
                            lr=a.lr)

    # Hooks on the heads and cross-attention give logits and attention maps of step 1.
    caught = {}
    hooks = [model.classifier_pathology.register_forward_hook(lambda m, i, o: caught.__setitem__("lp", o.detach())),
             model.classifier_anatomy.register_forward_hook(lambda m, i, o: caught.__setitem__("la", o.detach()))]
    for s in ("pathology", "anatomy"):
        for li, layer in enumerate(getattr(model, f"decoder_{s}").layers):
            hooks.append(layer.multihead_attn.register_forward_hook(
                lambda m, i, o, key=f"attn_{s}{li}": caught.__setitem__(key, o[1].detach())))

    losses = []
    fixture = {}
    for step in range(a.steps):
        opt.zero_grad()
        out = model(**inputs())
        out[0].backward()
        losses.append([float(x) for x in out])
        if step == 0:
            fixture["logits_pathology"] = caught["lp"].transpose(0, 1).contiguous().numpy()
            fixture["logits_anatomy"] = caught["la"].transpose(0, 1).contiguous().numpy()
            for s in ("pathology", "anatomy"):
                fixture[f"attn_{s}"] = np.stack([caught[f"attn_{s}{i}"].numpy() for i in range(4)])
            names = ["loss", "loss_ce_pathology", "loss_cl_pathology", "loss_ce_anatomy", "loss_cl_anatomy", "loss_ap"]
            for n, v in zip(names, out):
                fixture[n] = np.array(float(v), dtype=np.float32)
            for name, p in model.named_parameters():
                g = p.grad.detach().reshape(-1).numpy().astype(np.float32)
                n = g.size
                k = min(GRAD_SAMPLES, n)
                idx = np.array([(i * n) // k for i in range(k)], dtype=np.int64)
                fixture[f"gradidx.{name}"] = idx
                fixture[f"gradval.{name}"] = g[idx]
                fixture[f"gradnorm.{name}"] = np.array(np.linalg.norm(g.astype(np.float64)), dtype=np.float64)
        opt.step()
    for h in hooks:
        h.remove()

    from safetensors.numpy import save_file
    commit = git(a.repo, "rev-parse", "HEAD").decode().strip()
    today = datetime.date.today().isoformat()
    meta = {"official_commit": commit, "recorded": today, "torch": torch.__version__,
            "producer": "tests/make_fixtures_model.py"}
    fixture["trajectory_total"] = np.array([l[0] for l in losses], dtype=np.float32)
    save_file({k: np.ascontiguousarray(v) for k, v in fixture.items()}, a.out, metadata=meta)

    with open(a.constants, "w") as f:
        f.write("// Generated by tests/make_fixtures_model.py — do not edit. The official MeDSLIP model\n"
                f"// (Shef-AIRE/MeDSLIP {commit[:7]}, torch {torch.__version__}) run on the tensors that\n"
                "// `medslip verify --export` writes: 10 AdamW steps, lr 1e-4, dropout 0, BatchNorm train.\n")
        f.write(f'constexpr const char* kReferenceCommit = "{commit}";\n')
        f.write(f'constexpr const char* kReferenceRecorded = "{today}";\n')
        f.write(f'constexpr const char* kReferenceTorch = "{torch.__version__}";\n')
        f.write("// per step: loss, loss_ce_pathology, loss_cl_pathology, loss_ce_anatomy, loss_cl_anatomy, loss_ap\n")
        f.write(f"constexpr double kReferenceLosses[{len(losses)}][6] = {{\n")
        for l in losses:
            f.write("    {" + ", ".join(f"{x:.9g}" for x in l) + "},\n")
        f.write("};\n")
    print(json.dumps({"losses_step1": losses[0], "trajectory": [l[0] for l in losses], "out": a.out,
                      "constants": a.constants}, indent=1))


if __name__ == "__main__":
    main()
