-- wrk script for `make bench`: authenticated requests for many users, round robin.
--
-- Configured through the environment (set by bench/loadgen.py):
--   BENCH_METHOD      GET / POST ...
--   BENCH_PATH        request path
--   BENCH_PATHS       file with one request path per line (optional; instead of BENCH_PATH:
--                     each user's requests cycle through them, e.g. varied search queries)
--   BENCH_TOKENS      file with one bearer token per line (one per user)
--   BENCH_BODY        file with the request body (optional; sent as application/json)
--   BENCH_MAX         stop after this many responses in all (optional; 0 = time-bounded only)
--   BENCH_THREADS     number of wrk threads (to split BENCH_MAX and the users between them)
-- Requests are pre-built in init() (one per user), so request() is a table lookup.
-- done() prints one JSON line prefixed with "BENCH_RESULT " for the driver to parse.

local thread_counter = 0

function setup(thread)
  thread:set("thread_index", thread_counter)
  thread_counter = thread_counter + 1
end

local function read_file(path)
  local handle = assert(io.open(path, "rb"))
  local content = handle:read("*a")
  handle:close()
  return content
end

local requests_by_user = {}
local next_request = 1
local responses = 0
local max_responses = 0

function init(args)
  local method = os.getenv("BENCH_METHOD") or "GET"
  local paths = {}
  local paths_file = os.getenv("BENCH_PATHS")
  if paths_file ~= nil and paths_file ~= "" then
    for path in io.lines(paths_file) do
      if path ~= "" then
        paths[#paths + 1] = path
      end
    end
  else
    paths[1] = os.getenv("BENCH_PATH")
  end
  assert(#paths > 0 and paths[1], "BENCH_PATH not set")
  local body = nil
  local body_file = os.getenv("BENCH_BODY")
  if body_file ~= nil and body_file ~= "" then
    body = read_file(body_file)
  end
  local threads = tonumber(os.getenv("BENCH_THREADS") or "1")
  local index = thread_index or 0
  local line = 0
  local tokens_file = assert(os.getenv("BENCH_TOKENS"), "BENCH_TOKENS not set")
  for token in io.lines(tokens_file) do
    if token ~= "" then
      -- users are dealt out to threads like cards: no user is shared between two threads
      if line % threads == index then
        local headers = { ["Authorization"] = "Bearer " .. token }
        if body ~= nil then
          headers["Content-Type"] = "application/json"
        end
        for _, path in ipairs(paths) do
          requests_by_user[#requests_by_user + 1] = wrk.format(method, path, headers, body)
        end
      end
      line = line + 1
    end
  end
  assert(#requests_by_user > 0, "no tokens for this thread")
  local total_max = tonumber(os.getenv("BENCH_MAX") or "0")
  if total_max > 0 then
    max_responses = math.ceil(total_max / threads)
  else
    response = nil -- time-bounded: let wrk skip response parsing
  end
end

function request()
  local req = requests_by_user[next_request]
  next_request = next_request + 1
  if next_request > #requests_by_user then
    next_request = 1
  end
  return req
end

function response(status, headers, body)
  responses = responses + 1
  if responses >= max_responses then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d,'
      .. ' "p99_us": %d, "max_us": %d, "mean_us": %.1f, "errors_connect": %d,'
      .. ' "errors_read": %d, "errors_write": %d, "errors_status": %d, "errors_timeout": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.connect, e.read, e.write, e.status,
    e.timeout))
end
