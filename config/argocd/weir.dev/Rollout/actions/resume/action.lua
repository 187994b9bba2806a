-- `weir resume`: the paused canary goes on with its step.
if obj.metadata.annotations ~= nil then
  obj.metadata.annotations["weir.dev/paused"] = nil
end
return obj
