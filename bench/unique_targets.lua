-- wrk script for the h1-keepalive-unique workload: every request has a target (path and
-- query), a cookie and a user agent of its own, as real traffic behind a proxy does, so a
-- server can reuse nothing it learnt from an earlier head (this server's memo of judged
-- heads misses on every request).
local n = 0
local headers = { ["Accept"] = "*/*" }

request = function()
  n = n + 1
  headers["User-Agent"] = "bench-client/" .. (n % 1000) .. "." .. n
  headers["Cookie"] = "session=" .. n .. "; theme=dark; seen=" .. (n * 7919)
  return wrk.format("GET", "/items/" .. n .. "?page=" .. (n % 97) .. "&q=" .. n, headers)
end
