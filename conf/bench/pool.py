"""Pools several conf/bench/ab.sh runs: each round's CPU per request of every gateway divided by
the baseline's in the same round, then the median of those ratios over all rounds of all runs
and a bootstrap 95% interval of that median (2,000 resamples, fixed seed).

    python3 conf/bench/pool.py bare /tmp/berth-ab/*/raw.tsv
"""
import random
import statistics
import sys

base, paths = sys.argv[1], sys.argv[2:]
ratios = {}
for path in paths:
    rounds = {}
    with open(path) as f:
        next(f)
        for line in f:
            r, name, _rps, _p99, _err, cpu = line.split("\t")[:6]
            rounds.setdefault(r, {})[name] = float(cpu)
    for cpus in rounds.values():
        if cpus.get(base, 0) > 0:
            for name, cpu in cpus.items():
                ratios.setdefault(name, []).append(cpu / cpus[base])
rng = random.Random(1)
for name, v in sorted(ratios.items()):
    if name == base:
        continue
    meds = sorted(statistics.median(rng.choices(v, k=len(v))) for _ in range(2000))
    print(f"{name:<14} rounds {len(v):4}  median cpu/{base} {statistics.median(v):.3f}"
          f"  95% [{meds[50]:.3f}-{meds[1949]:.3f}]")
