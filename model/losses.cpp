// The five MeDSLIP loss terms (spec B). Each is a plain function of the model outputs and
// the batch, so the equations can be read (and tested) one at a time.
#include <stdexcept>
#include <string>

#include "engine/autograd.h"
#include "model/medslip.h"

namespace ms {

// spec B.1: CE over rows with label not in {-1, 2}, one flat mean over the batch.
Tensor loss_existence(const Tensor& logits, const std::vector<int64_t>& labels) {
  const int64_t R = logits.size(0) * logits.size(1), C = logits.size(2);
  if (int64_t(labels.size()) != R)
    throw std::invalid_argument("loss_existence: " + std::to_string(labels.size()) + " labels for logits " + shape_str(logits.shape()));
  std::vector<int64_t> target(size_t(R), 0);
  std::vector<uint8_t> valid(size_t(R), 0);
  for (int64_t r = 0; r < R; ++r) {
    int64_t y = labels[size_t(r)];
    if (y != -1 && y != 2) {
      if (y < 0 || y >= C) throw std::invalid_argument("loss_existence: label " + std::to_string(y) + " outside {-1,0,1}");
      target[size_t(r)] = y;
      valid[size_t(r)] = 1;
    }
  }
  return cross_entropy(logits.reshape({R, C}), target, valid);
}

// spec B.2/B.3. For each (b,q) with label 1: candidates c = [prototype, 7 negatives] from the
// partner book; logits s_k = <c_k, cl_fc(h~_{b,q})> (raw dot products, no temperature);
// loss = -log softmax(s)[0], averaged over those rows. The prototype is the mean of the
// partner-book rows where M == 1 (a masked mean, not the reference's [B,Q,Qo,T] tensors).
Tensor loss_protocl(const Tensor& z_feat, const nn::Linear& cl_fc, const std::vector<int64_t>& labels,
                    const Tensor& book, const std::vector<uint8_t>& pos, const std::vector<int64_t>& index, int64_t B,
                    int64_t Q, int64_t Qo) {
  const int64_t K = kNumCandidates, T = book.size(1), d = z_feat.size(2);
  std::vector<int64_t> rows;  // r = b*Q + q with label 1
  for (int64_t r = 0; r < B * Q; ++r)
    if (labels[size_t(r)] == 1) rows.push_back(r);
  if (rows.empty()) return Tensor::zeros({}, z_feat.device());  // B.6.5: no positive row -> 0, not NaN
  const int64_t R = int64_t(rows.size());

  // Candidates [R,K,T]: constants (the books are frozen), built in double as the reference
  // does (spec H.2) and stored as float32.
  Tensor cand = Tensor::zeros({R, K, T});
  const Tensor book_h = book.to(Device::CPU);
  const float* A = book_h.data();
  std::vector<double> proto(static_cast<size_t>(T));
  for (int64_t i = 0; i < R; ++i) {
    const int64_t r = rows[size_t(i)];
    float* c = cand.data() + i * K * T;
    std::fill(proto.begin(), proto.end(), 0.0);
    int64_t n = 0;
    for (int64_t o = 0; o < Qo; ++o)
      if (pos[size_t(r * Qo + o)]) {
        ++n;
        for (int64_t t = 0; t < T; ++t) proto[size_t(t)] += A[o * T + t];
      }
    if (n == 0)
      throw std::invalid_argument("ProtoCL: row " + std::to_string(r) + " has label 1 but no M == 1 partner (labels and matrix disagree)");
    for (int64_t t = 0; t < T; ++t) c[t] = float(proto[size_t(t)] / double(n));  // slot 0: prototype
    if (index[size_t(r * K)] != -1)
      throw std::invalid_argument("ProtoCL: index slot 0 of row " + std::to_string(r) + " must be -1 for a present label");
    for (int64_t k = 1; k < K; ++k) {
      const int64_t o = index[size_t(r * K + k)];
      if (o < 0) continue;  // the reference zeroes -1 slots other than the prototype slot
      std::copy(A + o * T, A + (o + 1) * T, c + k * T);
    }
  }
  // z = cl_fc(h~) for the selected rows: h~ is [Q,B,d], row r = b*Q + q.
  std::vector<int64_t> sel(static_cast<size_t>(R));
  for (int64_t i = 0; i < R; ++i) {
    const int64_t b = rows[size_t(i)] / Q, q = rows[size_t(i)] % Q;
    sel[size_t(i)] = q * B + b;
  }
  Tensor h = index_select(z_feat.reshape({Q * B, d}), 0, sel);  // [R,d]
  Tensor z = cl_fc.forward(h);                                 // [R,T]
  Tensor s = matmul(cand.to(z.device()), z.reshape({R, T, 1})).reshape({R, K});  // [R,K]
  return cross_entropy(s, std::vector<int64_t>(size_t(R), 0), std::vector<uint8_t>(size_t(R), 1));
}

// spec B.4: S_{b,a,p} = <h^a_{b,a}, h^p_{b,p}> (pre-dropout, post-final-LN, unscaled);
// mean BCE-with-logits against M over {M >= 0}.
Tensor loss_icl(const Tensor& feat_p, const Tensor& feat_a, const std::vector<float>& matrix) {
  const int64_t Qp = feat_p.size(0), B = feat_p.size(1), Qa = feat_a.size(0);
  if (int64_t(matrix.size()) != B * Qa * Qp) throw std::invalid_argument("loss_icl: matrix is not [B,Qa,Qp]");
  Tensor hp = transpose(feat_p, 0, 1);      // [B,Qp,d]
  Tensor ha = transpose(feat_a, 0, 1);      // [B,Qa,d]
  Tensor s = matmul(ha, hp, false, true);   // [B,Qa,Qp]
  std::vector<float> target(matrix.size());
  std::vector<uint8_t> valid(matrix.size());
  for (size_t i = 0; i < matrix.size(); ++i) {
    valid[i] = matrix[i] >= 0.f;
    target[i] = valid[i] ? matrix[i] : 0.f;
  }
  return bce_with_logits(s, Tensor::from_vector(target, s.shape()).to(s.device()), valid);
}

}  // namespace ms
