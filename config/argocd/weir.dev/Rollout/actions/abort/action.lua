-- `weir abort`: a weir.dev/request annotation weir acts on exactly once. The
-- resourceVersion makes each request new (two in one second are two requests).
local os = require("os")
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["weir.dev/request"] = "abort/" .. tostring(os.time()) .. "-" .. tostring(obj.metadata.resourceVersion)
return obj
