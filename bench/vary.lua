-- wrk script: every request asks for a different target (/?n=1, /?n=2, ...),
-- so nothing that remembers a connection's last request can help. DEPTH (default 1)
-- requests per write, pipelined as bench/pipeline.lua does.
--   wrk -t1 -c50 -d5s -s bench/vary.lua http://127.0.0.1:8000/
--   DEPTH=16 wrk -t1 -c50 -d5s -s bench/vary.lua http://127.0.0.1:8000/
local depth = tonumber(os.getenv("DEPTH") or "1")
local n = 0
request = function()
  local r = {}
  for i = 1, depth do
    n = n + 1
    r[i] = wrk.format(nil, "/?n=" .. n)
  end
  return table.concat(r)
end
