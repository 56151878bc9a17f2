package main

import (
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/arcnet/vhost-arcnet/hostif"
	"github.com/arcnet/vhost-arcnet/services"
)

// SIGHUP reloads the config file (--config): the command line is parsed
// again with the file as it is now, so flags given on the command line
// still win, and the file is checked exactly as at start. A file with an
// error changes nothing (the error, with the file's line, is logged).
// Otherwise what can change while guests run is applied as a difference
// from the configuration applied last, through the same calls as the
// control API: forwards, reservations, DNS records, and the log level.
// Nothing else is touched, no guest is detached; a change to any other key
// is logged as taking effect at the next start.
//
// Changes made through the control API are left alone unless the file
// names the same thing: a forward of the same spec becomes the config's,
// a reservation of the same MAC or a record of the same name is replaced.

// reloadable are the keys a reload applies.
var reloadable = map[string]bool{"forward": true, "reserve": true, "dns-record": true, "log-level": true}

// logLevel is the level of the logger main makes: a reload sets it.
var logLevel = new(slog.LevelVar)

// reloader applies reloads; one at a time.
type reloader struct {
	mu      sync.Mutex
	started *flags  // the flags at start: what non-reloadable keys run with
	applied *config // the reloadable values applied last
	net     *network
	log     *slog.Logger
}

// reload reads the config file again and applies it. It returns whether
// the file was good (the changes it could not make are logged).
func (r *reloader) reload() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	log := r.log
	if r.applied.flags == nil || r.applied.flags.config.v == "" {
		log.Warn("SIGHUP: there is no config file to reload (--config FILE); nothing changed")
		return false
	}
	path := r.applied.flags.config.v
	next, err := parseFlags(r.applied.args, io.Discard)
	if err != nil {
		log.Error("config reload failed: nothing changed", "config", path, "err", err)
		return false
	}
	if keys := changedKeys(r.started, next.flags); len(keys) > 0 {
		log.Warn("config reload: these keys changed and take effect at the next start only", "config", path,
			"keys", strings.Join(keys, ","))
	}
	prev := r.applied
	done := *prev
	done.args, done.flags = next.args, next.flags
	st := reloadStats{}
	if r.net != nil {
		done.forwards = r.forwards(prev.forwards, next.forwards, &st)
		done.reservations = r.reservations(prev.reservations, next.reservations, &st)
		done.dnsRecords = r.records(prev.dnsRecords, next.dnsRecords, &st)
	}
	if next.logLevel != prev.logLevel {
		logLevel.Set(next.logLevel)
		done.logLevel = next.logLevel
		st.level = true
	}
	r.applied = &done
	log.Info("config reloaded", "config", path, "forwards_added", st.fwdAdded, "forwards_removed", st.fwdRemoved,
		"reservations_added", st.resAdded, "reservations_removed", st.resRemoved,
		"dns_records_added", st.recAdded, "dns_records_removed", st.recRemoved,
		"log_level", strings.ToLower(done.logLevel.String()), "failed", st.failed)
	return true
}

type reloadStats struct {
	fwdAdded, fwdRemoved, resAdded, resRemoved, recAdded, recRemoved, failed int
	level                                                                    bool
}

// changedKeys returns the keys other than the reloadable ones whose
// values differ between a and b.
func changedKeys(a, b *flags) []string {
	var out []string
	a.fset.VisitAll(func(fl *flag.Flag) {
		if reloadable[fl.Name] || commandLineOnly[fl.Name] {
			return
		}
		other := b.fset.Lookup(fl.Name)
		if other == nil || tomlLiteral(fl.Value.(option).TOML()) != tomlLiteral(other.Value.(option).TOML()) {
			out = append(out, fl.Name)
		}
	})
	return out
}

// forwards applies the change of the forwards from prev to next and
// returns the forwards of the configuration now: those removed first (a
// host port may move from one forward to another), then those added. A
// forward that cannot be added (its host port is taken) is logged and
// left out, so that the next reload tries again.
func (r *reloader) forwards(prev, next []hostif.ForwardSpec, st *reloadStats) []hostif.ForwardSpec {
	n := r.net
	out := []hostif.ForwardSpec{}
	for _, spec := range prev {
		if slices.Contains(next, spec) {
			out = append(out, spec)
			continue
		}
		if n.eng == nil {
			continue
		}
		_, err := n.removeForward(spec.String(), func(o hostif.ForwardSpec) bool { return o == spec }, byReload)
		if err != nil && statusOf(err) != http.StatusNotFound {
			r.log.Error("config reload: forward not removed", "forward", spec.String(), "err", err)
			st.failed++
			out = append(out, spec)
			continue
		}
		st.fwdRemoved++
	}
	for _, spec := range next {
		if slices.Contains(prev, spec) {
			continue
		}
		if n.eng == nil {
			continue // build refuses forwards without an uplink
		}
		if n.adoptForward(spec) {
			out = append(out, spec)
			continue
		}
		if _, err := n.addForward(spec, byReload); err != nil {
			r.log.Error("config reload: forward not added", "forward", spec.String(), "err", err)
			st.failed++
			continue
		}
		st.fwdAdded++
		out = append(out, spec)
	}
	return out
}

