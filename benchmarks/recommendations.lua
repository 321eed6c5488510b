-- wrk script: GET /recommendations?n=10 for a user from next_user() (users.lua).

function request()
  return wrk.format("GET", "/recommendations?n=10&user_id=" .. next_user())
end
