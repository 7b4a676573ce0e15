-- wrk script for the h1-keepalive-unique workload: every request has a target of its own,
-- so a server can reuse nothing it learnt from an earlier head (this server's memo of
-- judged heads misses on every request).
local n = 0

request = function()
  n = n + 1
  return wrk.format("GET", "/" .. n)
end
