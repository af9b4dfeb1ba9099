#!/usr/bin/python3
"""Parity fixtures for model/bert.cpp and model/books.cpp (tests/model/bert.cpp).

Writes tests/fixtures/bert_tiny/ — a SMALL randomly initialised Hugging Face BertModel folder
(2 layers, hidden 32, 4 heads, intermediate 64) with
  config.json, vocab.txt (no tokenizer_config.json: lower-casing is the default, as for
  Bio_ClinicalBERT, spec A.1), model.safetensors (BertModel names, pooler included) and
  pytorch_model.bin (torch.save zip; BertForMaskedLM-style "bert." prefix, legacy LayerNorm
  gamma/beta names, a "cls.predictions.bias" head and the position_ids buffer — all of which the
  loader must map or ignore, as HF from_pretrained does);
and beside it
  bert_descriptions.json   75 made-up observation descriptions, keys in spec C.1 order
  bert_cases.json          test sentences, max_length, HF token ids and attention masks
  bert_expected.safetensors  last_hidden_state [N,L,32] for the sentences (padded, one truncated),
                           and the books: pathology_book_{64,128} [75,32], anatomy_book_{64,128} [51,32]
The vocab is the first 3000 entries of ../shared/data/vocab/bert-base-uncased-vocab.txt plus every
word-piece the fixture texts need (so WordPiece splits them exactly as with the full vocab) — the
full 30,522-row embedding would be too large to commit.

With --minilm DIR (a folder made by weights/install_text_encoder.sh) it also writes
bert_minilm_cls.safetensors: the [CLS] rows of the real all-MiniLM-L6-v2 for a few sentences at
max_length 64, checked by the test when weights/text_encoder/ is installed.

transformers 4.57 (installed for Debian's python) refuses torch 1.13, so the reference model runs
under transformers 4.30.2 kept in a side directory (the system install is left alone):
  /usr/bin/python3 -m pip install --no-deps --target /tmp/medslip_tf430 transformers==4.30.2 tokenizers==0.13.3
  PYTHONPATH=/tmp/medslip_tf430 /usr/bin/python3 tests/make_fixtures_bert.py [--minilm weights/text_encoder]
Run from the repository root. Deterministic (torch.manual_seed(0), float32, CPU).
"""
import argparse
import hashlib
import json
import os
import sys

import torch

try:
    import transformers
    from transformers import BertConfig, BertModel, BertTokenizer
    BertModel  # noqa: B018 — fails with transformers >= 4.36 on torch < 2.1 (lazy import)
except Exception as e:  # pragma: no cover
    sys.exit(f"needs a transformers that runs BertModel on this torch ({e}); see the docstring")

from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures")
TINY = os.path.join(FIX, "bert_tiny")
SHARED = os.environ.get("MEDSLIP_SHARED", os.path.join(ROOT, "..", "shared"))
FULL_VOCAB = os.path.join(SHARED, "data", "vocab", "bert-base-uncased-vocab.txt")

OBSERVATIONS = [
    "normal", "clear", "sharp", "sharply", "unremarkable", "intact", "stable", "free", "effusion", "opacity",
    "pneumothorax", "edema", "atelectasis", "tube", "consolidation", "process", "abnormality", "enlarge", "tip",
    "low", "pneumonia", "line", "congestion", "catheter", "cardiomegaly", "fracture", "air", "tortuous", "lead",
    "disease", "calcification", "prominence", "device", "engorgement", "picc", "clip", "elevation", "expand",
    "nodule", "wire", "fluid", "degenerative", "pacemaker", "thicken", "marking", "scar", "hyperinflate", "blunt",
    "loss", "widen", "collapse", "density", "emphysema", "aerate", "mass", "crowd", "infiltrate", "obscure",
    "deformity", "hernia", "drainage", "distention", "shift", "stent", "pressure", "lesion", "finding",
    "borderline", "hardware", "dilation", "chf", "redistribution", "aspiration", "tail_abnorm_obs", "excluded_obs"]
ANATOMIES = [
    "trachea", "left_hilar", "right_hilar", "hilar_unspec", "left_pleural", "right_pleural", "pleural_unspec",
    "heart_size", "heart_border", "left_diaphragm", "right_diaphragm", "diaphragm_unspec", "retrocardiac",
    "lower_left_lobe", "upper_left_lobe", "lower_right_lobe", "middle_right_lobe", "upper_right_lobe",
    "left_lower_lung", "left_mid_lung", "left_upper_lung", "left_apical_lung", "left_lung_unspec",
    "right_lower_lung", "right_mid_lung", "right_upper_lung", "right_apical_lung", "right_lung_unspec",
    "lung_apices", "lung_bases", "left_costophrenic", "right_costophrenic", "costophrenic_unspec",
    "cardiophrenic_sulcus", "mediastinal", "spine", "clavicle", "rib", "stomach", "right_atrium",
    "right_ventricle", "aorta", "svc", "interstitium", "parenchymal", "cavoatrial_junction", "cardiopulmonary",
    "pulmonary", "lung_volumes", "unspecified", "other"]

