-- POST /commands with wrk (https://github.com/wg/wrk), for a server started
-- with `cmdr serve`: each request a new command like `cmdr bench http`'s.
-- Without KEYS (the default) commands carry no key; with KEYS=n in the
-- environment they cycle through n keys. For example:
--   wrk -t1 -c64 -d10s -s bench/wrk-post.lua http://127.0.0.1:3000
--   KEYS=64 wrk -t1 -c64 -d10s -s bench/wrk-post.lua http://127.0.0.1:3000
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local keys = tonumber(os.getenv("KEYS") or "0")
local n = 0
local payload = string.rep("x", 56)

request = function()
  n = n + 1
  local key = ""
  if keys > 0 then
    key = ',"key":"conn-' .. (n % keys) .. '"'
  end
  local body = '{"action":"bench-command","data":{"n":' .. n
    .. ',"payload":"' .. payload .. '"}' .. key .. '}'
  return wrk.format(nil, "/commands", nil, body)
end
