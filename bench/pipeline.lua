-- wrk script: every write carries DEPTH pipelined GET /plaintext requests (TechEmpower
-- "plaintext" style). wrk counts each response, so "requests" is responses received.
--   DEPTH=16 wrk -t1 -c50 -d5s -s bench/pipeline.lua http://127.0.0.1:8080/
local depth = tonumber(os.getenv("DEPTH") or "16")

init = function(args)
  local parts = {}
  for i = 1, depth do
    parts[i] = wrk.format("GET", "/plaintext")
  end
  batch = table.concat(parts)
end

request = function()
  return batch
end
