-- wrk script for benchmarks/bench_serve.py.
--
--   wrk -t1 -c8 -d10s --latency -s wrk_recommend.lua URL -- users USERS_FILE K
--       GET /v1/users/{random id of USERS_FILE}/recommendations?k=K (one id a line; a line
--       "ID P1,P2,…" adds &cart=P1,P2,…)
--   wrk -t1 -c8 -d10s --latency -s wrk_recommend.lua URL -- path /health
--       GET of a fixed path
--
-- At the end it prints one line "BENCH_JSON {...}" (latency percentiles in microseconds,
-- requests, duration, error counts) that bench_serve.py parses.

local ids = {}
local k = 10
local fixed = nil

function init(args)
  local mode = args[1] or "path"
  if mode == "users" then
    for line in io.lines(args[2]) do
      if line ~= "" then  -- "ID" or "ID P1,P2,…"
        ids[#ids + 1] = line
      end
    end
    if #ids == 0 then
      error("no user ids in " .. args[2])
    end
    k = tonumber(args[3] or "10")
    -- a different random sequence in each wrk thread
    math.randomseed(os.time() + tonumber(tostring(ids):match("0x(%x+)") or "0", 16) % 100000)
  else
    fixed = wrk.format("GET", args[2] or "/health")
  end
end

function request()
  if fixed ~= nil then
    return fixed
  end
  local line = ids[math.random(#ids)]
  local id, cart = line:match("^(%S+)%s+(%S+)$")
  if id == nil then
    return wrk.format("GET", "/v1/users/" .. line .. "/recommendations?k=" .. k)
  end
  return wrk.format("GET", "/v1/users/" .. id .. "/recommendations?k=" .. k .. "&cart=" .. cart)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, '
      .. '"p50_us": %d, "p95_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f, '
      .. '"err_connect": %d, "err_read": %d, "err_write": %d, "err_status": %d, "err_timeout": %d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout
  ))
end
