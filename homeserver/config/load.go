package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Duration is a time.Duration written in config as "5m", "30s", "1h30m".
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalYAML reads a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration such as 30s, 5m or 1h", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// Load reads the file at path over the defaults and then applies environment overrides. A missing
// path ("") means defaults plus environment. The problems returned are those of reading (unknown
// keys, wrong types); call Validate for the values.
func Load(path string, environ []string) (*Config, []Problem, error) {
	cfg := Default()
	var problems []Problem
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, nil, err
		}
		problems = append(problems, Parse(data, cfg)...)
	}
	problems = append(problems, ApplyEnv(cfg, environ)...)
	return cfg, problems, nil
}

// Parse reads YAML over cfg and reports unknown keys and type errors with their key paths.
func Parse(data []byte, cfg *Config) []Problem {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return []Problem{{Path: "(file)", Message: err.Error()}}
	}
	if len(root.Content) == 0 {
		return nil
	}
	var ps []Problem
	decodeNode(root.Content[0], reflect.ValueOf(cfg).Elem(), "", &ps)
	return ps
}

// decodeNode walks a mapping node against a struct so that every unknown key and every bad value is
// reported with its path, instead of stopping at the first.
func decodeNode(n *yaml.Node, v reflect.Value, path string, ps *[]Problem) {
	if v.Kind() != reflect.Struct || n.Kind != yaml.MappingNode {
		if err := n.Decode(v.Addr().Interface()); err != nil {
			*ps = append(*ps, Problem{Path: orRoot(path), Message: cleanYAMLError(err)})
		}
		return
	}
	if _, custom := v.Addr().Interface().(yaml.Unmarshaler); custom {
		if err := n.Decode(v.Addr().Interface()); err != nil {
			*ps = append(*ps, Problem{Path: orRoot(path), Message: cleanYAMLError(err)})
		}
		return
	}
	fields := fieldsByKey(v)
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := n.Content[i].Value, n.Content[i+1]
		p := join(path, key)
		f, ok := fields[key]
		if !ok {
			*ps = append(*ps, Problem{Path: p, Message: fmt.Sprintf("unknown key (line %d)", n.Content[i].Line)})
			continue
		}
		if f.Kind() == reflect.Pointer && val.Tag != "!!null" {
			f.Set(reflect.New(f.Type().Elem()))
			f = f.Elem()
		}
		if f.Kind() == reflect.Struct && val.Kind == yaml.MappingNode {
			decodeNode(val, f, p, ps)
			continue
		}
		if val.Tag == "!!null" {
			f.Set(reflect.Zero(f.Type()))
			continue
		}
		if err := val.Decode(f.Addr().Interface()); err != nil {
			*ps = append(*ps, Problem{Path: p, Message: cleanYAMLError(err)})
		}
	}
}

func cleanYAMLError(err error) string {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "yaml: unmarshal errors:\n  ")
	return strings.ReplaceAll(msg, "\n  ", "; ")
}

func fieldsByKey(v reflect.Value) map[string]reflect.Value {
	m := make(map[string]reflect.Value)
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		key, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if key != "" && key != "-" {
			m[key] = v.Field(i)
		}
	}
	return m
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func orRoot(p string) string {
	if p == "" {
		return "(root)"
	}
	return p
}

// EnvPrefix starts every environment override.
const EnvPrefix = "HS_"

// EnvName is the environment variable that overrides the key at path (database.postgres_dsn ->
// HS_DATABASE_POSTGRES_DSN).
func EnvName(path string) string {
	return EnvPrefix + strings.ToUpper(strings.NewReplacer(".", "_").Replace(path))
}

// ApplyEnv sets every key that has an environment variable in environ (os.Environ() form). Lists are
// comma-separated. Unknown HS_ variables are reported, so a typo does not pass silently; HS_CONFIG
// (the config file path) and the test harness's HS_TEST_* and HS_E2E_* are not config keys.
func ApplyEnv(cfg *Config, environ []string) []Problem {
	env := make(map[string]string)
	for _, kv := range environ {
		k, val, ok := strings.Cut(kv, "=")
		if ok && strings.HasPrefix(k, EnvPrefix) {
			env[k] = val
		}
	}
	if len(env) == 0 {
		return nil
	}
	var ps []Problem
	used := make(map[string]bool)
	Walk(cfg, func(path string, f reflect.Value) {
		name := EnvName(path)
		raw, ok := env[name]
		if !ok {
			return
		}
		used[name] = true
		if err := setFromString(f, raw); err != nil {
			ps = append(ps, Problem{Path: path, Message: fmt.Sprintf("from %s: %v", name, err)})
		}
	})
	for k := range env {
		if !used[k] && k != "HS_CONFIG" && !strings.HasPrefix(k, "HS_TEST_") && !strings.HasPrefix(k, "HS_E2E_") {
			ps = append(ps, Problem{Path: k, Message: "environment variable matches no config key"})
		}
	}
	return ps
}

// Walk calls fn for every leaf (non-struct) key of cfg with its dotted path.
func Walk(cfg *Config, fn func(path string, v reflect.Value)) {
	walk(reflect.ValueOf(cfg).Elem(), "", fn)
}

var durationType = reflect.TypeOf(Duration(0))

func walk(v reflect.Value, path string, fn func(string, reflect.Value)) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		key, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if key == "" || key == "-" {
			continue
		}
		f := v.Field(i)
		p := join(path, key)
		if f.Kind() == reflect.Struct && f.Type() != durationType {
			walk(f, p, fn)
			continue
		}
		fn(p, f)
	}
}

func setFromString(f reflect.Value, raw string) error {
	if f.Kind() == reflect.Pointer {
		nv := reflect.New(f.Type().Elem())
		if err := setFromString(nv.Elem(), raw); err != nil {
			return err
		}
		f.Set(nv)
		return nil
	}
	if f.Type() == durationType {
		d, err := time.ParseDuration(raw)
		if err != nil {
			return fmt.Errorf("%q is not a duration", raw)
		}
		f.SetInt(int64(d))
		return nil
	}
	switch f.Kind() {
	case reflect.String:
		f.SetString(raw)
	case reflect.Bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return fmt.Errorf("%q is not true or false", raw)
		}
		f.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not an integer", raw)
		}
		f.SetInt(n)
	case reflect.Float64:
		n, err := strconv.ParseFloat(raw, 64)
		if err != nil {
			return fmt.Errorf("%q is not a number", raw)
		}
		f.SetFloat(n)
	case reflect.Slice:
		var items []string
		for _, s := range strings.Split(raw, ",") {
			if s = strings.TrimSpace(s); s != "" {
				items = append(items, s)
			}
		}
		f.Set(reflect.ValueOf(items))
	default:
		return fmt.Errorf("cannot be set from the environment")
	}
	return nil
}
