#!/usr/bin/env python3
"""Time the ORIGINAL MeDSLIP PyTorch model on a synthetic batch, for `make bench`.

Needs Debian's python3 with torch, torchvision, numpy and yaml (/usr/bin/python3 here) and
a git clone of github.com/Shef-AIRE/MeDSLIP (a bare clone is enough). No code of the
original is in this repository: at run time its model files and pretraining config are
read with `git show` from the clone into a temporary package and imported unmodified.
Only `transformers` is replaced (offline: the Bio_ClinicalBERT books become fixed N(0,1)
vectors, which changes no cost of the image side), and `einops` / `sklearn` when absent.

    /usr/bin/python3 tests/bench_torch.py --repo CLONE --backbone resnet50 --batch 8
    /usr/bin/python3 tests/bench_torch.py --repo CLONE --mode infer --batch 16
    make bench OFFICIAL=CLONE          # times this and medslip one process at a time (A/B rounds)

A step is what the original training loop does per batch (zero_grad, forward with
is_train=True, backward of the total loss, AdamW step; dropout on, BatchNorm in train
mode); `--mode infer` is model.eval() + no_grad forward with is_train=False.
`--serve` speaks the protocol of `medslip bench`: it reads "step" / "quit" lines on stdin
and answers each with one line "@bench {json}" on stdout.
"""

import argparse
import contextlib
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import types
import warnings

import numpy as np
import torch

MODEL_FILES = ["__init__.py", "transformer.py", "model_MeDSLIP.py"]
MODEL_DIR = "PreTrain_MeDSLIP/models"
CONFIG_PATH = "PreTrain_MeDSLIP/configs/Pretrain_MeDSLIP.yaml"
N_ANATOMY, N_PATHOLOGY, TEXT_WIDTH = 51, 75, 768


def read_official(repo, rev, path):
    """A file of the original at `rev`: `git show` from a clone, or straight from a plain
    checkout (a folder holding PreTrain_MeDSLIP/...; for machines without git)."""
    if os.path.isfile(os.path.join(repo, path)) and not os.path.isdir(os.path.join(repo, ".git")) and \
            not os.path.isfile(os.path.join(repo, "HEAD")):
        with open(os.path.join(repo, path), "rb") as f:
            return f.read()
    return git(repo, "show", f"{rev}:{path}")


def git(repo, *args):
    return subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True).stdout


def install_stubs(bert_seed):
    """Offline stand-ins for the imports that cannot run here."""
    class Out:
        def __init__(self, h):
            self.last_hidden_state = h

    class FakeBert:
        def __init__(self):
            self.gen = torch.Generator().manual_seed(bert_seed)

        def to(self, *a, **k):
            return self

        def __call__(self, input_ids=None, attention_mask=None, **kw):
            n, length = input_ids.shape
            return Out(torch.randn(n, length, TEXT_WIDTH, generator=self.gen))

    tf = types.ModuleType("transformers")
    tf.AutoModel = type("AutoModel", (), {"from_pretrained": staticmethod(lambda *a, **k: FakeBert())})
    sys.modules["transformers"] = tf
    try:
        import einops  # noqa: F401
    except ImportError:
        ein = types.ModuleType("einops")

        def rearrange(t, pattern, **sizes):  # the three patterns model_MeDSLIP.py uses
            if pattern == "b d n1 n2 -> b (n1 n2) d":
                return t.flatten(2).permute(0, 2, 1)
            if pattern == "b n d -> (b n) d":
                return t.reshape(-1, t.shape[-1])
            if pattern == "(b n) d -> b n d":
                return t.reshape(sizes["b"], -1, t.shape[-1])
            raise ValueError("einops stub: unsupported pattern " + pattern)

        ein.rearrange = rearrange
        sys.modules["einops"] = ein
    try:
        import sklearn.metrics  # noqa: F401
    except ImportError:
        sk, skm = types.ModuleType("sklearn"), types.ModuleType("sklearn.metrics")
        skm.log_loss = None  # imported by the model file, never called
        sk.metrics = skm
        sys.modules["sklearn"], sys.modules["sklearn.metrics"] = sk, skm


def load_original(repo, rev, bert_seed):
    if not os.path.exists(repo):
        sys.exit(f"bench_torch.py: official repository {repo!r} not found (a clone of Shef-AIRE/MeDSLIP)")
    install_stubs(bert_seed)
    tmp = tempfile.mkdtemp(prefix="medslip_bench_orig_")
    pkg = os.path.join(tmp, "medslip_orig")
    os.makedirs(pkg)
    for name in MODEL_FILES:
        with open(os.path.join(pkg, name), "wb") as f:
            f.write(read_official(repo, rev, f"{MODEL_DIR}/{name}"))
    sys.path.insert(0, tmp)
    import importlib
    return importlib.import_module("medslip_orig.model_MeDSLIP")


