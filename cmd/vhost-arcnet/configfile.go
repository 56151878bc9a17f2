package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// The config file (--config FILE) is TOML with the flags' names as its
// keys: a bool for a switch (poll = true), an integer for a number, an
// array of strings for a repeatable flag (a single string is one element),
// a string for everything else. Its values go through the flags' own Set,
// so they are checked exactly as on the command line. A flag given on the
// command line overrides the file's key; for a repeatable flag the
// command line's values replace the file's list.
//
// go-toml/v2 reads it: its errors carry the line, and its parser gives
// the line of every key, so that an unknown key or a bad value is reported
// as "config file vm.toml:12: ...". (BurntSushi/toml keeps key positions
// to itself: MetaData.Undecoded names an unknown key without its line.)

// readFile sets the values of path's keys, except those in given (set on
// the command line).
func (f *flags) readFile(path string, given map[string]bool) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	var doc map[string]any
	if err := toml.Unmarshal(data, &doc); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			line, _ := de.Position()
			return fmt.Errorf("config file %s:%d: %s", path, line, strings.TrimPrefix(de.Error(), "toml: "))
		}
		return fmt.Errorf("config file %s: %w", path, err)
	}
	lines := keyLines(data)
	keys := make([]string, 0, len(doc))
	for k := range doc {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return lines[a] - lines[b] })
	for _, k := range keys {
		where := fmt.Sprintf("config file %s:%d", path, lines[k])
		fl := f.fset.Lookup(k)
		switch {
		case commandLineOnly[k]:
			return fmt.Errorf("%s: %q is a command-line flag only", where, k)
		case fl == nil:
			if s := f.suggest(k); s != "" {
				return fmt.Errorf("%s: unknown key %q (did you mean %q?)", where, k, s)
			}
			return fmt.Errorf("%s: unknown key %q", where, k)
		case given[k]:
			continue // the command line overrides the file
		}
		f.origin[k] = where
		if err := setTOML(fl, doc[k]); err != nil {
			return fmt.Errorf("%s: %s %w", where, k, err)
		}
	}
	return nil
}

// setTOML sets flag fl from a config file's value v, which must have the
// TOML type of the flag's value.
func setTOML(fl *flag.Flag, v any) error {
	set := func(s string) error {
		if err := fl.Value.Set(s); err != nil {
			return fmt.Errorf("%q: %w", s, err)
		}
		return nil
	}
	switch fl.Value.(option).TOML().(type) {
	case bool:
		b, ok := v.(bool)
		if !ok {
			return fmt.Errorf("%s: want true or false", describeTOML(v))
		}
		return set(strconv.FormatBool(b))
	case int64:
		n, ok := v.(int64)
		if !ok {
			return fmt.Errorf("%s: want an integer", describeTOML(v))
		}
		return set(strconv.FormatInt(n, 10))
	case []string:
		switch v := v.(type) {
		case string:
			return set(v)
		case []any:
			for _, e := range v {
				s, ok := e.(string)
				if !ok {
					return fmt.Errorf("%s in the array: want strings", describeTOML(e))
				}
				if err := set(s); err != nil {
					return err
				}
			}
			return nil
		}
		return fmt.Errorf("%s: want an array of strings", describeTOML(v))
	default:
		s, ok := v.(string)
		if !ok {
			return fmt.Errorf("%s: want a string", describeTOML(v))
		}
		return set(s)
	}
}

// describeTOML names a decoded value's TOML type, with the value when
// short.
func describeTOML(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("string %q", v)
	case int64:
		return fmt.Sprintf("integer %d", v)
	case float64:
		return fmt.Sprintf("float %v", v)
	case bool:
		return fmt.Sprintf("boolean %v", v)
	case []any:
		return "array"
	case map[string]any:
		return "table"
	}
	return fmt.Sprintf("%T", v)
}

