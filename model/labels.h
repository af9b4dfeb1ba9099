// defines: the label space of MeDSLIP (spec C.1): 75 observations (pathology queries) and
// 51 landmarks (anatomy queries). Their names live in data/vocab.h.
#pragma once

namespace ms {
constexpr int kNumPathologies = 75;  // Qp: observation columns of the [51,75] matrix
constexpr int kNumAnatomies = 51;    // Qa: landmark rows
}  // namespace ms
