#!/usr/bin/env python3
"""Make tests/fixtures/tokenizer_ids.json: Hugging Face BertTokenizer reference ids.

Needs the pure-Python ("slow") BertTokenizer of transformers 4.x (written with 4.57.6; in
transformers 5 `BertTokenizer` is the Rust-backed one, which is not what MeDSLIP copied).
No torch needed. Debian's python works:

    /usr/bin/python3 -m pip install --break-system-packages "transformers<5"
    /usr/bin/python3 tests/make_fixtures_tokenizer.py            # from the repo root

Inputs (not copied into the repo): $MEDSLIP_SHARED or ../shared, i.e.
  data/vocab/bert-base-uncased-vocab.txt and data/reports/iu_xray_reports.csv.

Output:
  strings: hand-written tricky inputs with HF tokens, ids (no special tokens) and the MeDSLIP
           encoding ([CLS] + tokens, no [SEP]; max_length 64 and 128) plus the standard BERT
           encoding at 64.
  reports: for every CSV row and each of indication/findings/impression, the id count and
           FNV-1a 64 hash of the ids; full ids for the first 200 rows only (size).
"""
import csv
import json
import os
import sys
import unicodedata

FIELDS = ["indication", "findings", "impression"]
FULL_IDS_ROWS = 200
MAX_LENGTHS = [64, 128]

# Hand-written edge cases of HF BasicTokenizer/WordpieceTokenizer. Escapes keep this file
# ASCII-readable.
TRICKY = [
    "",
    "   ",
    "Hello, World!",
    "The lungs are clear.  No  pleural\teffusion.\nHeart size normal.\r\nEnd.",
    "Café naïve résumé Ångström São Paulo façade coöperate",
    "ÀÉÎÕÜ àéîõü ÇÑ ÆØ æø ß",
    "cafe\u0301 vs caf\u00e9",  # decomposed vs composed accent
    "\u2018sharply\u2019 defined \u201clesion\u201d \u2014 chf \u2013 x",
    "pleural effusion\u2014left\u2014side",
    "中文字符 and 汉字mixed日本",
    "ひらがな カタカナ 한국어",
    "Ελληνικά ΣΑΣ Σ ς ΌΣΟΣ",  # Greek: per-char lowering means no final sigma
    "İstanbul DİYARBAKIR",  # U+0130 lowers to i + combining dot (then stripped)
    "Кириллица МОСКВА",
    "العربية עברית",
    "हिन्दी देवनागरी",  # Devanagari vowel signs are Mn and get stripped
    "ไทย ภาษา",
    "emoji \U0001F600 heart \u2764\ufe0f",
    "fi\ufb01 ligature \ufb01brosis",
    "\uff21\uff22\uff23 fullwidth \uff11\uff12",
    "\u212a kelvin \u2126 ohm \u212b angstrom",
    "x\u00b2 \u00bd \u2103 \u00b5m \u03bcm",
    "zero\u200bwidth\u200djoiner soft\u00adhyphen bom\ufeffmark",
    "nbsp\u00a0space ideographic\u3000space thin\u2009space",
    "line\u2028separator para\u2029separator",
    "nel\u0085char vt\x0bff\x0c fs\x1cus\x1f",
    "ctrl\x01\x02\x7fchars \x00nul \ufffdreplacement",
    "private\ue000use unassigned\u0378 nonchar\uffff",
    # Assigned in Unicode 15.0 (CJK Ext. H, Kannada U+0CF3): unassigned, so dropped, for
    # Python 3.11's unicodedata 14.0; ICU 72 knows them.
    "new\U00031350cjk kannada\u0cf3x",
    "a" * 100,
    "a" * 101,
    "b" * 150 + " short",
    "\u00e9" * 101,  # 101 chars after accent stripping -> [UNK]
    ("e\u0301") * 60,  # 60 chars after NFC/strip
    "a" * 60 + "-" + "b" * 60,  # punctuation split before the length check
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "qzxjkvqzxjkv",
    "1.5cm 2.3 x 4.5 mm, 10% 3/4 T12-L1 C5\u2013C6",
    "x-ray X-RAY chest x-XXXX XXXX",
    "$100 ^caret `backtick` ~tilde |pipe| {brace} <angle> @at #hash &amp",
    "don't it's O'Neil U.S.A. Dr. Smith's",
    "hello!!! ... ?!? ---",
    "[CLS] inline",
    "[CLS]inline",
    "a[SEP]b [PAD][PAD] [MASK] [UNK] x",
    "[cls] [Cls] [ CLS ] [CLS",
    "[CL\x00S] [SE\u200bP]",
    "It is located at left_hilar. ",
    "It is located at right_costophrenic_angle. ",
    "Heart size is normal. The mediastinum is unremarkable. " * 3,
    # Long prompt-like descriptions: more than 63 and 127 word-pieces, so both encodings truncate.
    ("Tube: a \u2018medical device\u2019 \u2014 e.g. endotracheal, nasogastric or chest tube "
     "(ETT/NGT); its tip projects over the mid-thoracic trachea, approximately 4.5 cm above "
     "the carina; a right-sided PICC terminates in the SVC/cavoatrial junction. ") * 3,
    "\t\n  leading and trailing whitespace \n\t ",
]


