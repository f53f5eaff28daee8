-- W5 (HTTP burst): wrk script for POST /jobs; see benchmarks/http_burst.py.
--
-- Each wrk thread sends POST /jobs (a distinct payload per request) until it has seen
-- VESPER_BENCH_PER_THREAD responses, then stops and touches VESPER_BENCH_MARK-<thread>.
-- wrk itself only stops at its -d duration; the harness sends SIGINT once every thread
-- has touched its mark, and done() prints one JSON line: the counts, the span from the
-- first request to the last counted response (CLOCK_MONOTONIC, through LuaJIT's FFI), the
-- latency percentiles (microseconds) and the errors.
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } vesper_timespec;
int clock_gettime(int clk_id, vesper_timespec *tp);
]]
local timespec = ffi.new("vesper_timespec")
local function now_us()
    ffi.C.clock_gettime(1, timespec) -- CLOCK_MONOTONIC
    return tonumber(timespec.tv_sec) * 1000000 + tonumber(timespec.tv_nsec) / 1000
end

local per_thread = tonumber(os.getenv("VESPER_BENCH_PER_THREAD") or "1000")
local mark = os.getenv("VESPER_BENCH_MARK") or "/tmp/vesper-bench-mark"
local job_type = os.getenv("VESPER_BENCH_JOB_TYPE") or "bench"

-- globals: read by done() through thread:get()
first_us = 0
last_us = 0
id = 0
ok = 0
non_2xx = 0

local sent = 0
local seen = 0
local threads = {}

function setup(thread)
    thread:set("id", #threads)
    table.insert(threads, thread)
end

function init(args)
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/json"
end

function request()
    if first_us == 0 then
        first_us = now_us()
    end
    sent = sent + 1
    local body = '{"type":"' .. job_type .. '","payload":{"n":' .. (id * 1000000000 + sent) .. "}}"
    return wrk.format(nil, "/jobs", nil, body)
end

function response(status, headers, body)
    seen = seen + 1
    if status >= 200 and status < 300 then
        ok = ok + 1
    else
        non_2xx = non_2xx + 1
    end
    if seen == per_thread then
        last_us = now_us()
        local file = io.open(mark .. "-" .. id, "w")
        if file then
            file:close()
        end
        wrk.thread:stop()
    end
end

function done(summary, latency, requests)
    local first, last, ok_total, bad_total = nil, 0, 0, 0
    for _, thread in ipairs(threads) do
        local f, l = thread:get("first_us"), thread:get("last_us")
        if f and f > 0 and (first == nil or f < first) then
            first = f
        end
        if l and l > last then
            last = l
        end
        ok_total = ok_total + (thread:get("ok") or 0)
        bad_total = bad_total + (thread:get("non_2xx") or 0)
    end
    local e = summary.errors
    io.write(string.format(
        '{"requests":%d,"ok":%d,"non_2xx":%d,"span_us":%.0f,"duration_us":%d,' ..
        '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
        '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
        summary.requests, ok_total, bad_total, (first and last > first) and (last - first) or 0,
        summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
        latency:percentile(50), latency:percentile(90), latency:percentile(99),
        latency.max, latency.mean))
end
