-- wrk script: GET /recommendations?n=10 with a user id varying per request.
-- Mostly known users u-000000..u-019999; one request in ten is a cold id.
-- Every thread seeds its own generator, so threads do not replay one sequence.

local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("seed", counter)
end

function init(args)
  math.randomseed(os.time() * 1000 + (seed or 0))
end

function request()
  local user
  if math.random() < 0.9 then
    user = string.format("u-%06d", math.random(0, 19999))
  else
    user = string.format("cold-%d", math.random(0, 999999))
  end
  return wrk.format("GET", "/recommendations?n=10&user_id=" .. user)
end
