#!/usr/bin/env python3
"""Make tests/fixtures/metrics.json: reference values for train/metrics.{h,cpp}.

Regenerate (from the repo root; Debian's python, which has torch and numpy):

    apt-get install -y python3-sklearn          # scikit-learn 1.2.1 (Debian bookworm)
    /usr/bin/python3 tests/make_fixtures_metrics.py

Pinned: scikit-learn 1.2.1 (the script refuses another version, since precision_recall_curve
changed in 1.1 and may change again). The MeDSLIP reference pins scikit-learn==1.0.2, whose
precision_recall_curve stops at the first full-recall threshold; it is re-derived below
(pr_curve_sklearn_1_0) from the 1.0.x source (the lines removed by scikit-learn PR #23214).

Classification cases: scores/labels, sklearn roc_auc_score (null where sklearn raises), the PR
curve of sklearn 1.2.1 and of 1.0.2, and the reference's max-F1 / threshold / ACC computed with
the few lines of Sample_zero-shot_Classification_CXR14/test.py (l.226-241) on each curve.
Grounding cases: random 14x14 float32 heatmaps, labels and GT boxes run through the reference's
normalisation, ×16 nearest upsampling and score_cal (Sample_Zero-Shot_Grounding_RSNA/test.py
l.106-135, l.266-280), with per-batch normalisation (the reference) and per-image (our default).
NaN is written as null (JSON has no NaN).
"""
import json
import os
import sys

import numpy as np
import sklearn
import torch
from sklearn.metrics import accuracy_score, precision_recall_curve, roc_auc_score

SKLEARN_VERSION = "1.2.1"
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "metrics.json")


def pr_curve_sklearn_1_0(y_true, y_score):
    """scikit-learn 1.0.x precision_recall_curve (binary, no weights), via 1.2's _binary_clf_curve."""
    from sklearn.metrics._ranking import _binary_clf_curve
    fps, tps, thresholds = _binary_clf_curve(y_true, y_score)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = tps / (tps + fps)
        precision[np.isnan(precision)] = 0
        recall = tps / tps[-1]
    # stop when full recall attained and reverse the outputs so recall is decreasing
    last_ind = tps.searchsorted(tps[-1])
    sl = slice(last_ind, None, -1)
    return np.r_[precision[sl], 1], np.r_[recall[sl], 0], thresholds[sl]


def reference_f1_acc(gt_np, pred_np, curve):
    """MeDSLIP test.py: max-F1 over the PR curve, its threshold, ACC at score > threshold."""
    precision, recall, thresholds = curve
    numerator = 2 * recall * precision
    denom = recall + precision
    f1_scores = np.divide(numerator, denom, out=np.zeros_like(denom), where=(denom != 0))
    max_f1 = np.max(f1_scores)
    max_f1_thresh = thresholds[np.argmax(f1_scores)]
    acc = accuracy_score(gt_np, pred_np > max_f1_thresh)
    return float(max_f1), float(max_f1_thresh), float(acc)


def nan_to_none(a):
    return [None if np.isnan(v) else float(v) for v in np.asarray(a, dtype=np.float64)]


def classification_case(name, score, label):
    # The reference holds scores and labels as float32 numpy arrays (torch FloatTensor).
    score = np.asarray(score, dtype=np.float32)
    label = np.asarray(label, dtype=np.float32)
    case = {"name": name, "score": [float(v) for v in score], "label": [int(v) for v in label]}
    two_classes = 0 < label.sum() < len(label)
    case["auc"] = float(roc_auc_score(label, score)) if two_classes else None
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        curves = {"v1_1": precision_recall_curve(label, score), "v1_0": pr_curve_sklearn_1_0(label, score)}
    for key, (p, r, t) in curves.items():
        case["pr_" + key] = {"precision": nan_to_none(p), "recall": nan_to_none(r), "thresholds": nan_to_none(t)}
        if two_classes:
            f1, thr, acc = reference_f1_acc(label, score, (p, r, t))
            case["ref_" + key] = {"f1": f1, "threshold": thr, "acc": acc}
    if two_classes:
        assert case["ref_v1_0"] == case["ref_v1_1"], name  # same max-F1 point in both versions
    return case


