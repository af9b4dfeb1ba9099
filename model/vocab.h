// defines: the label space of MeDSLIP, shared by data/ (datasets, triplets, loader) and
// model/ (books, queries, losses): the 75 observation (pathology) names and the 51 anatomy
// (landmark) names in the exact order of spec §C.1, the ProtoCL candidate count of §C.3, the
// ChestX-ray14 class -> pathology-query map of §C.6, and the anatomy prompt
// "It is located at <name>. ". A leaf: it includes nothing of the project (docs/architecture.md,
// "Folder dependencies").
#pragma once
#include <array>
#include <cstdint>
#include <string>

namespace ms {

constexpr int kNumPathologies = 75;  // Qp: observation columns of the [51,75] matrix
constexpr int kNumAnatomies = 51;    // Qa: landmark rows
// §C.3: every query is contrasted with K = 1 + 7 partner-book rows: its prototype (or one more
// negative when the query is absent) and 7 sampled negatives (the reference's num_neg_samples).
constexpr int kNumNegatives = 7;
constexpr int kNumCandidates = kNumNegatives + 1;  // K: slots of an index list

constexpr int kNumCxr14Classes = 14;

// §C.1, dataset.py l.71-147 (index = column of the adjacency matrix).
extern const std::array<const char*, kNumPathologies> kObservations;
// §C.1, dataset.py l.18-70 (index = row of the adjacency matrix).
extern const std::array<const char*, kNumAnatomies> kAnatomies;

// §C.6: CXR14 csv label columns 3..16 in order, and the pathology query each one reads.
extern const std::array<const char*, kNumCxr14Classes> kCxr14Classes;
extern const std::array<int, kNumCxr14Classes> kCxr14QueryIndex;

// Index of a name, or -1 when it is not in the vocabulary.
int observation_index(const std::string& name);
int anatomy_index(const std::string& name);
// Same, but throws std::invalid_argument naming the unknown name.
int observation_index_or_throw(const std::string& name);
int anatomy_index_or_throw(const std::string& name);

// The anatomy book prompt (§A.1): "It is located at " + name + ". ".
std::string anatomy_prompt(const std::string& name);

}  // namespace ms