# Our own wording (not the official file). Mixed case, Unicode quotes and dashes, one long entry.
def descriptions():
    d = {name: f"The finding '{name.replace('_', ' ')}' is seen on the chest radiograph." for name in OBSERVATIONS}
    d["normal"] = "Normal lungs and heart; no acute cardiopulmonary process."
    d["sharply"] = "Sharply defined borders — the ‘sharp’ costophrenic angles are preserved."
    d["effusion"] = "Pleural effusion: fluid in the pleural space blunting the costophrenic angle."
    d["pneumothorax"] = "Air in the pleural space with a visible visceral pleural line and no lung markings beyond."
    d["tube"] = ("Tubes: endotracheal tube tip 4 cm above the carina, enteric tube coursing below the diaphragm "
                 "with its tip in the stomach, chest tube in the right pleural space, and a tracheostomy tube "
                 "in the midline; each device is followed to its tip, and malposition, kinking or a side port "
                 "above the gastroesophageal junction is reported to the referring clinician immediately.")
    d["cardiomegaly"] = "Enlarged cardiac silhouette, cardiothoracic ratio above 0.5 on a PA film."
    d["chf"] = "Congestive heart failure (CHF): cephalization, Kerley B lines, and bilateral effusions."
    d["excluded_obs"] = "Other mentions that are excluded from the observation list."
    return d


SENTENCES = [
    "It is located at left_hilar. ",
    "It is located at cardiophrenic_sulcus. ",
    "No acute cardiopulmonary abnormality.",
    "The heart is normal in size. The mediastinum is unremarkable. The lungs are clear.",
    "FINDINGS: Mild cardiomegaly, small RIGHT pleural effusion; no pneumothorax.",
    "Café-au-lait — ‘unusual’ text: x-ray 3.5cm nodule?",
    ("Interval placement of a left-sided PICC line with tip projecting over the cavoatrial junction. "
     "Persistent bibasilar opacities, likely atelectasis, though infection cannot be excluded."),
]
CASE_MAX_LENGTH = 24  # pads the short sentences, truncates the long ones


class AlbefBertTokenizer(BertTokenizer):
    """MeDSLIP's models/tokenization_bert.py: [CLS] + tokens, no trailing [SEP] (spec A.1)."""

    def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
        if token_ids_1 is None:
            return [self.cls_token_id] + token_ids_0
        return [self.cls_token_id] + token_ids_0 + [self.sep_token_id] + token_ids_1 + [self.sep_token_id]


