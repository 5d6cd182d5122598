-- tail.lua: the peer harness's workload (its session.lua, loaded from PB_SESSION_LUA: X-Session-Id
-- from a pool of PB_IDS ids, fixed-seed PRNG, requests pre-formatted) with p99.9 in the result
-- line, for conf/bench/tail.sh.
dofile(os.getenv("PB_SESSION_LUA"))

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "TAIL_RESULT rps=%.1f p50_us=%d p99_us=%d p999_us=%d max_us=%d reqs=%d errors=%d\n",
      summary.requests / (summary.duration / 1e6),
      latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
      latency.max, summary.requests,
      e.connect + e.read + e.write + e.status + e.timeout))
end
