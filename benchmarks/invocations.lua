-- wrk script: POST /invocations (MLflow's scoring server) with a JSON body
-- naming one user per request: mostly known users, one in ten a cold id.

local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("seed", counter)
end

function init(args)
  math.randomseed(os.time() * 1000 + (seed or 0))
end

local headers = {["Content-Type"] = "application/json"}

function request()
  local user
  if math.random() < 0.9 then
    user = string.format("u-%06d", math.random(0, 19999))
  else
    user = string.format("cold-%d", math.random(0, 999999))
  end
  local body = '{"dataframe_split": {"columns": ["user_id"], "data": [["' .. user .. '"]]}}'
  return wrk.format("POST", "/invocations", headers, body)
end
