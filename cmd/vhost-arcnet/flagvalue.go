package main

import (
	"flag"
	"fmt"
	"strconv"
	"strings"
)

// option is the value of one flag. The same Set validates a value from the
// command line and from the config file (configfile.go), so there is one
// validation; TOML gives the value as a config file holds it.
type option interface {
	flag.Value
	// TOML returns the value as written in a config file: a bool, an
	// int64, a string or a []string (repeatable flags).
	TOML() any
}

// setFailure is the last value a Set refused, kept so that parseFlags can
// report it as "--NAME VALUE: reason" rather than in the flag package's
// words.
type setFailure struct {
	name, value string
	err         error
}

// scalar is a flag with one value of type T, parsed and checked by parse.
type scalar[T any] struct {
	name   string
	failed **setFailure
	v      T
	parse  func(string) (T, error)
	format func(T) string
}

func (s *scalar[T]) String() string {
	if s.format == nil {
		return fmt.Sprint(s.v) // the zero value the flag package makes
	}
	return s.format(s.v)
}

func (s *scalar[T]) Set(v string) error {
	x, err := s.parse(v)
	if err != nil {
		if s.failed != nil {
			*s.failed = &setFailure{s.name, v, err}
		}
		return err
	}
	s.v = x
	return nil
}

// TOML returns bools and integers as such and everything else as its
// string form.
func (s *scalar[T]) TOML() any {
	switch v := any(s.v).(type) {
	case bool:
		return v
	case int:
		return int64(v)
	}
	return s.String()
}

// boolScalar is a scalar[bool] that the flag package treats as a switch
// (--poll rather than --poll=true).
type boolScalar struct{ scalar[bool] }

func (*boolScalar) IsBoolFlag() bool { return true }

// list is a repeatable flag: each Set appends one value of type T. raw
// keeps the values as given, for String and TOML.
type list[T any] struct {
	name   string
	failed **setFailure
	raw    []string
	vals   []T
	parse  func(string) (T, error)
}

func (l *list[T]) String() string { return strings.Join(l.raw, ",") }

func (l *list[T]) Set(v string) error {
	x, err := l.parse(v)
	if err != nil {
		if l.failed != nil {
			*l.failed = &setFailure{l.name, v, err}
		}
		return err
	}
	l.raw = append(l.raw, v)
	l.vals = append(l.vals, x)
	return nil
}

func (l *list[T]) TOML() any { return append([]string{}, l.raw...) }

// The parsers shared by several flags.

func parseString(s string) (string, error) { return s, nil }

func parseBool(s string) (bool, error) {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, fmt.Errorf("want true or false")
	}
	return b, nil
}

// intIn returns a parser of decimal integers from lo to hi.
func intIn(lo, hi int) func(string) (int, error) {
	return func(s string) (int, error) {
		n, err := strconv.Atoi(s)
		if err != nil {
			return 0, fmt.Errorf("want an integer from %d to %d", lo, hi)
		}
		if n < lo || n > hi {
			return 0, fmt.Errorf("want %d..%d", lo, hi)
		}
		return n, nil
	}
}

func formatInt(n int) string { return strconv.Itoa(n) }

// nonEmpty is the parser of paths.
func nonEmpty(s string) (string, error) {
	if s == "" {
		return "", fmt.Errorf("empty path")
	}
	return s, nil
}
