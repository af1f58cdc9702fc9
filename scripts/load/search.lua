-- wrk script: GET /v1/residents?q=… over a list of queries, as one street officer with a
-- purpose; the summary (p50/p95/p99, non-2xx) is profile.lua's. Run from the repository root.
-- Environment: SAFEGRID_TOKEN, SAFEGRID_QUERIES (file with one URL-encoded query per line),
-- SAFEGRID_PURPOSE (default routine_visit).

dofile("scripts/load/profile.lua")

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
