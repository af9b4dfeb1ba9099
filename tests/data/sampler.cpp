// The DistributedSampler (data/sampler.h) against torch.utils.data.DistributedSampler:
// indices per rank from tests/make_fixtures_sampler.py, the torch permutation reproduced bit
// for bit, and the global-position resume the distributed trainer relies on.
#include <doctest/doctest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "data/loader.h"
#include "data/sampler.h"
#include "tests/test_util.h"

using namespace ms;

TEST_CASE("data: sampler rank split equals torch DistributedSampler (fixture)") {
  std::ifstream f(test::fixture("sampler_cases.json"));
  REQUIRE_MESSAGE(f.good(), "tests/fixtures/sampler_cases.json missing: run /usr/bin/python3 tests/make_fixtures_sampler.py");
  nlohmann::json j = nlohmann::json::parse(f);
  int checked = 0;
  for (const auto& c : j["cases"]) {
    const int64_t n = c["n"], R = c["replicas"];
    SamplerOptions o;
    o.replicas = R;
    o.seed = c["seed"].get<uint64_t>();
    o.shuffle = c["shuffle"];
    o.drop_last = c["drop_last"];
    o.permutation = "torch";
    DistributedSampler s(n, o);
    const int64_t epoch = c["epoch"];
    CAPTURE(c.dump());
    CHECK(s.order(epoch) == c["order"].get<std::vector<int64_t>>());  // torch.randperm, bit for bit
    for (int64_t r = 0; r < R; ++r) {
      auto want = c["ranks"][size_t(r)].get<std::vector<int64_t>>();
      CHECK(s.indices(epoch, r) == want);
      CHECK(shard_order(c["order"].get<std::vector<int64_t>>(), 0, R, r, o.drop_last) == want);
      CHECK(s.num_samples() == int64_t(want.size()));
      ++checked;
    }
  }
  MESSAGE("sampler: " << checked << " rank splits equal torch " << j["torch"].get<std::string>() << "'s");
  CHECK(checked > 300);
}

TEST_CASE("data: sampler set_epoch, medslip permutation, resume position") {
  SamplerOptions o;
  o.replicas = 2;
  o.seed = 7;
  DistributedSampler s(10, o);
  // One replica with the medslip permutation is the single-process loader's order.
  SamplerOptions one = o;
  one.replicas = 1;
  CHECK(DistributedSampler(10, one).indices(3, 0) == epoch_order(10, 7, 3, true));
  CHECK(s.order(0) != s.order(1));  // set_epoch: a fresh order per epoch
  o.set_epoch = false;                // the reference: epoch 0's order every epoch
  CHECK(DistributedSampler(10, o).order(5) == s.order(0));
  // Slots cover the order exactly once when R divides n.
  std::multiset<int64_t> all;
  for (int r = 0; r < 2; ++r)
    for (int64_t i : s.indices(2, r)) all.insert(i);
  CHECK(all == std::multiset<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  // Resume at global position 4 with 3 slots: the remaining 6 entries, strided by 3.
  auto ord = s.order(2);
  CHECK(s.order(2).size() == 10);
  CHECK(shard_order(ord, 4, 3, 1, false) == std::vector<int64_t>{ord[5], ord[8]});
  CHECK(shard_order(ord, 4, 4, 3, false) == std::vector<int64_t>{ord[7], ord[5]});  // padded: position 7 wraps to 4+1
  CHECK_THROWS_WITH_AS(shard_order(ord, 0, 2, 2, false), doctest::Contains("slot 2 outside [0, 2)"), std::invalid_argument);
  SamplerOptions bad = o;
  bad.permutation = "numpy";
  CHECK_THROWS_WITH_AS(DistributedSampler(4, bad), doctest::Contains("sampler_permutation"), std::invalid_argument);
}
