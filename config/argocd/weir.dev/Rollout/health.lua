-- Argo CD health of a weir.dev/Rollout, read from what weir writes in status: the
-- phase, and the conditions kstatus also reads. weir's README has the table.
local hs = {}
local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "waiting for weir to take the Deployment over"
  return hs
end
-- A spec edit weir has not acted on yet: what status says is about the older spec.
if status.observedGeneration == nil or obj.metadata.generation == nil
    or status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "waiting for weir to observe generation " .. tostring(obj.metadata.generation)
  return hs
end
local conditions = {}
if status.conditions ~= nil then
  for _, c in ipairs(status.conditions) do
    conditions[c.type] = c
  end
end
local message = status.message or ""
-- A write of weir's last decision failed (RBAC, a webhook refusing it): it cannot act.
local applied = conditions["Applied"]
if applied ~= nil and applied.status == "False" then
  hs.status = "Degraded"
  hs.message = applied.message
  return hs
end
local phase = status.phase
if phase == "Healthy" or phase == "Succeeded" then
  hs.status = "Healthy"
elseif phase == "Paused" then
  hs.status = "Suspended"
elseif phase == "RolledBack" or phase == "InvalidSpec" then
  hs.status = "Degraded"
else
  -- Initializing, Progressing, Promoting, Deleting, and any phase a newer weir adds.
  hs.status = "Progressing"
  local stuck = conditions["Stuck"]
  if stuck ~= nil and stuck.status == "True" then
    message = "stuck: " .. stuck.message
  end
end
hs.message = message
return hs
