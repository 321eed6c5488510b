-- Put before each request script by benchmarks/run.py: a user id per request,
-- mostly known users u-000000..u-019999, one request in ten a cold id. Every
-- thread seeds its own generator, so threads do not replay one sequence.

local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("seed", counter)
end

function init(args)
  math.randomseed(os.time() * 1000 + (seed or 0))
end

function next_user()
  if math.random() < 0.9 then
    return string.format("u-%06d", math.random(0, 19999))
  end
  return string.format("cold-%d", math.random(0, 999999))
end
