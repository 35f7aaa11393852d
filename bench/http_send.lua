-- wrk script for bench/http_send.py: POST /api/v1/messages/ with mixed purposes over RECIPIENTS recipients.
-- Environment: TOKEN (a service token with the send scope), RECIPIENTS (how many, r1..rN).
-- Counts responses by HTTP status and by the governor's decision; done() prints one JSON line.

local token = os.getenv("TOKEN")
-- CEILING_PATH (e.g. /healthz): GET that path instead, the same server's ceiling with no send behind it.
local ceiling = os.getenv("CEILING_PATH")
local recipients = tonumber(os.getenv("RECIPIENTS") or "10000")
local threads = {}

-- The mix: {weight, channel, purpose, content}
local mix = {
  {40, "email", "transactional", '{"subject": "Your receipt", "body": "Thanks for your order."}'},
  {10, "push", "transactional", '{"title": "Order shipped", "body": "It is on its way.", "action_url": "app://orders"}'},
  {5, "email", "alert", '{"subject": "New sign-in", "body": "A new device signed in to your account."}'},
  {25, "email", "engagement", '{"subject": "New for you", "body": "Three things we think you will like."}'},
  {10, "push", "engagement", '{"title": "Back in stock", "body": "The thing you saved is back.", "action_url": "app://saved"}'},
  {10, "email", "promotional", '{"subject": "This week only", "body": "Ten percent off everything."}'},
}
local total = 0
for _, m in ipairs(mix) do total = total + m[1] end

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  codes = {}
  decisions = {}
  math.randomseed(os.time() + math.floor(os.clock() * 1e6) + (tonumber(tostring({}):sub(8), 16) or 0))
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. token
end

function request()
  if ceiling then return wrk.format("GET", ceiling) end
  local pick = math.random(total)
  local m
  for _, candidate in ipairs(mix) do
    pick = pick - candidate[1]
    if pick <= 0 then m = candidate break end
  end
  local body = string.format('{"recipient": "r%d", "channel": "%s", "purpose": "%s", "content": %s}',
    math.random(recipients), m[2], m[3], m[4])
  return wrk.format(nil, "/api/v1/messages/", nil, body)
end

function response(status, headers, body)
  codes[status] = (codes[status] or 0) + 1
  local decision = body:match('"status"%s*:%s*"(%a+)"') or "none"
  decisions[decision] = (decisions[decision] or 0) + 1
end

local function merge(into, from)
  for k, v in pairs(from) do into[k] = (into[k] or 0) + v end
end

function done(summary, latency, requests)
  local all_codes, all_decisions = {}, {}
  for _, thread in ipairs(threads) do
    merge(all_codes, thread:get("codes"))
    merge(all_decisions, thread:get("decisions"))
  end
  local parts = {}
  for k, v in pairs(all_codes) do table.insert(parts, string.format('"%s": %d', k, v)) end
  local dparts = {}
  for k, v in pairs(all_decisions) do table.insert(dparts, string.format('"%s": %d', k, v)) end
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d,'
    .. ' "socket_errors": %d, "codes": {%s}, "decisions": {%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect + e.read + e.write + e.timeout,
    table.concat(parts, ", "), table.concat(dparts, ", ")))
end