def classification_cases(rng):
    cases = []
    n = 300
    lab = (rng.random(n) < 0.5).astype(int)
    cases.append(classification_case("ties_balanced", np.round(rng.random(n) * 0.7 + 0.3 * lab, 2), lab))
    n = 400
    lab = (rng.random(n) < 0.06).astype(int)
    lab[17] = 1
    cases.append(classification_case("ties_imbalanced", np.round(rng.random(n) * 0.8 + 0.2 * lab, 2), lab))
    # Realistic float32 softmax probabilities (few exact ties), imbalanced.
    n = 300
    lab = (rng.random(n) < 0.15).astype(int)
    logit = rng.normal(size=n) + 1.2 * lab
    prob = (1 / (1 + np.exp(-logit))).astype(np.float32)
    cases.append(classification_case("float32_probs", prob, lab))
    cases.append(classification_case("few_levels", rng.choice([0.1, 0.2, 0.3], size=60),
                                     (rng.random(60) < 0.4).astype(int)))
    cases.append(classification_case("all_equal", np.full(20, 0.5), [0, 1] * 10))
    cases.append(classification_case("all_equal_one_pos", np.full(9, 0.25), [0] * 4 + [1] + [0] * 4))
    s = np.linspace(0.05, 0.95, 30)
    cases.append(classification_case("perfect", s, (s > 0.6).astype(int)))
    cases.append(classification_case("inverted", s, (s < 0.4).astype(int)))
    s = np.round(rng.random(50), 2)
    lab = np.zeros(50, int)
    lab[int(np.argsort(s)[25])] = 1
    cases.append(classification_case("one_positive_middle", s, lab))
    lab = np.ones(50, int)
    lab[int(np.argsort(s)[10])] = 0
    cases.append(classification_case("one_negative", s, lab))
    lab = np.zeros(50, int)
    lab[int(np.argmax(s))] = 1
    cases.append(classification_case("one_positive_top", s, lab))
    cases.append(classification_case("two_samples", [0.3, 0.7], [1, 0]))
    # Positive tied with the top negatives (threshold at a tie, ACC counts it negative).
    cases.append(classification_case("tie_at_top", [0.9, 0.9, 0.9, 0.5, 0.2, 0.1], [1, 0, 0, 1, 0, 0]))
    # Negative scores and zeros (decision-function style).
    cases.append(classification_case("negative_scores", [-2.0, -0.0, 0.0, 1.5, -1.0, 3.0, 0.0], [0, 1, 0, 1, 0, 1, 1]))
    # One class only: AUC undefined (sklearn raises), curves still defined.
    cases.append(classification_case("no_positive", np.round(rng.random(12), 1), [0] * 12))
    cases.append(classification_case("no_negative", np.round(rng.random(12), 1), [1] * 12))
    return cases


def score_cal(labels, seg_map, pred_map, threshold=0.005):
    """MeDSLIP Sample_Zero-Shot_Grounding_RSNA/test.py score_cal (l.106-135)."""
    device = labels.device
    total_num = torch.sum(labels)
    mask = (labels == 1).squeeze()
    seg_map = seg_map[mask, :, :].reshape(total_num, -1)
    pred_map = pred_map[mask, :, :].reshape(total_num, -1)
    one_hot_map = pred_map > threshold
    dot_product = (seg_map * one_hot_map).reshape(total_num, -1)
    max_number = torch.max(pred_map, dim=-1)[0]
    point_score = 0
    for i, number in enumerate(max_number):
        temp_pred = (pred_map[i] == number).type(torch.int)
        flag = int((torch.sum(temp_pred * seg_map[i])) > 0)
        point_score = point_score + flag
    mass_score = torch.sum(dot_product, dim=-1) / (
        (torch.sum(seg_map, dim=-1) + torch.sum(one_hot_map, dim=-1)) - torch.sum(dot_product, dim=-1))
    dice_score = 2 * (torch.sum(dot_product, dim=-1)) / (torch.sum(seg_map, dim=-1) + torch.sum(one_hot_map, dim=-1))
    return total_num, point_score, mass_score.to(device), dice_score.to(device)


def grounding_batch(rng, B, levels=None):
    """B heatmaps [B,196] float32, labels [B], boxes per image (x, y, w, h) in 224 px."""
    # attention-like: small positive values, a different scale per image (so per-batch and
    # per-image normalisation differ)
    heat = (rng.random((B, 196)) * rng.uniform(0.005, 0.02, size=(B, 1))).astype(np.float32)
    if levels:  # few distinct values: ties at the max
        heat = (np.floor(heat / heat.max() * levels) / levels * np.float32(0.02)).astype(np.float32)
    labels = (rng.random(B) < 0.6).astype(int)
    labels[0] = 1
    boxes = []
    for b in range(B):
        bx = []
        if labels[b]:
            for _ in range(int(rng.integers(1, 3))):
                w, h = int(rng.integers(8, 120)), int(rng.integers(8, 120))
                bx.append([int(rng.integers(0, 224 - w)), int(rng.integers(0, 224 - h)), w, h])
        boxes.append(bx)
    return heat, labels, boxes


