-- The actions weir's kubectl plugin offers (weir promote/abort/retry/pause/resume),
-- enabled in the phases where weir acts on them.
local actions = {}
local phase = ""
if obj.status ~= nil and obj.status.phase ~= nil then
  phase = obj.status.phase
end
local paused = obj.metadata.annotations ~= nil and obj.metadata.annotations["weir.dev/paused"] == "true"
local canary = phase == "Progressing" or phase == "Paused"
actions["promote"] = {["disabled"] = not canary, ["iconClass"] = "fa fa-fw fa-forward"}
actions["abort"] = {["disabled"] = not (canary or phase == "Promoting"), ["iconClass"] = "fa fa-fw fa-times-circle"}
actions["retry"] = {["disabled"] = phase ~= "RolledBack", ["iconClass"] = "fa fa-fw fa-redo-alt"}
actions["pause"] = {["disabled"] = paused or phase ~= "Progressing", ["iconClass"] = "fa fa-fw fa-pause-circle"}
actions["resume"] = {["disabled"] = not paused, ["iconClass"] = "fa fa-fw fa-play-circle"}
return actions