// keyLines returns the line of each top-level key of a TOML document that
// toml.Unmarshal accepted: a key = value before the first table, or the
// first part of a table header ([name] or name.sub = ...).
func keyLines(data []byte) map[string]int {
	lines := map[string]int{}
	var p unstable.Parser
	p.Reset(data)
	inTable := false
	for p.NextExpression() {
		e := p.Expression()
		var it unstable.Iterator
		switch e.Kind {
		case unstable.KeyValue:
			if inTable {
				continue
			}
			it = e.Key()
		case unstable.Table, unstable.ArrayTable:
			inTable = true
			it = e.Key()
		default:
			continue
		}
		if it.Next() {
			k := string(it.Node().Data)
			if _, ok := lines[k]; !ok {
				lines[k] = p.Shape(e.Raw).Start.Line
				if r := it.Node().Raw; r.Length > 0 {
					lines[k] = p.Shape(r).Start.Line
				}
			}
		}
	}
	return lines
}

// suggest returns the flag name closest to an unknown key, if it is a
// likely typo (at most two edits).
func (f *flags) suggest(key string) string {
	best, bestD := "", 3
	f.fset.VisitAll(func(fl *flag.Flag) {
		if commandLineOnly[fl.Name] {
			return
		}
		if d := editDistance(key, fl.Name); d < bestD {
			best, bestD = fl.Name, d
		}
	})
	return best
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// print writes the configuration as a config file: every key, defaults
// included, each after its flag's help (and default) as a comment.
func (f *flags) print(w io.Writer) error {
	var b strings.Builder
	b.WriteString("# vhost-arcnet configuration: the flags' names without the dashes.\n")
	b.WriteString("# Flags given on the command line override these keys.\n")
	f.fset.VisitAll(func(fl *flag.Flag) {
		if commandLineOnly[fl.Name] {
			return
		}
		_, usage := flag.UnquoteUsage(fl)
		b.WriteString("\n")
		for _, l := range wrap(usage, 96) {
			b.WriteString("# " + l + "\n")
		}
		def := fl.DefValue
		if def != "" && def != "false" && def != "0" {
			b.WriteString("# default: " + def + "\n")
		}
		b.WriteString(fl.Name + " = " + tomlLiteral(fl.Value.(option).TOML()) + "\n")
	})
	_, err := io.WriteString(w, b.String())
	return err
}

// wrap splits s into lines of at most width bytes, at spaces.
func wrap(s string, width int) []string {
	var out []string
	line := ""
	for _, w := range strings.Fields(s) {
		if line != "" && len(line)+1+len(w) > width {
			out = append(out, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	return append(out, line)
}

// tomlLiteral writes a bool, an int64, a string or a []string as TOML.
func tomlLiteral(v any) string {
	switch v := v.(type) {
	case bool:
		return strconv.FormatBool(v)
	case int64:
		return strconv.FormatInt(v, 10)
	case string:
		return tomlString(v)
	case []string:
		q := make([]string, len(v))
		for i, s := range v {
			q[i] = tomlString(s)
		}
		return "[" + strings.Join(q, ", ") + "]"
	}
	panic(fmt.Sprintf("tomlLiteral: %T", v))
}

// tomlString quotes s as a TOML basic string (TOML 1.0 "String"): ", \ and
// control characters escaped, invalid UTF-8 replaced.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		case r == utf8.RuneError:
			b.WriteString(`\uFFFD`)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// configCommand runs "vhost-arcnet config print [flags]": the effective
// configuration (defaults, config file, flags) as a config file. It
// returns the exit code.
func configCommand(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "print" {
		fmt.Fprintln(stderr, "usage: vhost-arcnet config print [--config FILE] [flags]")
		return 2
	}
	_, f, err := parseConfig(args[1:], stderr, true)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errVersion):
		fmt.Fprintln(stdout, version())
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "vhost-arcnet: %v\n", err)
		return 2
	}
	if err := f.print(stdout); err != nil {
		fmt.Fprintf(stderr, "vhost-arcnet: %v\n", err)
		return 1
	}
	return 0
}
