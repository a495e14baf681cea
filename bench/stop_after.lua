-- For bench/memory.py: wrk stops after the number of responses given after
-- "--" on its command line (run it with -t1, so that one thread counts them all).
local limit, seen

function init(args)
  limit = tonumber(args[1])
  seen = 0
end

function response(status, headers, body)
  seen = seen + 1
  if seen >= limit then
    wrk.thread:stop()
  end
end
