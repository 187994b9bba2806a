package main

import (
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// kstatus is what sigs.k8s.io/cli-utils computes for the object, as Flux's health
// checks and `kstatus`-based waits do.
func kstatus(obj map[string]any) (health, error) {
	res, err := status.Compute(&unstructured.Unstructured{Object: obj})
	if err != nil {
		return health{}, err
	}
	return health{Status: res.Status.String(), Message: res.Message}, nil
}