def shared_root():
    env = os.environ.get("MEDSLIP_SHARED")
    return env if env else os.path.join(os.getcwd(), "..", "shared")


def fnv1a64_ids(ids):
    """FNV-1a 64 over the ASCII bytes of ','.join(str(id)). Mirrored in model_tokenizer.cpp."""
    h = 0xCBF29CE484222325
    for b in ",".join(str(i) for i in ids).encode("ascii"):
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return str(h)


def make_tokenizers(vocab_path):
    from transformers import BertTokenizer

    class MedslipTokenizer(BertTokenizer):
        # ALBEF/MeDSLIP models/tokenization_bert.py: [CLS] + tokens, no trailing [SEP].
        def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
            if token_ids_1 is None:
                return [self.cls_token_id] + token_ids_0
            return ([self.cls_token_id] + token_ids_0 + [self.sep_token_id] + token_ids_1
                    + [self.sep_token_id])

    bert = BertTokenizer(vocab_file=vocab_path, do_lower_case=True)
    medslip = MedslipTokenizer(vocab_file=vocab_path, do_lower_case=True)
    return bert, medslip


def encode(tok, text, max_length):
    enc = tok(text, padding="max_length", truncation=True, max_length=max_length)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def make_tokenizer_fixture(shared, out_path):
    import transformers

    vocab_path = os.path.join(shared, "data", "vocab", "bert-base-uncased-vocab.txt")
    csv_path = os.path.join(shared, "data", "reports", "iu_xray_reports.csv")
    bert, medslip = make_tokenizers(vocab_path)

    def ids_of(text):
        return bert.convert_tokens_to_ids(bert.tokenize(text))

    strings = []
    for text in TRICKY:
        entry = {"text": text, "tokens": bert.tokenize(text), "ids": ids_of(text)}
        for L in MAX_LENGTHS:
            entry["medslip_%d" % L] = encode(medslip, text, L)
        entry["bert_64"] = encode(bert, text, 64)
        strings.append(entry)

    rows = []
    with open(csv_path, newline="", encoding="utf-8") as f:
        for i, r in enumerate(csv.DictReader(f)):
            ids = [ids_of(r[k]) for k in FIELDS]
            row = {"report_id": r["report_id"], "n": [len(x) for x in ids],
                   "h": [fnv1a64_ids(x) for x in ids]}
            if i < FULL_IDS_ROWS:
                row["ids"] = ids
            rows.append(row)

    doc = {
        "generator": "tests/make_fixtures_tokenizer.py",
        "transformers_version": transformers.__version__,
        "unicodedata_version": unicodedata.unidata_version,
        "vocab": "data/vocab/bert-base-uncased-vocab.txt",
        "do_lower_case": True,
        "max_lengths": MAX_LENGTHS,
        "reports": {
            "csv": "data/reports/iu_xray_reports.csv",
            "fields": FIELDS,
            "count": len(rows),
            "hash": "fnv1a64 of ','.join(decimal ids), as a decimal string",
            "full_ids_rows": FULL_IDS_ROWS,
        },
    }
    # One string / report per line: compact, yet diffs stay readable.
    dump = lambda o: json.dumps(o, ensure_ascii=True, separators=(",", ":"))
    lines = ["{"]
    for k, v in doc.items():
        lines.append(" %s:%s," % (dump(k), dump(v)))
    lines.append(' "strings":[')
    lines.append(",\n".join("  " + dump(s) for s in strings))
    lines.append(" ],")
    lines.append(' "report_rows":[')
    lines.append(",\n".join("  " + dump(r) for r in rows))
    lines.append(" ]")
    lines.append("}")
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, "w", encoding="ascii") as f:
        f.write("\n".join(lines) + "\n")
    json.load(open(out_path))  # sanity: the hand formatting is valid JSON
    print("wrote %s: %d strings, %d report rows x %d fields, %d bytes"
          % (out_path, len(strings), len(rows), len(FIELDS), os.path.getsize(out_path)))


def main():
    shared = shared_root()
    if not os.path.isdir(os.path.join(shared, "data")):
        sys.exit("shared data not found at %s (set MEDSLIP_SHARED)" % shared)
    here = os.path.dirname(os.path.abspath(__file__))
    make_tokenizer_fixture(shared, os.path.join(here, "fixtures", "tokenizer_ids.json"))


if __name__ == "__main__":
    main()
