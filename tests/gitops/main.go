// weir-gitops runs weir's Argo CD customizations (config/argocd) the way Argo CD does,
// with gopher-lua, the Lua engine Argo CD embeds, and computes kstatus
// (sigs.k8s.io/cli-utils), the library Flux's health checks and `kubectl wait`-style
// tools use, for the same objects. Built from this pinned module into weir's cache,
// like the local control plane; only tests use it.
//
//	weir-gitops test DIR          Argo CD's test files in DIR: health_test.yaml and
//	                              actions/action_test.yaml; exit 1 on a failure
//	weir-gitops read DIR FILE...  one JSON line per object: Argo CD health, the actions
//	                              offered, and kstatus
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: weir-gitops test DIR | weir-gitops read DIR FILE...")
		os.Exit(2)
	}
	dir := os.Args[2]
	switch os.Args[1] {
	case "test":
		failures, err := runTests(dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		for _, f := range failures {
			fmt.Println("FAIL", f)
		}
		if len(failures) > 0 {
			os.Exit(1)
		}
	case "read":
		for _, file := range os.Args[3:] {
			if err := read(dir, file); err != nil {
				fmt.Fprintf(os.Stderr, "%s: %v\n", file, err)
				os.Exit(2)
			}
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(2)
	}
}

// What `read` prints for one object.
type reading struct {
	File    string          `json:"file"`
	Health  health          `json:"health"`
	Actions map[string]bool `json:"actions"` // name → disabled
	Kstatus health          `json:"kstatus"`
}

type health struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

func read(dir, file string) error {
	obj, err := loadObject(file)
	if err != nil {
		return err
	}
	h, err := runHealth(dir, obj)
	if err != nil {
		return err
	}
	actions, err := runDiscovery(filepath.Join(dir, "actions"), obj)
	if err != nil {
		return err
	}
	offered := map[string]bool{}
	for _, a := range actions {
		offered[a.Name] = a.Disabled
	}
	k, err := kstatus(obj)
	if err != nil {
		return err
	}
	line, err := json.Marshal(reading{File: file, Health: h, Actions: offered, Kstatus: k})
	if err != nil {
		return err
	}
	fmt.Println(string(line))
	return nil
}
