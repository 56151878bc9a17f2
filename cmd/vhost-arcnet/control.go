package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/arcnet/vhost-arcnet/services"
	"github.com/arcnet/vhost-arcnet/vhostuser"
)

// --control PATH serves the control API: HTTP with JSON bodies on a unix
// socket (mode 0600: the owner only; there is no other authentication).
// vhost-arcnet ctl (ctl.go) is its client. The endpoints:
//
//	GET    /v1/ports                  guest ports
//	GET    /v1/leases                 DHCP leases
//	GET    /v1/flows?limit=N&after=ID NAT flows, a page at a time
//	GET    /v1/forwards               port forwards
//	POST   /v1/forwards               {"spec": "tcp:8080:web:80"}
//	DELETE /v1/forwards/SPEC          SPEC: the whole spec or tcp|udp:[HOSTADDR:]HOSTPORT
//	GET    /v1/reservations           static DHCP leases
//	POST   /v1/reservations           {"mac": "52:54:00:12:34:56", "address": "192.168.127.10"}
//	DELETE /v1/reservations/MAC
//	GET    /v1/dns                    DNS records added at run time
//	POST   /v1/dns                    {"name": "db", "address": "192.168.127.20"}
//	DELETE /v1/dns/NAME
//
// Errors are {"error": "..."} with 400 (the request is wrong), 404 (no
// such thing), 405 (method), 409 (it conflicts with what exists, or this
// configuration cannot do it) or 500. Changes made here last until the
// process exits: put them in the config file to keep them.
//
// What a request locks: the port registry (a copy of the list), the lease
// database's read side, the forwards' mutex, and for flows the NAT
// engine's mutex for one walk of its table (bounded by the table size; a
// page keeps at most limit flows in memory).

// controlAPI answers the control requests from the process's state.
type controlAPI struct {
	ports      *ports
	net        *network // nil with a measurement uplink
	uplink     string   // --uplink, for error messages
	queuePairs int      // --queue-pairs
	log        *slog.Logger
	now        func() time.Time
}

// apiErr is an error with its HTTP status.
type apiErr struct {
	code int
	msg  string
}

func (e *apiErr) Error() string { return e.msg }

func errorf(code int, format string, args ...any) error {
	return &apiErr{code, fmt.Sprintf(format, args...)}
}

// statusOf maps an error to its HTTP status.
func statusOf(err error) int {
	var ae *apiErr
	switch {
	case errors.As(err, &ae):
		return ae.code
	case errors.Is(err, services.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, services.ErrConflict):
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, err error) {
	writeJSON(w, statusOf(err), apiError{Error: err.Error()})
}

// methods dispatches one path by method; other methods get a JSON 405.
type methods map[string]func(*http.Request) (int, any, error)

func (m methods) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h, ok := m[r.Method]
	if !ok {
		allow := make([]string, 0, len(m))
		for k := range m {
			allow = append(allow, k)
		}
		sort.Strings(allow)
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeError(w, errorf(http.StatusMethodNotAllowed, "%s %s: method not allowed (allowed: %s)", r.Method, r.URL.Path, strings.Join(allow, ", ")))
		return
	}
	code, v, err := h(r)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, code, v)
}

// endpoints are the paths the API serves, for the answer to an unknown one.
const endpoints = "/v1/ports, /v1/leases, /v1/flows, /v1/forwards, /v1/reservations, /v1/dns"

// handler returns the API's routes.
func (a *controlAPI) handler() http.Handler {
	mux := http.NewServeMux()
	ok := func(f func(*http.Request) (any, error)) func(*http.Request) (int, any, error) {
		return func(r *http.Request) (int, any, error) {
			v, err := f(r)
			return http.StatusOK, v, err
		}
	}
	created := func(f func(*http.Request) (any, error)) func(*http.Request) (int, any, error) {
		return func(r *http.Request) (int, any, error) {
			v, err := f(r)
			return http.StatusCreated, v, err
		}
	}
	mux.Handle("/v1/ports", methods{"GET": ok(a.listPorts)})
	mux.Handle("/v1/leases", methods{"GET": ok(a.listLeases)})
	mux.Handle("/v1/flows", methods{"GET": ok(a.listFlows)})
	mux.Handle("/v1/forwards", methods{"GET": ok(a.listForwards), "POST": created(a.addForward)})
	mux.Handle("/v1/forwards/{spec}", methods{"DELETE": ok(a.removeForward)})
	mux.Handle("/v1/reservations", methods{"GET": ok(a.listReservations), "POST": created(a.addReservation)})
	mux.Handle("/v1/reservations/{mac}", methods{"DELETE": ok(a.removeReservation)})
	mux.Handle("/v1/dns", methods{"GET": ok(a.listRecords), "POST": created(a.addRecord)})
	mux.Handle("/v1/dns/{name}", methods{"DELETE": ok(a.removeRecord)})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, errorf(http.StatusNotFound, "%s: no such endpoint (the API has %s)", r.URL.Path, endpoints))
	})
	return mux
}

