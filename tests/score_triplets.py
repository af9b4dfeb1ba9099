#!/usr/bin/env python3
"""Independent re-scoring of `medslip triplets` against MeSH terms.

Reads triplets.jsonl (what the extractor found, per report) and the reports csv (the MeSH
`mesh_major` terms), maps the terms with the same table (data/report_mesh.tsv) and recomputes,
without any C++ code: per concept TP/FP/FN, precision/recall/F1 of "present", macro-F1 over
concepts with >= 20 positives, the share of MeSH-"normal" reports with no finding present, and
anatomy attachment (exact landmark and side). Only the full extraction mode is in
triplets.jsonl, so only that mode is re-scored.

  python3 tests/score_triplets.py --out DIR --reports iu_xray_reports.csv [--table data/report_mesh.tsv]
      [--heldout-above 2000] [--compare DIR/eval.json] [--examples CONCEPT --set development]

--compare exits 1 unless every count equals the C++ evaluation's (eval.json).
--examples prints false positives / negatives of one concept (use the development set).
"""
import argparse
import csv
import json
import sys

FINDING_COLUMNS = range(8, 74)  # spec C.1: 0-7 normal words, 74 excluded_obs are no findings
ANATOMIES = None


def read_table(path):
    obs_rows, zones = [], []
    for ln, line in enumerate(open(path, encoding="utf-8"), 1):
        line = line.rstrip("\r\n")
        if not line or line.startswith("#"):
            continue
        c = line.split("\t")
        if c[0] == "obs" and len(c) == 5:
            alts = []
            for a in c[3].split("|"):
                name, _, rows = a.partition("@")
                alts.append((name, tuple(rows.split("+")) if rows else ()))
            obs_rows.append({"heading": c[1].strip().lower(), "qual": c[2].strip().lower(),
                             "alts": alts, "concept": alts[0][0], "zone": c[4].strip().lower()})
        elif c[0] == "zone" and len(c) == 5:
            zones.append((c[1].strip().lower(), c[2], c[3], c[4]))
        else:
            sys.exit(f"{path}:{ln}: bad row")
    return obs_rows, zones


def gold_of(cell, obs_rows, zones):
    """concept -> set of landmark names; None when the report is not indexed."""
    cell = cell.strip().lower()
    if not cell or cell == "no indexing":
        return None, False
    out = {}
    for term in cell.split("|"):
        parts = [p.strip() for p in term.split("/")]
        heading, quals = parts[0], parts[1:]
        for r in obs_rows:
            if r["heading"] != heading or not (r["qual"] == "*" or r["qual"] in quals):
                continue
            lm = out.setdefault(r["concept"], set())
            zone = next((z for z in zones if z[0] in quals), None)
            if zone is None and r["zone"] != "-":
                zone = next((z for z in zones if z[0] == r["zone"]), None)
            if zone:
                left, right = "left" in quals, "right" in quals
                name = zone[1] if left and not right else zone[2] if right and not left else zone[3]
                if name != "-":
                    lm.add(name)
    return out, cell == "normal"


def side(name):
    return "L" if "left" in name else "R" if "right" in name else "B"


