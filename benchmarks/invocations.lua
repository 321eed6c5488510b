-- wrk script: POST /invocations (MLflow's scoring server) with a JSON body
-- naming one user from next_user() (users.lua).

local headers = {["Content-Type"] = "application/json"}

function request()
  local body = '{"dataframe_split": {"columns": ["user_id"], "data": [["' .. next_user() ..
    '"]]}}'
  return wrk.format("POST", "/invocations", headers, body)
end
