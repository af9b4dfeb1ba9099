// defines: the evaluation of report -> triplets against MeSH index terms (the IU X-ray csv's
// `mesh_major`), with the mapping table data/report_mesh.tsv (its header says how it reads).
// Per concept (an observation column, with the alternatives the table allows): precision,
// recall and F1 of "present" over reports, for each extraction mode (keyword, one-line
// negation, full); macro-F1 over concepts with >= 20 positives in the set; the share of
// MeSH-"normal" reports with no finding present (no 1 in columns 8-73 other than expand and
// aerate, which hold "well expanded" / "well aerated"; the normal words 0-7 and excluded_obs 74
// are no findings; a strict count without that exception is reported too); and anatomy
// attachment where MeSH names a landmark
// (exact landmark, and side: left / right / neither). Reports indexed "No Indexing" or with
// an empty cell are left out. tests/score_triplets.py recomputes the full-mode numbers
// independently from triplets.jsonl.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace ms {

struct MeshObsRow {
  std::string heading, qualifier;                      // lower case; qualifier "*" = any
  std::vector<std::pair<int, std::vector<int>>> alts;  // (observation, allowed anatomy rows or {} = all)
  int concept = 0;                                     // observation of the first alternative
  std::string zone;                                    // default zone or "-"
};
struct MeshZoneRow {
  std::string qualifier;
  int left = -1, right = -1, both = -1;  // anatomy rows, -1 = none
};
struct MeshTable {
  std::vector<MeshObsRow> obs;
  std::vector<MeshZoneRow> zones;
};

MeshTable read_mesh_table(const std::string& path);

// Gold of one `mesh_major` cell: concept -> landmarks named (possibly none).
struct MeshGold {
  bool indexed = true;  // false for "No Indexing" / empty
  bool normal = false;  // the cell is exactly "normal"
  std::vector<std::pair<int, std::vector<int>>> concepts;  // sorted by concept
};
MeshGold mesh_gold(const MeshTable& table, const std::string& cell);

struct MeshEvaluation {
  std::string json;      // machine-readable (eval.json)
  std::string markdown;  // the table (eval.md, README)
};

// matrices[mode][report] = [51,75]; modes 0 keyword, 1 one-line negation, 2 full.
// heldout_above < 0: one set (all reports); else reports with numeric id > heldout_above are
// held out, the rest are the development set.
MeshEvaluation evaluate_mesh(const MeshTable& table, const std::vector<std::string>& ids,
                             const std::vector<std::string>& mesh,
                             const std::vector<std::vector<std::vector<float>>>& matrices, int64_t heldout_above);

}  // namespace ms
