package main

import (
	"encoding"
	"encoding/json"
	"flag"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// bind makes the field p points to the flag name of fs, with the flag
// package's own parsing. p is a pointer to a string, int, int64, float64,
// time.Duration, bool or []string (a comma-separated list), a type that
// reads and writes itself as text, or a flag.Value; anything else is an
// error in the settings table.
func bind(fs *flag.FlagSet, name string, p any) error {
	switch p := p.(type) {
	case *string:
		fs.StringVar(p, name, *p, "")
	case *int:
		fs.IntVar(p, name, *p, "")
	case *int64:
		fs.Int64Var(p, name, *p, "")
	case *float64:
		fs.Float64Var(p, name, *p, "")
	case *time.Duration:
		fs.DurationVar(p, name, *p, "")
	case *bool:
		fs.BoolVar(p, name, *p, "")
	case *[]string:
		fs.Var(commaList{p}, name, "")
	case interface {
		encoding.TextUnmarshaler
		encoding.TextMarshaler
	}:
		fs.TextVar(p, name, p, "")
	case flag.Value:
		fs.Var(p, name, "")
	default:
		return fmt.Errorf("setting %s: a field of type %T", name, p)
	}
	return nil
}

// sign is -1, 0 or 1 for the field p points to when it is a number (a
// duration or a limit), and number false otherwise. NaN counts as
// positive: the package that takes it refuses it.
func sign(p any) (s int, number bool) {
	var f float64
	switch p := p.(type) {
	case *int:
		f = float64(*p)
	case *int64:
		f = float64(*p)
	case *float64:
		f = *p
	case *time.Duration:
		f = float64(*p)
	default:
		return 0, false
	}
	switch {
	case f < 0:
		return -1, true
	case f == 0:
		return 0, true
	}
	return 1, true
}

// copyField sets the field dst points to from the one src points to.
func copyField(dst, src any) { reflect.ValueOf(dst).Elem().Set(reflect.ValueOf(src).Elem()) }

// show is the field p points to as -h and the README show it; durations
// without their zero units (1h, 5m, 25s).
func show(p any) string {
	switch p := p.(type) {
	case *time.Duration:
		s := p.String()
		if strings.HasSuffix(s, "m0s") {
			s = strings.TrimSuffix(s, "0s")
		}
		if strings.HasSuffix(s, "h0m") {
			s = strings.TrimSuffix(s, "0m")
		}
		return s
	case *[]string:
		return strings.Join(*p, ",")
	case encoding.TextMarshaler:
		b, _ := p.MarshalText()
		return string(b)
	case fmt.Stringer:
		return p.String()
	}
	return fmt.Sprint(reflect.ValueOf(p).Elem())
}

// commaList is a comma-separated setting.
type commaList struct{ p *[]string }

func (l commaList) Set(s string) error {
	*l.p = nil
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			*l.p = append(*l.p, item)
		}
	}
	return nil
}

func (l commaList) String() string {
	if l.p == nil {
		return ""
	}
	return strings.Join(*l.p, ",")
}

// notBool is a bool setting that sets a field meaning its opposite, as
// --pool-warm sets slngpool.Options.DisableWarm.
type notBool struct{ p *bool }

func (n notBool) Set(s string) error {
	b, err := strconv.ParseBool(s)
	*n.p = !b
	return err
}

func (n notBool) String() string   { return strconv.FormatBool(n.p == nil || !*n.p) }
func (n notBool) IsBoolFlag() bool { return true }

// protoList is a setting holding a JSON object, or an array of them, read
// as protobuf messages of type T in the JSON form grpcurl users send.
type protoList[T proto.Message] struct{ p *[]T }

func (l protoList[T]) Set(text string) error {
	text = strings.TrimSpace(text)
	*l.p = nil
	if text == "" {
		return nil
	}
	raws := []json.RawMessage{json.RawMessage(text)}
	if strings.HasPrefix(text, "[") {
		if err := json.Unmarshal([]byte(text), &raws); err != nil {
			return err
		}
	}
	for _, raw := range raws {
		var m T
		m = m.ProtoReflect().Type().New().Interface().(T)
		if err := protojson.Unmarshal(raw, m); err != nil {
			return err
		}
		*l.p = append(*l.p, m)
	}
	return nil
}

func (l protoList[T]) String() string {
	if l.p == nil || len(*l.p) == 0 {
		return ""
	}
	parts := make([]string, len(*l.p))
	for i, m := range *l.p {
		b, _ := protojson.Marshal(m)
		parts[i] = string(b)
	}
	return "[" + strings.Join(parts, ",") + "]"
}