// decode reads a JSON request body into v: one object, known fields only,
// at most 64 KiB. example is shown when the body is wrong.
func decode(r *http.Request, v any, example string) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return errorf(http.StatusBadRequest, "empty request body: want JSON such as %s", example)
		}
		return errorf(http.StatusBadRequest, "request body: %v: want JSON such as %s", err, example)
	}
	if dec.More() {
		return errorf(http.StatusBadRequest, "request body: more than one JSON value: want one object such as %s", example)
	}
	return nil
}

// guestNetwork returns the guest network, or the error of a configuration
// without one (a measurement uplink).
func (a *controlAPI) guestNetwork(what string) (*network, error) {
	if a.net == nil {
		return nil, errorf(http.StatusConflict, "%s: this vhost-arcnet runs with --uplink %s, which has no guest network (no DHCP, DNS or NAT): use --uplink none or tap", what, a.uplink)
	}
	return a.net, nil
}

// controlServer is the HTTP server of --control.
type controlServer struct {
	srv  *http.Server
	ln   *net.UnixListener
	path string
	fi   fs.FileInfo // the socket file we made, to remove only that one
	done chan struct{}
}

// maxSocketPath is the longest unix socket path (sun_path less its NUL:
// 108 bytes on Linux, 104 on the BSDs and macOS).
var maxSocketPath = map[bool]int{true: 107, false: 103}[runtime.GOOS == "linux"]

// listenControl makes the control socket at path with mode 0600 and, if
// gid is not -1, group gid (--socket-group), with vhostuser.ListenUnix,
// as the vhost-user sockets are made: a stale socket is replaced, a live
// one or another file refused, and nobody can connect before the mode and
// group are set.
func listenControl(path string, gid int) (*net.UnixListener, fs.FileInfo, error) {
	if len(path) > maxSocketPath {
		return nil, nil, fmt.Errorf("--control %s: a unix socket path has at most %d bytes", path, maxSocketPath)
	}
	ln, fi, err := vhostuser.ListenUnix(path, 0o600, gid)
	if err != nil {
		return nil, nil, fmt.Errorf("--control: %w", err)
	}
	return ln, fi, nil
}

// startControl serves a's API on the unix socket path: on inherited if
// it is not nil (socket activation: the socket file is not ours, and is
// left at exit, its group and mode untouched), else on a socket it makes
// with group gid (-1: the process's).
func startControl(path string, gid int, a *controlAPI, log *slog.Logger, inherited *net.UnixListener) (*controlServer, error) {
	var ln *net.UnixListener
	var fi fs.FileInfo
	if inherited != nil {
		ln = inherited
		ln.SetUnlinkOnClose(false)
	} else {
		var err error
		if ln, fi, err = listenControl(path, gid); err != nil {
			return nil, err
		}
	}
	c := &controlServer{
		srv: &http.Server{
			Handler:           a.handler(),
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
		ln: ln, path: path, fi: fi, done: make(chan struct{}),
	}
	go func() {
		defer close(c.done)
		if err := c.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("control server stopped", "err", err)
		}
	}()
	log.Info("control API", "socket", path, "inherited", inherited != nil)
	return c, nil
}

// close stops the server, letting requests in progress finish (up to 2 s),
// and removes the socket file if it is still ours (never an inherited
// one: fi is nil then).
func (c *controlServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.srv.Shutdown(ctx); err != nil {
		_ = c.srv.Close()
	}
	<-c.done
	if fi, err := os.Lstat(c.path); err == nil && os.SameFile(fi, c.fi) {
		_ = os.Remove(c.path)
	}
}

// sortedBy sorts s by key.
func sortedBy[T any, K interface{ ~string | ~uint64 }](s []T, key func(T) K) []T {
	slices.SortStableFunc(s, func(a, b T) int {
		ka, kb := key(a), key(b)
		switch {
		case ka < kb:
			return -1
		case ka > kb:
			return 1
		}
		return 0
	})
	return s
}
