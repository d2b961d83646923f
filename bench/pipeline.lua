-- wrk script: every write carries DEPTH pipelined GETs of URLPATH (TechEmpower "plaintext"
-- style). wrk counts each response, so "requests" is responses received.
--   DEPTH=16 wrk -t1 -c50 -d5s -s bench/pipeline.lua http://127.0.0.1:8080/
--   URLPATH=/4k.bin DEPTH=16 wrk ... (bench/http.ts --scenario static)
local depth = tonumber(os.getenv("DEPTH") or "16")
local path = os.getenv("URLPATH") or "/plaintext"

init = function(args)
  local parts = {}
  for i = 1, depth do
    parts[i] = wrk.format("GET", path)
  end
  batch = table.concat(parts)
end

request = function()
  return batch
end