// adoptForward makes a forward the control API added with spec one of the
// config's, and reports whether there was one.
func (n *network) adoptForward(spec hostif.ForwardSpec) bool {
	n.fwdMu.Lock()
	defer n.fwdMu.Unlock()
	if !n.fwdAdded[spec] {
		return false
	}
	delete(n.fwdAdded, spec)
	n.log.Info("forward kept", "forward", spec.String(), "by", byReload, "origin", "config")
	return true
}

// reservations applies the change of the static leases from prev to next
// (by MAC) and returns those of the configuration now.
func (r *reloader) reservations(prev, next []services.Reservation, st *reloadStats) []services.Reservation {
	gw := r.net.gw
	key := func(res services.Reservation) string { return res.MAC.String() + "=" + res.Addr.String() }
	in := func(list []services.Reservation, res services.Reservation) bool {
		return slices.ContainsFunc(list, func(o services.Reservation) bool { return key(o) == key(res) })
	}
	current := func(mac net.HardwareAddr) (netip.Addr, bool) {
		for _, o := range gw.Reservations() {
			if o.MAC.String() == mac.String() {
				return o.Addr, true
			}
		}
		return netip.Addr{}, false
	}
	out := []services.Reservation{}
	for _, res := range prev {
		if in(next, res) {
			out = append(out, res)
			continue
		}
		if a, ok := current(res.MAC); !ok || a != res.Addr {
			continue // removed or changed through the control API since
		}
		if _, err := gw.RemoveReservation(res.MAC); err != nil {
			r.log.Error("config reload: reservation not removed", "mac", res.MAC.String(), "err", err)
			st.failed++
			out = append(out, res)
			continue
		}
		st.resRemoved++
		r.log.Info("reservation removed", "mac", res.MAC.String(), "addr", res.Addr, "by", byReload)
	}
	for _, res := range next {
		if in(prev, res) {
			continue
		}
		if a, ok := current(res.MAC); ok {
			if a == res.Addr {
				out = append(out, res) // the control API made it already
				continue
			}
			if _, err := gw.RemoveReservation(res.MAC); err != nil {
				r.log.Error("config reload: reservation not replaced", "mac", res.MAC.String(), "err", err)
				st.failed++
				continue
			}
		}
		if err := gw.AddReservation(res); err != nil {
			r.log.Error("config reload: reservation not added", "mac", res.MAC.String(), "addr", res.Addr, "err", err)
			st.failed++
			continue
		}
		st.resAdded++
		out = append(out, res)
		r.log.Info("reservation added", "mac", res.MAC.String(), "addr", res.Addr, "by", byReload)
	}
	return out
}

// records applies the change of the DNS records from prev to next (by
// name) and returns those of the configuration now.
func (r *reloader) records(prev, next []dnsRecord, st *reloadStats) []dnsRecord {
	gw := r.net.gw
	current := func(name string) (netip.Addr, bool) {
		for _, o := range gw.Records() {
			if o.Name == name {
				return o.Addr, true
			}
		}
		return netip.Addr{}, false
	}
	out := []dnsRecord{}
	for _, rec := range prev {
		if slices.Contains(next, rec) {
			out = append(out, rec)
			continue
		}
		if slices.ContainsFunc(next, func(o dnsRecord) bool { return o.name == rec.name }) {
			continue // replaced below
		}
		if a, ok := current(rec.name); !ok || a != rec.addr {
			continue // removed or changed through the control API since
		}
		if _, err := gw.RemoveRecord(rec.name); err != nil {
			r.log.Error("config reload: DNS record not removed", "name", rec.name, "err", err)
			st.failed++
			out = append(out, rec)
			continue
		}
		st.recRemoved++
		r.log.Info("DNS record removed", "name", rec.name+"."+gw.Domain(), "addr", rec.addr, "by", byReload)
	}
	for _, rec := range next {
		if slices.Contains(prev, rec) {
			continue
		}
		if _, err := gw.AddRecord(rec.name, rec.addr); err != nil {
			r.log.Error("config reload: DNS record not added", "name", rec.name, "addr", rec.addr, "err", err)
			st.failed++
			continue
		}
		st.recAdded++
		out = append(out, rec)
		r.log.Info("DNS record added", "name", rec.name+"."+gw.Domain(), "addr", rec.addr, "by", byReload)
	}
	return out
}
