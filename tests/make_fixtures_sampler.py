#!/usr/bin/env python3
"""Make tests/fixtures/sampler_cases.json: torch.utils.data.DistributedSampler indices for
data/sampler.{h,cpp} (tests/data/sampler.cpp).

Regenerate (from the repo root; Debian's python, which has torch):

    /usr/bin/python3 tests/make_fixtures_sampler.py

Each case runs DistributedSampler(range(n), num_replicas=R, rank=r, shuffle, seed,
drop_last) after set_epoch(epoch), for every rank r, and stores the indices, plus the
permutation torch drew (torch.randperm(n, generator seeded seed + epoch)) so a mismatch shows
whether the permutation or the pad/stride split differs. Sizes cover an exact multiple, a
ragged tail (padded, or dropped with drop_last), padding longer than the dataset (n < R)
and one replica.
"""
import json
import os

import torch
from torch.utils.data import DistributedSampler

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    cases = []
    for n in (12, 11, 7, 3, 1):
        for replicas in (1, 2, 3, 4, 5):
            for drop_last in (False, True):
                for shuffle, seed, epoch in ((False, 0, 0), (True, 0, 0), (True, 42, 3)):
                    ranks = []
                    for r in range(replicas):
                        s = DistributedSampler(list(range(n)), num_replicas=replicas, rank=r, shuffle=shuffle,
                                               seed=seed, drop_last=drop_last)
                        s.set_epoch(epoch)
                        ranks.append(list(iter(s)))
                    g = torch.Generator()
                    g.manual_seed(seed + epoch)
                    perm = torch.randperm(n, generator=g).tolist() if shuffle else list(range(n))
                    cases.append({"n": n, "replicas": replicas, "drop_last": drop_last, "shuffle": shuffle,
                                  "seed": seed, "epoch": epoch, "order": perm, "ranks": ranks})
    out = os.path.join(HERE, "fixtures", "sampler_cases.json")
    with open(out, "w") as f:
        json.dump({"torch": torch.__version__, "cases": cases}, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {out}: {len(cases)} cases (torch {torch.__version__})")


if __name__ == "__main__":
    main()
