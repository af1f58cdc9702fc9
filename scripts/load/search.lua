-- wrk script: GET /v1/residents?q=… over a list of queries, as one street officer with a
-- purpose, and print p50/p95/p99 and the non-2xx count at the end.
-- Environment: SAFEGRID_TOKEN, SAFEGRID_QUERIES (file with one URL-encoded query per line),
-- SAFEGRID_PURPOSE (default routine_visit).

local queries = {}
local counter = 0

function init(args)
  for line in io.lines(os.getenv("SAFEGRID_QUERIES")) do
    if #line > 0 then queries[#queries + 1] = line end
  end
  counter = math.random(#queries)
end

function request()
  counter = counter % #queries + 1
  return wrk.format("GET", "/v1/residents?q=" .. queries[counter], {
    ["Authorization"] = "Bearer " .. os.getenv("SAFEGRID_TOKEN"),
    ["X-Purpose"] = os.getenv("SAFEGRID_PURPOSE") or "routine_visit",
  })
end

function done(summary, latency, requests)
  io.write(string.format("requests %d in %.1f s = %.0f req/s\n", summary.requests,
    summary.duration / 1e6, summary.requests / (summary.duration / 1e6)))
  io.write(string.format("latency p50 %.2f ms  p95 %.2f ms  p99 %.2f ms  max %.2f ms\n",
    latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
  io.write(string.format("non-2xx or socket errors: %d\n", summary.errors.status
    + summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout))
end
