-- `weir pause`: the canary holds its weight and its deadline stops until resumed.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["weir.dev/paused"] = "true"
return obj
