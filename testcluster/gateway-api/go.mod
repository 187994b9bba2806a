// Pins Gateway API for the tests: testcluster/gateway-api-crds.sh installs its
// standard-channel CRDs (from the Go module cache) in the local cluster.
module weir.dev/testcluster/gateway-api

go 1.26.0

require sigs.k8s.io/gateway-api v1.6.3