def encode(tok, texts, max_length):
    enc = tok(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    # Cross-check the subclass against the rule written out by hand.
    for i, t in enumerate(texts):
        ids = ([tok.cls_token_id] + tok.convert_tokens_to_ids(tok.tokenize(t)))[:max_length]
        ids += [tok.pad_token_id] * (max_length - len(ids))
        assert enc["input_ids"][i].tolist() == ids, t
    return enc["input_ids"], enc["attention_mask"]


def build_vocab(texts):
    full = open(FULL_VOCAB, encoding="utf-8").read().split("\n")
    if full and full[-1] == "":
        full.pop()
    base = full[:3000]
    tok = BertTokenizer(FULL_VOCAB, do_lower_case=True)
    extra = []
    have = set(base)
    for t in texts:
        for piece in tok.tokenize(t):
            if piece not in have:
                have.add(piece)
                extra.append(piece)
    return base + extra


def randomise(model):
    # Well away from HF's N(0, 0.02) init so that attention is far from uniform and every
    # LayerNorm weight/bias matters (a swapped name would show).
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("LayerNorm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif p.dim() == 2 and "embeddings" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)


def cls_rows(model, tok, texts, max_length):
    ids, mask = encode(tok, texts, max_length)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0, :].contiguous()


def make_tiny():
    torch.manual_seed(0)
    desc = descriptions()
    anat = [f"It is located at {a}. " for a in ANATOMIES]
    vocab = build_vocab(SENTENCES + list(desc.values()) + anat)
    os.makedirs(TINY, exist_ok=True)
    vocab_path = os.path.join(TINY, "vocab.txt")
    with open(vocab_path, "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=128, type_vocab_size=2, layer_norm_eps=1e-12,
                     hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    model = BertModel(cfg, add_pooling_layer=True)
    randomise(model)
    model.eval()
    model.save_pretrained(TINY, safe_serialization=True)
    for stale in ("tokenizer_config.json", "special_tokens_map.json"):
        if os.path.exists(os.path.join(TINY, stale)):
            os.remove(os.path.join(TINY, stale))

    # pytorch_model.bin, BertForMaskedLM / TF-converted style.
    sd = {}
    for k, v in model.state_dict().items():
        k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        sd["bert." + k] = v.clone()
    sd["bert.embeddings.position_ids"] = torch.arange(cfg.max_position_embeddings).unsqueeze(0)
    sd["cls.predictions.bias"] = torch.randn(cfg.vocab_size)
    bin_only = os.path.join("/tmp", "medslip_bert_bin_only")
    os.makedirs(bin_only, exist_ok=True)
    torch.save(sd, os.path.join(TINY, "pytorch_model.bin"))

    tok = AlbefBertTokenizer(vocab_path)  # do_lower_case defaults to True, as for Bio_ClinicalBERT
    ids, mask = encode(tok, SENTENCES, CASE_MAX_LENGTH)
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state.contiguous()

    # The .bin must load in HF to the same model (honest fixture): folder with config + bin only.
    import shutil
    shutil.copy(os.path.join(TINY, "config.json"), bin_only)
    shutil.copy(os.path.join(TINY, "pytorch_model.bin"), bin_only)
    m2 = BertModel.from_pretrained(bin_only).eval()
    with torch.no_grad():
        h2 = m2(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.equal(h2, hidden), "pytorch_model.bin does not reload to the same BertModel"

    tensors = {"input_ids": ids.to(torch.int64), "attention_mask": mask.to(torch.int64), "last_hidden_state": hidden}
    desc_values = [desc[k] for k in OBSERVATIONS]
    for L in (64, 128):
        tensors[f"pathology_book_{L}"] = cls_rows(model, tok, desc_values, L)
        tensors[f"anatomy_book_{L}"] = cls_rows(model, tok, anat, L)
    n64 = sum(1 for t in desc_values if len(tok.tokenize(t)) + 1 > 64)
    n128 = sum(1 for t in desc_values if len(tok.tokenize(t)) + 1 > 128)
    assert n64 >= 1 and n128 == 0, (n64, n128)
    save_file(tensors, os.path.join(FIX, "bert_expected.safetensors"),
              metadata={"transformers": transformers.__version__, "torch": torch.__version__})
    with open(os.path.join(FIX, "bert_descriptions.json"), "w", encoding="utf-8") as f:
        json.dump(desc, f, ensure_ascii=False, indent=1)
    cases = {"max_length": CASE_MAX_LENGTH, "sentences": SENTENCES, "input_ids": ids.tolist(),
             "attention_mask": mask.tolist(), "tokens": [tok.tokenize(s) for s in SENTENCES],
             "descriptions_truncated_at_64": n64, "transformers": transformers.__version__}
    with open(os.path.join(FIX, "bert_cases.json"), "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=False, indent=1)
    print(f"bert_tiny: vocab {len(vocab)}, {sum(p.numel() for p in model.parameters())} params; "
          f"{len(SENTENCES)} sentences at max_length {CASE_MAX_LENGTH}; {n64} description(s) cut at 64")


MINILM_SENTENCES = [
    "It is located at left_hilar. ",
    "Pleural effusion: fluid in the pleural space blunting the costophrenic angle.",
    "No acute cardiopulmonary process.",
    "Enlarged cardiac silhouette.",
]


def make_minilm(folder):
    model = BertModel.from_pretrained(folder).eval()
    tok = AlbefBertTokenizer(os.path.join(folder, "vocab.txt"), do_lower_case=True)
    cls = cls_rows(model, tok, MINILM_SENTENCES, 64)
    sha = hashlib.sha256(open(os.path.join(folder, "model.safetensors"), "rb").read()).hexdigest()
    save_file({"cls": cls}, os.path.join(FIX, "bert_minilm_cls.safetensors"),
              metadata={"sentences": json.dumps(MINILM_SENTENCES), "max_length": "64", "weights_sha256": sha,
                        "transformers": transformers.__version__})
    print(f"bert_minilm_cls: {tuple(cls.shape)} from {folder} (sha256 {sha[:12]}…)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minilm", help="also write bert_minilm_cls.safetensors from this installed encoder folder")
    args = ap.parse_args()
    torch.set_num_threads(1)
    make_tiny()
    if args.minilm:
        make_minilm(args.minilm)