def prf(tp, fp, fn):
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else 0.0
    return p, r, f


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, help="folder written by medslip triplets")
    ap.add_argument("--reports", required=True)
    ap.add_argument("--table", default="data/report_mesh.tsv")
    ap.add_argument("--id-column", default="report_id")
    ap.add_argument("--mesh-column", default="mesh_major")
    ap.add_argument("--heldout-above", type=int, default=2000)
    ap.add_argument("--compare", help="eval.json of the C++ evaluation")
    ap.add_argument("--examples", help="print FP/FN reports of this concept")
    ap.add_argument("--set", default="development", choices=["development", "heldout"])
    a = ap.parse_args()

    obs_rows, zones = read_table(a.table)
    alts = {}
    for r in obs_rows:
        for alt in r["alts"]:
            alts.setdefault(r["concept"], [])
            if alt not in alts[r["concept"]]:
                alts[r["concept"]].append(alt)
    rows = {row[a.id_column]: row for row in csv.DictReader(open(a.reports, encoding="utf-8"))}
    obs_index = None
    sets = {"development": {}, "heldout": {}}
    for s in sets.values():
        s.update(reports=0, normal=0, clean=0, pos={}, cnt={}, anat={}, side={})
    for line in open(f"{a.out}/triplets.jsonl", encoding="utf-8"):
        rep = json.loads(line)
        row = rows[rep["id"]]
        gold, normal = gold_of(row[a.mesh_column], obs_rows, zones)
        if gold is None:
            continue
        S = sets["heldout" if int(rep["id"]) > a.heldout_above else "development"]
        S["reports"] += 1
        present = {(t["anatomy"], t["observation"]) for t in rep["triplets"] if t["exists"] == 1}
        for c in gold:
            S["pos"][c] = S["pos"].get(c, 0) + 1
        for c, al in alts.items():
            rows_hit = set()
            hit = False
            for (an, ob) in present:
                for (name, allowed) in al:
                    if ob == name and (not allowed or an in allowed):
                        hit = True
                        if an not in ("unspecified", "other"):
                            rows_hit.add(an)
            k = S["cnt"].setdefault(c, [0, 0, 0])
            g = c in gold
            if g and hit:
                k[0] += 1
            elif hit:
                k[1] += 1
            elif g:
                k[2] += 1
            if a.examples == c and a.set == ("heldout" if S is sets["heldout"] else "development") and g != hit:
                print(f"--- {'FP' if hit else 'FN'} report {rep['id']}  mesh: {row[a.mesh_column]}")
                print("    findings:", row["findings"], "| impression:", row["impression"])
                print("    found:", sorted(p for p in present if any(p[1] == n for n, _ in al)))
            if g and gold[c]:
                gl = gold[c]
                ka = S["anat"].setdefault(c, [0, 0, 0])
                ka[0] += len(rows_hit & gl)
                ka[1] += len(rows_hit - gl)
                ka[2] += len(gl - rows_hit)
                ps, gs = {side(x) for x in rows_hit}, {side(x) for x in gl}
                ks = S["side"].setdefault(c, [0, 0, 0])
                ks[0] += len(ps & gs)
                ks[1] += len(ps - gs)
                ks[2] += len(gs - ps)
        if normal:
            S["normal"] += 1
            S["clean"] += not any(ob not in NORMAL_OR_EXCLUDED for (_, ob) in present)

    ok = True
    ref = json.load(open(a.compare)) if a.compare else None
    for name, S in sets.items():
        f1s = [prf(*S["cnt"][c])[2] for c in alts if S["pos"].get(c, 0) >= 20]
        macro = sum(f1s) / len(f1s) if f1s else 0.0
        share = S["clean"] / S["normal"] if S["normal"] else 0.0
        print(f"{name}: {S['reports']} reports, macro-F1 {macro:.3f} over {len(f1s)} concepts, "
              f"normal clean {share:.3f} ({S['clean']} of {S['normal']})")
        if name == "heldout":
            print("| concept | pos | P / R / F1 | anatomy F1 (side F1) |")
            for c in sorted(alts, key=lambda c: -S["pos"].get(c, 0)):
                p, r, f = prf(*S["cnt"][c])
                an = ""
                if c in S["anat"]:
                    an = f"{prf(*S['anat'][c])[2]:.2f} ({prf(*S['side'][c])[2]:.2f})"
                print(f"| {c} | {S['pos'].get(c, 0)} | {p:.2f} / {r:.2f} / {f:.2f} | {an} |")
        if ref:
            R = ref[name]["full"]
            mism = []
            if abs(R["macro_f1"] - macro) > 1e-9:
                mism.append(f"macro_f1 {R['macro_f1']} vs {macro}")
            if R["normal_clean"] != S["clean"]:
                mism.append(f"normal_clean {R['normal_clean']} vs {S['clean']}")
            for c, k in S["cnt"].items():
                rc = R["per_concept"][c]
                if [rc["tp"], rc["fp"], rc["fn"]] != k or rc["positives"] != S["pos"].get(c, 0):
                    mism.append(f"{c}: C++ {rc['tp']},{rc['fp']},{rc['fn']} vs {k}")
            for c, k in S["anat"].items():
                ra = ref[name]["anatomy"].get(c)
                ks = S["side"][c]
                if not ra or [ra["tp"], ra["fp"], ra["fn"], ra["side_tp"], ra["side_fp"], ra["side_fn"]] != k + ks:
                    mism.append(f"anatomy {c}: C++ {ra} vs {k} {ks}")
            if mism:
                ok = False
                print(f"  MISMATCH with {a.compare} ({name}):", *mism[:20], sep="\n    ")
            else:
                print(f"  agrees with {a.compare} ({name}): every count equal")
    sys.exit(0 if ok else 1)


# no findings: the normal words, excluded_obs, and expand / aerate ("well expanded", "well aerated")
NORMAL_OR_EXCLUDED = {"normal", "clear", "sharp", "sharply", "unremarkable", "intact", "stable", "free",
                      "excluded_obs", "expand", "aerate"}

if __name__ == "__main__":
    main()