def grounding_case(name, batch_set, batches, threshold, norm):
    totals, hits, ious, dices = 0, 0, [], []
    for heat, labels, boxes in batches:
        B = len(labels)
        seg = np.zeros((B, 224, 224))  # float64, like the reference's seg_map
        for b, bx in enumerate(boxes):
            for x, y, w, h in bx:
                seg[b, y:y + h, x:x + w] = 1
        pred = torch.from_numpy(heat.copy())
        if norm == "per_batch":
            pred = pred / torch.max(pred)  # test.py l.266
        else:
            pred = pred / torch.max(pred, dim=1, keepdim=True)[0]
        pred = pred.reshape(B, 14, 14).numpy()
        pred = torch.from_numpy(pred.repeat(16, axis=1).repeat(16, axis=2))
        lab = torch.from_numpy(labels.reshape(B, 1))
        t, p, m, d = score_cal(lab, torch.from_numpy(seg), pred, threshold=threshold)
        totals += int(t)
        hits += int(p)
        ious += [float(v) for v in m]
        dices += [float(v) for v in d]
    return {
        "name": name, "batch_set": batch_set, "threshold": float(np.float32(threshold)), "norm": norm,
        "positives": totals, "hits": hits, "pointing": hits / totals,
        "iou_per_image": ious, "dice_per_image": dices,
        "iou": float(np.mean(ious)), "dice": float(np.mean(dices)),
    }


def grounding_cases(rng):
    sets = {"mixed": [grounding_batch(rng, 4), grounding_batch(rng, 3, levels=3)],
            "ties": [grounding_batch(rng, 5, levels=2)]}
    # A threshold that float32 rounds up (0.1 -> 0.10000000149): a pixel exactly at float32(0.1) is
    # not > it in torch's float32 compare; plant such pixels.
    heat, labels, boxes = grounding_batch(rng, 3)
    heat = heat * np.float32(10)  # values in [0, 0.2)
    heat[:, 100] = 1.0  # per-image max exactly 1: normalised values are unchanged
    heat[:, :40] = np.float32(0.1)
    sets["edge"] = [(heat, labels, boxes)]
    cases = [
        grounding_case("per_batch_thr0", "mixed", sets["mixed"], 0.0, "per_batch"),
        grounding_case("per_batch_thr0.5", "mixed", sets["mixed"], 0.5, "per_batch"),
        grounding_case("per_image_thr0.5", "mixed", sets["mixed"], 0.5, "per_image"),
        grounding_case("ties_per_batch_thr0.01", "ties", sets["ties"], 0.01, "per_batch"),
        grounding_case("per_image_thr0.1_edge", "edge", sets["edge"], 0.1, "per_image"),
    ]
    json_sets = {k: [{"heat": [float(v) for v in h.ravel()], "labels": [int(v) for v in l], "boxes": bx}
                     for h, l, bx in v] for k, v in sets.items()}
    return json_sets, cases


def main():
    if sklearn.__version__ != SKLEARN_VERSION:
        sys.exit(f"scikit-learn {sklearn.__version__} found; the fixtures pin {SKLEARN_VERSION}")
    rng = np.random.default_rng(20240315)
    data = {
        "sklearn_version": sklearn.__version__, "numpy_version": np.__version__, "torch_version": torch.__version__,
        "classification": classification_cases(rng),
    }
    data["grounding_batches"], data["grounding"] = grounding_cases(rng)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(data, f, separators=(",", ":"))
    print(f"wrote {OUT} ({os.path.getsize(OUT) / 1024:.1f} KB): {len(data['classification'])} classification, "
          f"{len(data['grounding'])} grounding cases")
    for c in data["classification"]:
        print(f"  {c['name']:<22} n={len(c['score']):>4} auc={c['auc']} ref={c.get('ref_v1_0')} "
              f"pts v1_0={len(c['pr_v1_0']['thresholds'])} v1_1={len(c['pr_v1_1']['thresholds'])}")
    for g in data["grounding"]:
        print(f"  {g['name']:<26} pos={g['positives']} pointing={g['pointing']:.4f} iou={g['iou']:.6f} "
              f"dice={g['dice']:.6f}")


if __name__ == "__main__":
    main()