def build(args):
    import yaml
    mod = load_original(args.repo, args.rev, args.bert_seed)
    cfg = yaml.safe_load(read_official(args.repo, args.rev, CONFIG_PATH))
    cfg["res_base_model"] = args.backbone
    books = [{"input_ids": torch.zeros(n, 128, dtype=torch.long),
              "attention_mask": torch.ones(n, 128, dtype=torch.long)} for n in (N_ANATOMY, N_PATHOLOGY)]
    torch.manual_seed(args.seed)
    # The model prints (and torchvision warns) while it is built: keep that off the
    # protocol's stdout and out of the bench table.
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = mod.MeDSLIP(cfg, books[0], books[1], mode="train")
    # The books are plain attributes (not buffers): module.to() leaves them, so move them too.
    model = model.to(args.device)
    model.anatomy_book = model.anatomy_book.to(args.device)
    model.pathology_book = model.pathology_book.to(args.device)
    # The original optimizer factory with weight decay: no decay for 1-D tensors and biases.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    opt = torch.optim.AdamW([{"params": no_decay, "weight_decay": 0.0},
                             {"params": decay, "weight_decay": 0.02}], lr=1e-4)
    return model, opt


def synthetic_batch(batch, res, seed):
    """N(0,1) images; per image 5 (anatomy, pathology) cells present, 20 absent, the rest
    unmentioned; labels and 8 partner indices by the dataset's rule (-1 = prototype slot).
    Matrix and labels are float64, as the original DataLoader delivers them."""
    rng = np.random.RandomState(seed)
    images = rng.standard_normal((batch, 3, res, res)).astype(np.float32)

    def lines(rows):
        labels = np.where((rows == 1).any(1), 1.0, np.where((rows == 0).any(1), 0.0, -1.0))
        index = np.empty((rows.shape[0], 8), dtype=np.int64)
        for r, row in enumerate(rows):
            cand = np.flatnonzero(row != 1)
            if labels[r] == 1:
                index[r] = [-1, *rng.choice(cand, 7, replace=False)]
            else:
                index[r] = rng.choice(cand, 8, replace=False)
        return labels, index

    mats, lp, ip, la, ia = [], [], [], [], []
    for _ in range(batch):
        m = np.full(N_ANATOMY * N_PATHOLOGY, -1.0)
        cells = rng.choice(m.size, 25, replace=False)
        m[cells[:5]], m[cells[5:]] = 1.0, 0.0
        m = m.reshape(N_ANATOMY, N_PATHOLOGY)
        a, b = lines(m.T)
        c, d = lines(m)
        mats.append(m), lp.append(a), ip.append(b), la.append(c), ia.append(d)
    t = torch.from_numpy
    return dict(images=t(images), matrix=t(np.stack(mats)), labels_pathology=t(np.stack(lp)),
                labels_anatomy=t(np.stack(la)), index_pathology=t(np.stack(ip)), index_anatomy=t(np.stack(ia)))


def forward(model, b, is_train):
    # The model writes into `matrix` (matrix[matrix < 1] = 0): give it a copy each step.
    return model(b["images"], labels_pathology=b["labels_pathology"], labels_anatomy=b["labels_anatomy"],
                 matrix=b["matrix"].clone(), sample_index_pathology=b["index_pathology"],
                 sample_index_anatomy=b["index_anatomy"], is_train=is_train, no_cl=False, exclude_class=False)


def make_step(model, opt, b, mode):
    if mode == "train":
        model.train()

        def step():
            opt.zero_grad()
            out = forward(model, b, True)
            out[0].backward()
            opt.step()
            return float(out[0])
    else:
        model.eval()

        def step():
            with torch.no_grad():
                out = forward(model, b, False)
            if torch.cuda.is_available() and b["images"].is_cuda:
                torch.cuda.synchronize()  # the outputs are not read back: wait for the kernels
            return float(out[0]) if torch.is_tensor(out[0]) and out[0].numel() == 1 else 0.0
    return step


