-- wrk script: GET /recommendations?n=10 with a filter in every request, for a user from
-- next_user() (users.lua): a city of the sample world, and one request in two also a
-- category, one in four a start-time window.

local cities = {"London", "Manchester", "Berlin", "Paris", "Madrid", "Amsterdam"}
local categories = {"classical", "rock", "jazz", "football", "theatre", "comedy", "pop",
                    "electronic"}

function request()
  local query = "/recommendations?n=10&user_id=" .. next_user()
      .. "&city=" .. cities[math.random(1, #cities)]
  if math.random() < 0.5 then
    query = query .. "&category=" .. categories[math.random(1, #categories)]
  end
  if math.random() < 0.25 then
    query = query .. "&starts_before=" .. os.date("!%Y-%m-%dT%H:%M:%SZ", os.time() + 14 * 86400)
  end
  return wrk.format("GET", query)
end
