-- A wrk script for the paced endpoints (bench/harness.py, Endpoint.pause_ms):
--   wrk ... -s bench/pace.lua URL -- PAUSE_MS
-- Each connection waits PAUSE_MS milliseconds before each request, so that
-- every server gets about the same load (connections / (pause + latency)),
-- below what any of them or wrk can take; the servers are then compared by
-- their CPU time per request, which a saturated wrk would distort.
local pause = 0

function init(args)
   pause = tonumber(args[1]) or 0
end

function delay()
   return pause
end