def blas_info():
    libs = set()
    with open("/proc/self/maps") as f:
        for line in f:
            p = line.split()[-1]
            if re.search(r"blas|dnnl|mkl", p):
                libs.add(os.path.basename(p))
    core = None
    for lib in libs:
        if "openblas" in lib:
            try:
                import ctypes
                h = ctypes.CDLL(lib)
                h.openblas_get_corename.restype = ctypes.c_char_p
                core = h.openblas_get_corename().decode()
            except (OSError, AttributeError):  # not loadable, or a build without the symbol
                pass
    return {"libs": sorted(libs), "openblas_core": core, "mkldnn": torch.backends.mkldnn.is_available()}


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def peak_mib(device):
    """Host RSS on the CPU; on CUDA the caching allocator's peak of device memory."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 1048576.0
    return peak_rss_mib()


def reply(obj):
    sys.stdout.write("@bench " + json.dumps(obj) + "\n")
    sys.stdout.flush()


def thread_settings():
    """What this process runs with: torch's thread pools and the environment both sides inherit."""
    env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT",
                                          "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE", "MKL_NUM_THREADS")}
    backend = [line.strip() for line in torch.__config__.parallel_info().splitlines() if "parallel backend" in line]
    return {"torch": torch.__version__, "intra_op_threads": torch.get_num_threads(),
            "inter_op_threads": torch.get_num_interop_threads(), "backend": backend[0] if backend else None,
            "mkldnn": torch.backends.mkldnn.is_available(), "env": {k: v for k, v in env.items() if v is not None}}


def serve(step, init_s, device):
    reply({"event": "ready", "init_s": init_s, "torch": torch.__version__, "blas": blas_info(),
           "settings": thread_settings()})
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "step":
            w0, c0 = time.perf_counter(), time.process_time()
            loss = step()
            reply({"event": "step", "s": time.perf_counter() - w0, "cpu_s": time.process_time() - c0, "loss": loss})
        elif cmd == "quit":
            reply({"event": "done", "peak_mib": peak_mib(device)})
            return
        else:
            reply({"event": "error", "message": f"unknown command {cmd!r}"})


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", default=os.environ.get("MEDSLIP_OFFICIAL_REPO", ""), help="clone of Shef-AIRE/MeDSLIP")
    p.add_argument("--rev", default="HEAD")
    p.add_argument("--backbone", default="resnet50", choices=["resnet50", "resnet18"])
    p.add_argument("--res", type=int, default=224)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--mode", default="train", choices=["train", "infer"])
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--seed", type=int, default=0, help="torch seed for the weight init")
    p.add_argument("--data-seed", type=int, default=1)
    p.add_argument("--bert-seed", type=int, default=2)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="cuda: model and batch on the GPU (float32, TF32 off, cuDNN as PyTorch picks)")
    p.add_argument("--serve", action="store_true", help="answer medslip bench's step/quit lines on stdin")
    args = p.parse_args()
    if not args.repo:
        sys.exit("bench_torch.py: pass --repo PATH (a clone of Shef-AIRE/MeDSLIP) or set MEDSLIP_OFFICIAL_REPO")
    torch.set_num_threads(args.threads)
    if args.device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("bench_torch.py: --device cuda but torch sees no GPU")
        torch.backends.cuda.matmul.allow_tf32 = False  # float32 products, as ours without --tf32
        torch.backends.cudnn.allow_tf32 = False
    t0 = time.perf_counter()
    model, opt = build(args)
    b = {k: v.to(args.device) for k, v in synthetic_batch(args.batch, args.res, args.data_seed).items()}
    step = make_step(model, opt, b, args.mode)
    if args.serve:
        try:
            serve(step, time.perf_counter() - t0, args.device)
        except Exception as e:  # report, so the driver can name the failure
            reply({"event": "error", "message": f"{type(e).__name__}: {e}"})
            raise
        return
    times = []
    for i in range(args.warmup + args.steps):
        w0 = time.perf_counter()
        loss = step()
        dt = time.perf_counter() - w0
        print(f"step {i}{' (warm-up)' if i < args.warmup else ''}: {dt:.3f} s, loss {loss:.5f}", file=sys.stderr)
        if i >= args.warmup:
            times.append(dt)
    med = statistics.median(times)
    print(json.dumps({"backbone": args.backbone, "res": args.res, "batch": args.batch, "mode": args.mode,
                      "threads": args.threads, "median_s": med, "min_s": min(times), "max_s": max(times),
                      "img_per_s": args.batch / med, "device": args.device, "peak_mib": peak_mib(args.device), "torch": torch.__version__,
                      "blas": blas_info()}, indent=1))


if __name__ == "__main__":
    main()
