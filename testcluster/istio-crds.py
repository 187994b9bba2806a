#!/usr/bin/env python3
"""Writes testcluster/istio-crds.yaml: weir's own structural schemas for the Istio objects
its tests install. The fields weir reads and writes are typed as Istio types them;
everything else is preserved as unknown fields. tests/istio_crds.rs checks the typed
fields against Istio's generated CRDs when ../shared is present."""
import os
import yaml

pres = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
strmap = {"type": "object", "additionalProperties": {"type": "string"}}
destination = {"type": "object", "required": ["host"], "properties": {
    "host": {"type": "string"}, "subset": {"type": "string"},
    "port": {"type": "object", "properties": {"number": {"type": "integer", "minimum": 0, "maximum": 4294967295}}}}}
route = {"type": "array", "items": {"type": "object", "required": ["destination"], "x-kubernetes-preserve-unknown-fields": True,
    "properties": {"destination": destination, "weight": {"type": "integer", "format": "int32"}}}}
http = {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
    "properties": {"name": {"type": "string"}, "route": route}}}
vs_spec = {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {
    "hosts": {"type": "array", "items": {"type": "string"}}, "gateways": {"type": "array", "items": {"type": "string"}},
    "exportTo": {"type": "array", "items": {"type": "string"}}, "http": http}}
dr_spec = {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {
    "host": {"type": "string"}, "trafficPolicy": pres,
    "subsets": {"type": "array", "items": {"type": "object", "required": ["name"], "x-kubernetes-preserve-unknown-fields": True,
        "properties": {"name": {"type": "string"}, "labels": strmap, "trafficPolicy": pres}}}}}


def crd(group, kind, plural, short, spec, versions, columns):
    schema = {"openAPIV3Schema": {"type": "object", "properties": {"spec": spec, "status": pres}}}
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}"},
            "spec": {"group": group, "scope": "Namespaced",
                     "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": kind + "List",
                               "shortNames": short},
                     "versions": [{"name": v, "served": True, "storage": v == "v1", "schema": schema,
                                   "subresources": {"status": {}}, "additionalPrinterColumns": columns}
                                  for v in versions]}}


age = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
docs = [
    crd("networking.istio.io", "VirtualService", "virtualservices", ["vs"], vs_spec, ["v1", "v1beta1", "v1alpha3"],
        [{"name": "Gateways", "type": "string", "jsonPath": ".spec.gateways"},
         {"name": "Hosts", "type": "string", "jsonPath": ".spec.hosts"}, age]),
    crd("networking.istio.io", "DestinationRule", "destinationrules", ["dr"], dr_spec, ["v1", "v1beta1", "v1alpha3"],
        [{"name": "Host", "type": "string", "jsonPath": ".spec.host"}, age]),
    crd("security.istio.io", "PeerAuthentication", "peerauthentications", ["pa"], pres, ["v1", "v1beta1"], [age]),
]
header = """# Istio's networking CRDs (VirtualService, DestinationRule; v1, v1beta1, v1alpha3) and
# PeerAuthentication, as weir's tests install them. The fields weir reads and writes are
# typed as in Istio's generated CRDs (tests/istio_crds.rs compares them when
# ../shared/istio/networking-crds.yaml is present); every other field is preserved.
# Made by testcluster/istio-crds.py.
"""
class NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data):
        return True


out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "istio-crds.yaml")
with open(out, "w") as f:
    f.write(header + yaml.dump_all(docs, Dumper=NoAliases, sort_keys=False))
