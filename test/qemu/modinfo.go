package qemu

import (
	"bytes"
	"debug/elf"
	"fmt"
	"strings"
)

// moduleDepends returns the depends= field of a kernel module's .modinfo
// section (NUL-separated key=value strings written by modpost): the modules
// that must be loaded first. busybox insmod resolves nothing, and the Debian
// kernel package carries no modules.dep, so this is the only source.
func moduleDepends(ko []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, fmt.Errorf("module is not ELF: %w", err)
	}
	defer f.Close()
	s := f.Section(".modinfo")
	if s == nil {
		return nil, fmt.Errorf("module has no .modinfo section")
	}
	b, err := s.Data()
	if err != nil {
		return nil, fmt.Errorf("read .modinfo: %w", err)
	}
	for _, kv := range bytes.Split(b, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			if len(v) == 0 {
				return nil, nil
			}
			return strings.Split(string(v), ","), nil
		}
	}
	return nil, nil
}

// moduleOrder returns the modules of want in an order where every module
// comes after its dependencies (a depth-first topological sort that keeps
// want's order where the dependencies allow). deps maps each module to its
// depends= list. A dependency outside want, or a cycle, is an error: the
// initramfs could not load the module.
func moduleOrder(want []string, deps map[string][]string) ([]string, error) {
	in := make(map[string]bool, len(want))
	for _, m := range want {
		in[m] = true
	}
	const (
		unseen = iota
		visiting
		done
	)
	state := make(map[string]int, len(want))
	order := make([]string, 0, len(want))
	var visit func(m, from string) error
	visit = func(m, from string) error {
		if !in[m] {
			return fmt.Errorf("module %s needs %s, which is not in the module list", from, m)
		}
		switch state[m] {
		case done:
			return nil
		case visiting:
			return fmt.Errorf("module dependency cycle through %s", m)
		}
		state[m] = visiting
		for _, d := range deps[m] {
			if err := visit(d, m); err != nil {
				return err
			}
		}
		state[m] = done
		order = append(order, m)
		return nil
	}
	for _, m := range want {
		if err := visit(m, m); err != nil {
			return nil, err
		}
	}
	return order, nil
}
