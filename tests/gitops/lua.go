package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	lua "github.com/yuin/gopher-lua"
)

// A fixed clock for action tests, so an action that stamps os.time() has one expected
// output (2026-01-01T00:00:00Z).
const testTime = 1767225600

// newVM is a Lua state as Argo CD sets one up for resource customizations: no libraries
// but base, table, string, math and coroutine; `os` only through require("os"), and
// only its clock functions; `obj` the object as a table; a time limit.
func newVM(obj map[string]any, now func() int64) (*lua.LState, context.CancelFunc) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.StringLibName, lua.OpenString},
		{lua.MathLibName, lua.OpenMath},
		{lua.CoroutineLibName, lua.OpenCoroutine},
	} {
		l.Push(l.NewFunction(lib.open))
		l.Push(lua.LString(lib.name))
		l.Call(1, 0)
	}
	l.PreloadModule("os", func(l *lua.LState) int {
		mod := l.NewTable()
		l.SetField(mod, "time", l.NewFunction(func(l *lua.LState) int {
			l.Push(lua.LNumber(now()))
			return 1
		}))
		l.SetField(mod, "date", l.NewFunction(func(l *lua.LState) int {
			l.Push(lua.LString(time.Unix(now(), 0).UTC().Format(time.RFC3339)))
			return 1
		}))
		l.Push(mod)
		return 1
	})
	l.SetGlobal("obj", toLua(l, obj))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	l.SetContext(ctx)
	return l, func() { cancel(); l.Close() }
}

func wallClock() int64 { return time.Now().Unix() }
func testClock() int64 { return testTime }

// run loads script and runs it on obj; the table it returns, as Go values.
func run(script string, obj map[string]any, now func() int64) (any, error) {
	code, err := os.ReadFile(script)
	if err != nil {
		return nil, err
	}
	l, done := newVM(obj, now)
	defer done()
	if err := l.DoString(string(code)); err != nil {
		return nil, fmt.Errorf("%s: %w", script, err)
	}
	return fromLua(l.Get(-1)), nil
}

func runHealth(dir string, obj map[string]any) (health, error) {
	out, err := run(filepath.Join(dir, "health.lua"), obj, wallClock)
	if err != nil {
		return health{}, err
	}
	table, ok := out.(map[string]any)
	if !ok {
		return health{}, fmt.Errorf("health.lua returned %T, not a table", out)
	}
	status, _ := table["status"].(string)
	message, _ := table["message"].(string)
	switch status {
	case "Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown":
	default:
		return health{}, fmt.Errorf("health.lua returned status %q, which Argo CD does not know", status)
	}
	return health{Status: status, Message: message}, nil
}

type action struct {
	Name     string `json:"name"`
	Disabled bool   `json:"disabled"`
}

func runDiscovery(dir string, obj map[string]any) ([]action, error) {
	out, err := run(filepath.Join(dir, "discovery.lua"), obj, wallClock)
	if err != nil {
		return nil, err
	}
	table, ok := out.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("discovery.lua returned %T, not a table", out)
	}
	var actions []action
	for name, v := range table {
		fields, _ := v.(map[string]any)
		disabled, _ := fields["disabled"].(bool)
		if _, err := os.Stat(filepath.Join(dir, name, "action.lua")); err != nil {
			return nil, fmt.Errorf("discovery offers %q, which has no action.lua", name)
		}
		actions = append(actions, action{Name: name, Disabled: disabled})
	}
	sort.Slice(actions, func(i, j int) bool { return actions[i].Name < actions[j].Name })
	return actions, nil
}

// toLua converts a decoded JSON value as Argo CD passes objects: maps to tables with
// string keys, lists to sequences.
func toLua(l *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case int:
		return lua.LNumber(v)
	case []any:
		t := l.NewTable()
		for _, item := range v {
			t.Append(toLua(l, item))
		}
		return t
	case map[string]any:
		t := l.NewTable()
		for k, item := range v {
			t.RawSetString(k, toLua(l, item))
		}
		return t
	default:
		panic(fmt.Sprintf("toLua: %T", v))
	}
}

// fromLua converts back: a table with a sequence part is a list, any other a map.
func fromLua(v lua.LValue) any {
	switch v := v.(type) {
	case *lua.LNilType:
		return nil
	case lua.LBool:
		return bool(v)
	case lua.LString:
		return string(v)
	case lua.LNumber:
		if float64(v) == float64(int64(v)) {
			return int64(v)
		}
		return float64(v)
	case *lua.LTable:
		if n := v.MaxN(); n > 0 {
			list := make([]any, 0, n)
			for i := 1; i <= n; i++ {
				list = append(list, fromLua(v.RawGetInt(i)))
			}
			return list
		}
		m := map[string]any{}
		v.ForEach(func(k, item lua.LValue) { m[k.String()] = fromLua(item) })
		return m
	default:
		return v.String()
	}
}

// restoreEmptyLists undoes what the round trip through Lua cannot keep: an empty list
// comes back as an empty table, read as a map. Where the object had a list, it is a
// list again (Argo CD does the same before it diffs an action's result).
func restoreEmptyLists(out, original any) any {
	switch o := original.(type) {
	case []any:
		if m, ok := out.(map[string]any); ok && len(m) == 0 {
			return []any{}
		}
		if list, ok := out.([]any); ok {
			for i := range list {
				if i < len(o) {
					list[i] = restoreEmptyLists(list[i], o[i])
				}
			}
		}
	case map[string]any:
		if m, ok := out.(map[string]any); ok {
			for k, v := range m {
				m[k] = restoreEmptyLists(v, o[k])
			}
		}
	}
	return out
}
