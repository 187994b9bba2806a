package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"

	"sigs.k8s.io/yaml"
)

// Argo CD's test files for a resource customization, as its repository lays them out.
type healthTests struct {
	Tests []struct {
		HealthStatus health `json:"healthStatus"`
		InputPath    string `json:"inputPath"`
	} `json:"tests"`
}

type actionTests struct {
	DiscoveryTests []struct {
		InputPath string   `json:"inputPath"`
		Result    []action `json:"result"`
	} `json:"discoveryTests"`
	ActionTests []struct {
		Action             string `json:"action"`
		InputPath          string `json:"inputPath"`
		ExpectedOutputPath string `json:"expectedOutputPath"`
	} `json:"actionTests"`
}

func loadObject(path string) (map[string]any, error) {
	bytes, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var obj map[string]any
	if err := yaml.Unmarshal(bytes, &obj); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return normalise(obj), nil
}

// normalise gives numbers the types Kubernetes' own decoding gives them (int64 when
// whole, float64 otherwise: kstatus reads generations as int64), so objects compare by
// value.
func normalise(obj map[string]any) map[string]any {
	bytes, _ := json.Marshal(obj)
	decoder := json.NewDecoder(strings.NewReader(string(bytes)))
	decoder.UseNumber()
	var out map[string]any
	_ = decoder.Decode(&out)
	return numbers(out).(map[string]any)
}

func numbers(v any) any {
	switch v := v.(type) {
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return i
		}
		f, _ := v.Float64()
		return f
	case []any:
		for i := range v {
			v[i] = numbers(v[i])
		}
	case map[string]any:
		for k := range v {
			v[k] = numbers(v[k])
		}
	}
	return v
}

func loadYAML(path string, into any) error {
	bytes, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return yaml.UnmarshalStrict(bytes, into)
}

// runTests runs every test in dir's health_test.yaml and actions/action_test.yaml; the
// failures, one line each.
func runTests(dir string) ([]string, error) {
	var failures []string
	var ht healthTests
	if err := loadYAML(filepath.Join(dir, "health_test.yaml"), &ht); err != nil {
		return nil, err
	}
	for _, t := range ht.Tests {
		obj, err := loadObject(filepath.Join(dir, t.InputPath))
		if err != nil {
			return nil, err
		}
		got, err := runHealth(dir, obj)
		if err != nil {
			return nil, err
		}
		if got != t.HealthStatus {
			failures = append(failures, fmt.Sprintf("health of %s: %+v, expected %+v", t.InputPath, got, t.HealthStatus))
		}
	}
	actions := filepath.Join(dir, "actions")
	var at actionTests
	if err := loadYAML(filepath.Join(actions, "action_test.yaml"), &at); err != nil {
		return nil, err
	}
	for _, t := range at.DiscoveryTests {
		obj, err := loadObject(filepath.Join(actions, t.InputPath))
		if err != nil {
			return nil, err
		}
		got, err := runDiscovery(actions, obj)
		if err != nil {
			return nil, err
		}
		if !reflect.DeepEqual(got, t.Result) {
			failures = append(failures, fmt.Sprintf("actions of %s: %+v, expected %+v", t.InputPath, got, t.Result))
		}
	}
	for _, t := range at.ActionTests {
		obj, err := loadObject(filepath.Join(actions, t.InputPath))
		if err != nil {
			return nil, err
		}
		expected, err := loadObject(filepath.Join(actions, t.ExpectedOutputPath))
		if err != nil {
			return nil, err
		}
		got, err := run(filepath.Join(actions, t.Action, "action.lua"), obj, testClock)
		if err != nil {
			return nil, err
		}
		gotObj, ok := got.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%s returned %T, not the object", t.Action, got)
		}
		gotObj = normalise(restoreEmptyLists(gotObj, obj).(map[string]any))
		if !reflect.DeepEqual(gotObj, expected) {
			out, _ := yaml.Marshal(gotObj)
			failures = append(failures, fmt.Sprintf("%s on %s differs from %s; got:\n%s", t.Action, t.InputPath, t.ExpectedOutputPath, out))
		}
	}
	fmt.Printf("%d health, %d discovery and %d action tests\n", len(ht.Tests), len(at.DiscoveryTests), len(at.ActionTests))
	return failures, nil
}
