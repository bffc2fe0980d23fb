-- wrk script for `cargo xtask capacity`: POSTs app stats of new sessions
-- (a fresh session id in every report of every request: short sessions
-- that started 30 s ago, over 1000 users and 10 apps) or boundary logs.
-- Arguments after `--`: ENDPOINT (app-stats | boundary-logs), TOKEN,
-- BATCH (reports per app stats request), RATE (reports/s over all threads;
-- 0: as fast as the connections go), THREADS (wrk's -t, to split RATE),
-- USERS (users, workspaces and agents the sessions spread over; default
-- 1000, so about 3000 groups a minute share the sessions; a number larger
-- than the run's sessions puts every session in a group of its own).
-- Prints a `statuses` line at the end (each status code with its count)
-- and a `latency` line.

local ffi = require("ffi")
ffi.cdef[[
  typedef struct { long tv_sec; long tv_usec; } timeval;
  int gettimeofday(timeval *tv, void *tz);
]]
local tv = ffi.new("timeval")
local function now_ms()
  ffi.C.gettimeofday(tv, nil)
  return tonumber(tv.tv_sec) * 1000 + tonumber(tv.tv_usec) / 1000
end

local endpoint, token, batch
-- Pacing: each request takes the next slot of this thread's schedule.
local interval_ms, next_slot = 0, nil
local thread_no = 0
local threads = {}

function setup(thread)
  thread:set("thread_no", thread_no)
  thread_no = thread_no + 1
  table.insert(threads, thread)
end

local function uuid(kind, n)
  return string.format("00000000-0000-4%03x-8000-%012x", kind, n)
end

local sent = 0
local users
local started_cache, started_at = nil, -1
-- Global: `done` reads each thread's table with thread:get.
statuses = {}

function init(args)
  endpoint = args[1] or "app-stats"
  token = args[2] or "proxy"
  batch = tonumber(args[3] or "100")
  local rate = tonumber(args[4] or "0")
  local threads = tonumber(args[5] or "1")
  users = tonumber(args[6] or "1000")
  if rate > 0 then
    local per_request = endpoint == "app-stats" and batch or 1
    interval_ms = 1000 * per_request * threads / rate
  end
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. token
  if endpoint == "app-stats" then
    wrk.path = "/api/v2/workspaceproxies/me/app-stats"
  else
    wrk.path = "/api/v2/workspaceagents/me/boundary-logs"
  end
end

local function app_stats_body()
  local now = os.time()
  if now ~= started_at then
    started_at = now
    started_cache = {
      start = os.date("!%Y-%m-%dT%H:%M:%SZ", now - 30),
      ends = {},
    }
    for k = 0, 24 do
      started_cache.ends[k] = os.date("!%Y-%m-%dT%H:%M:%SZ", now - 1 - k)
    end
  end
  local parts = {}
  for i = 1, batch do
    -- 2^40 sessions per thread: ids never repeat within a run.
    local n = thread_no * 1099511627776 + sent
    sent = sent + 1
    local u = (n * 7919) % users
    local method = ({ "path", "subdomain", "terminal" })[n % 3 + 1]
    -- Closed, as the proxy reports a session once it ends: a session
    -- reported open and never closed is held until it is (by the rule).
    local ended = started_cache.ends[n % 25]
    parts[i] = string.format(
      '{"user_id":"%s","workspace_id":"%s","agent_id":"%s","access_method":"%s","slug_or_port":"app-%d","session_id":"%s","session_started_at":"%s","session_ended_at":"%s","requests":%d}',
      uuid(1, u), uuid(2, u), uuid(3, u), method, n % 10, uuid(4, n), started_cache.start, ended, n % 50)
  end
  return '{"stats":[' .. table.concat(parts, ",") .. ']}'
end

local function boundary_body()
  local n = thread_no * 1099511627776 + sent
  sent = sent + 1
  local u = (n * 7919) % users
  return string.format('{"workspace_id":"%s","owner_id":"%s","allowed":%d,"denied":%d}',
    uuid(2, u), uuid(1, u), 1 + n % 40, n % 5)
end

function request()
  local body
  if endpoint == "app-stats" then
    body = app_stats_body()
  else
    body = boundary_body()
  end
  return wrk.format(nil, nil, nil, body)
end

function delay()
  if interval_ms == 0 then
    return 0
  end
  local now = now_ms()
  if next_slot == nil or next_slot < now - 1000 then
    -- Start, or more than a second behind: do not burst to catch up.
    next_slot = now
  end
  next_slot = next_slot + interval_ms
  return math.max(0, math.floor(next_slot - interval_ms - now))
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    local s = thread:get("statuses")
    for code, count in pairs(s) do
      total[code] = (total[code] or 0) + count
    end
  end
  local line = {}
  for code, count in pairs(total) do
    table.insert(line, code .. "=" .. count)
  end
  table.sort(line)
  io.write("statuses " .. table.concat(line, " ") .. "\n")
  io.write(string.format("latency p50_us=%d p99_us=%d max_us=%d\n",
    latency:percentile(50), latency:percentile(99), latency.max))
end
