-- wrk script for bench/run.py: cycles through a pre-generated request list and counts statuses.
--
--   wrk ... -s bench/requests.lua URL -- <request file> <base path> [<first line>]
--
-- The request file has one request a line, tab-separated: method, path (relative to the base
-- path), then "Name: value" headers. Every request is formatted once, in init; request() only
-- hands the next one out. done() prints one line, BENCH_JSON {...}, for bench/run.py.

local requests, count, next_one = {}, 0, 1
statuses = {} -- status -> responses; a global, so done() can collect it from each thread
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local file, base, first = args[1], args[2] or "", tonumber(args[3] or "0")
  for line in io.lines(file) do
    local fields = {}
    for f in string.gmatch(line, "[^\t]+") do
      fields[#fields + 1] = f
    end
    if #fields >= 2 then
      local headers = { Host = wrk.headers["Host"] }
      for i = 3, #fields do
        local name, value = string.match(fields[i], "^([^:]+):%s*(.*)$")
        headers[name] = value
      end
      count = count + 1
      requests[count] = wrk.format(fields[1], base .. "/" .. fields[2], headers)
    end
  end
  assert(count > 0, "no requests in " .. file)
  next_one = (first % count) + 1
end

function request()
  local r = requests[next_one]
  next_one = next_one + 1
  if next_one > count then
    next_one = 1
  end
  return r
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests_)
  local all = {}
  for _, t in ipairs(threads) do
    for status, n in pairs(t:get("statuses") or {}) do
      all[status] = (all[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(all) do
    parts[#parts + 1] = string.format('"%d": %d', status, n)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_s": %.3f, "socket_errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, ' ..
    '"statuses": {%s}, "p50_ms": %.3f, "p90_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f}\n',
    summary.requests, summary.duration / 1e6, e.connect, e.read, e.write, e.timeout,
    table.concat(parts, ", "),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
