package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// vhost-arcnet ctl is the control API's client (control.go): it sends one
// request to the --control socket of a running vhost-arcnet and prints
// the answer as a table, or as the API's JSON with --json.

const ctlUsage = `Usage:
  vhost-arcnet ctl [--control PATH | --config FILE] [--json] COMMAND

Commands:
  ports                     guest ports: MAC, address, queues, features, counters
  leases                    DHCP leases
  flows [--limit N] [--after ID]
                            NAT flows, a page at a time (default 100)
  forwards                  port forwards
  forward add SPEC          add a port forward: tcp|udp:[HOSTADDR:]HOSTPORT:GUEST:GUESTPORT
  forward rm SPEC           remove one: its SPEC or tcp|udp:[HOSTADDR:]HOSTPORT
  reservations              static DHCP leases
  reserve add MAC=ADDR      reserve ADDR for the guest with MAC (at its next DHCP exchange)
  reserve rm MAC            remove MAC's reservation
  dns                       DNS records added at run time
  dns add NAME=ADDR         answer NAME.<domain> with ADDR
  dns rm NAME               remove the record

Changes last until vhost-arcnet exits; put them in its config file to keep them.

Flags:
`

// ctlClient talks HTTP to the control socket.
type ctlClient struct {
	path string
	http *http.Client
}

func newCtlClient(path string) *ctlClient {
	return &ctlClient{path: path, http: &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", path)
			},
		},
	}}
}

// do sends one request and returns the answer's body; an answer other
// than 2xx is an error with the server's message.
func (c *ctlClient) do(method, path string, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://vhost-arcnet"+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("cannot reach vhost-arcnet at %s: %v (is it running with --control %s?)", c.path, err, c.path)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e apiError
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return nil, errors.New(e.Error)
		}
		return nil, fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	return b, nil
}

// ctlCommand runs vhost-arcnet ctl with args and returns the exit status:
// 0, 1 (the request failed: the server's message is on stderr) or 2 (a
// wrong command line).
func ctlCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("vhost-arcnet ctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	control := fs.String("control", os.Getenv("VHOST_ARCNET_CONTROL"), "the control socket `PATH` (vhost-arcnet --control; default $VHOST_ARCNET_CONTROL)")
	cfgFile := fs.String("config", "", "take the control socket from this config `FILE` (its control key)")
	asJSON := fs.Bool("json", false, "print the API's JSON answer instead of a table")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), ctlUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "vhost-arcnet ctl: "+format+" (vhost-arcnet ctl -h lists the commands)\n", a...)
		return 2
	}
	path := *control
	if *cfgFile != "" && path == "" {
		cfg, _, err := parseConfig([]string{"--config", *cfgFile}, io.Discard, true)
		if err != nil {
			fmt.Fprintf(stderr, "vhost-arcnet ctl: %v\n", err)
			return 2
		}
		if path = cfg.controlPath; path == "" {
			return usage("%s has no control key: give --control PATH", *cfgFile)
		}
	}
	if path == "" {
		return usage("give the control socket: --control PATH (the --control of the running vhost-arcnet)")
	}
	// --json may follow the command too (vhost-arcnet ctl ports --json).
	var rest []string
	for _, w := range fs.Args() {
		if w == "--json" || w == "-json" {
			*asJSON = true
			continue
		}
		rest = append(rest, w)
	}
	if len(rest) == 0 {
		return usage("no command")
	}
	c := newCtlClient(path)
	cmd, err := ctlParse(rest)
	if err != nil {
		return usage("%v", err)
	}
	b, err := c.do(cmd.method, cmd.path, cmd.body)
	if err != nil {
		fmt.Fprintf(stderr, "vhost-arcnet ctl: %v\n", err)
		return 1
	}
	if *asJSON {
		_, _ = stdout.Write(b)
		return 0
	}
	if err := cmd.print(stdout, b); err != nil {
		fmt.Fprintf(stderr, "vhost-arcnet ctl: the answer: %v\n", err)
		return 1
	}
	return 0
}

// ctlRequest is one command line as a request and how to print its answer.
type ctlRequest struct {
	method, path string
	body         any
	print        func(io.Writer, []byte) error
}

// ctlParse turns the command words into a request.
func ctlParse(words []string) (*ctlRequest, error) {
	get := func(path string, p func(io.Writer, []byte) error) (*ctlRequest, error) {
		return &ctlRequest{method: "GET", path: path, print: p}, nil
	}
	oneArg := func() error {
		if len(words) != 3 {
			return fmt.Errorf("%s %s takes one argument", words[0], words[1])
		}
		return nil
	}
	switch words[0] {
	case "ports", "leases", "forwards", "reservations":
		if len(words) != 1 {
			return nil, fmt.Errorf("%s takes no arguments", words[0])
		}
		return get("/v1/"+words[0], printers[words[0]])
	case "flows":
		fs := flag.NewFlagSet("flows", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		limit := fs.Int("limit", 0, "")
		after := fs.String("after", "", "")
		if err := fs.Parse(words[1:]); err != nil || fs.NArg() > 0 {
			return nil, errors.New("flows takes --limit N and --after ID")
		}
		q := url.Values{}
		if *limit != 0 {
			q.Set("limit", strconv.Itoa(*limit))
		}
		if *after != "" {
			q.Set("after", *after)
		}
		p := "/v1/flows"
		if len(q) > 0 {
			p += "?" + q.Encode()
		}
		return get(p, printFlows)
	case "forward":
		if len(words) < 2 || (words[1] != "add" && words[1] != "rm") {
			return nil, errors.New("forward add SPEC or forward rm SPEC")
		}
		if err := oneArg(); err != nil {
			return nil, err
		}
		if words[1] == "add" {
			return &ctlRequest{method: "POST", path: "/v1/forwards", body: apiForwardRequest{Spec: words[2]},
				print: printOne("forward added", printForwards1)}, nil
		}
		return &ctlRequest{method: "DELETE", path: "/v1/forwards/" + url.PathEscape(words[2]),
			print: printOne("forward removed", printForwards1)}, nil
	case "reserve":
		if len(words) < 2 || (words[1] != "add" && words[1] != "rm") {
			return nil, errors.New("reserve add MAC=ADDR or reserve rm MAC")
		}
		if err := oneArg(); err != nil {
			return nil, err
		}
		if words[1] == "add" {
			mac, addr, ok := strings.Cut(words[2], "=")
			if !ok {
				return nil, fmt.Errorf("reserve add %q: want MAC=ADDR", words[2])
			}
			return &ctlRequest{method: "POST", path: "/v1/reservations", body: apiReservation{MAC: mac, Address: addr},
				print: printOne("reservation added", printReservations1)}, nil
		}
		return &ctlRequest{method: "DELETE", path: "/v1/reservations/" + url.PathEscape(words[2]),
			print: printOne("reservation removed", printReservations1)}, nil
	case "dns":
		if len(words) == 1 {
			return get("/v1/dns", printRecords)
		}
		if words[1] != "add" && words[1] != "rm" {
			return nil, errors.New("dns, dns add NAME=ADDR or dns rm NAME")
		}
		if err := oneArg(); err != nil {
			return nil, err
		}
		if words[1] == "add" {
			name, addr, ok := strings.Cut(words[2], "=")
			if !ok {
				return nil, fmt.Errorf("dns add %q: want NAME=ADDR", words[2])
			}
			return &ctlRequest{method: "POST", path: "/v1/dns", body: apiRecord{Name: name, Address: addr},
				print: printOne("DNS record added", printRecords1)}, nil
		}
		return &ctlRequest{method: "DELETE", path: "/v1/dns/" + url.PathEscape(words[2]),
			print: printOne("DNS record removed", printRecords1)}, nil
	}
	return nil, fmt.Errorf("unknown command %q", words[0])
}

var printers = map[string]func(io.Writer, []byte) error{
	"ports": printPorts, "leases": printLeases, "forwards": printForwards, "reservations": printReservations,
}

// table writes rows aligned in columns (two spaces between them).
func table(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// seconds formats a number of seconds as a short duration (59m30s, 1h0m0s).
func seconds(s int64) string {
	if s <= 0 {
		return "expired"
	}
	return (time.Duration(s) * time.Second).String()
}

func u64(n uint64) string { return strconv.FormatUint(n, 10) }

func printPorts(w io.Writer, b []byte) error {
	var v apiPorts
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	var rows [][]string
	for _, p := range v.Ports {
		state := "attached"
		if !p.Active {
			state = "ended"
		}
		var drops uint64
		for _, n := range p.Counters.Drops {
			drops += n
		}
		rows = append(rows, []string{p.Name, state, p.MAC, orDash(p.Address), orDash(p.Hostname),
			fmt.Sprintf("%d/%d", p.QueuePairs, p.MaxPairs),
			u64(p.Counters.RxPackets), u64(p.Counters.RxBytes), u64(p.Counters.TxPackets), u64(p.Counters.TxBytes),
			u64(drops), p.FeatureBits, p.Socket})
	}
	return table(w, []string{"NAME", "STATE", "MAC", "ADDRESS", "HOSTNAME", "QUEUES", "RX PKTS", "RX BYTES",
		"TX PKTS", "TX BYTES", "DROPS", "FEATURES", "SOCKET"}, rows)
}

func printLeases(w io.Writer, b []byte) error {
	var v apiLeases
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	var rows [][]string
	for _, l := range v.Leases {
		res := ""
		if l.Reserved {
			res = "yes"
		}
		rows = append(rows, []string{l.Address, orDash(l.MAC), orDash(l.Hostname), l.State, seconds(l.ExpiresIn), orDash(res)})
	}
	return table(w, []string{"ADDRESS", "MAC", "HOSTNAME", "STATE", "EXPIRES", "RESERVED"}, rows)
}

func printFlows(w io.Writer, b []byte) error {
	var v apiFlows
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	var rows [][]string
	for _, f := range v.Flows {
		rows = append(rows, []string{f.Proto, f.Side, f.Orig.Src, f.Orig.Dst, f.Reply.Src, f.Reply.Dst,
			orDash(f.State), seconds(f.ExpiresIn)})
	}
	if err := table(w, []string{"PROTO", "FROM", "SOURCE", "DESTINATION", "REPLY SOURCE", "REPLY DESTINATION", "STATE", "EXPIRES"}, rows); err != nil {
		return err
	}
	if v.Next != "" {
		_, err := fmt.Fprintf(w, "%d of %d flows; the next page: vhost-arcnet ctl flows --after %s\n", len(v.Flows), v.Total, v.Next)
		return err
	}
	return nil
}

func forwardRow(f apiForward) []string {
	return []string{f.Spec, f.Listen, orDash(f.Target), f.Origin, u64(f.Accepted), u64(f.Active),
		u64(f.FailedPrepare + f.FailedDial), u64(f.ToGuestBytes), u64(f.FromGuestBytes)}
}

var forwardHeader = []string{"SPEC", "LISTEN", "TARGET", "ORIGIN", "ACCEPTED", "ACTIVE", "FAILED", "TO GUEST", "FROM GUEST"}

func printForwards(w io.Writer, b []byte) error {
	var v apiForwards
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	var rows [][]string
	for _, f := range v.Forwards {
		rows = append(rows, forwardRow(f))
	}
	return table(w, forwardHeader, rows)
}

func printForwards1(w io.Writer, b []byte) error {
	var f apiForward
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	if err := table(w, forwardHeader, [][]string{forwardRow(f)}); err != nil {
		return err
	}
	if f.Pending != "" {
		_, err := fmt.Fprintf(w, "note: %s\n", f.Pending)
		return err
	}
	return nil
}

func printReservations(w io.Writer, b []byte) error {
	var v apiReservations
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	var rows [][]string
	for _, r := range v.Reservations {
		rows = append(rows, []string{r.MAC, r.Address})
	}
	return table(w, []string{"MAC", "ADDRESS"}, rows)
}

func printReservations1(w io.Writer, b []byte) error {
	var r apiReservation
	if err := json.Unmarshal(b, &r); err != nil {
		return err
	}
	return table(w, []string{"MAC", "ADDRESS"}, [][]string{{r.MAC, r.Address}})
}

func printRecords(w io.Writer, b []byte) error {
	var v apiRecords
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	var rows [][]string
	for _, r := range v.Records {
		rows = append(rows, []string{r.FQDN, r.Address})
	}
	return table(w, []string{"NAME", "ADDRESS"}, rows)
}

func printRecords1(w io.Writer, b []byte) error {
	var r apiRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return err
	}
	return table(w, []string{"NAME", "ADDRESS"}, [][]string{{r.FQDN, r.Address}})
}

// printOne prints what a change did: a line, then the thing as a table.
func printOne(what string, p func(io.Writer, []byte) error) func(io.Writer, []byte) error {
	return func(w io.Writer, b []byte) error {
		if _, err := fmt.Fprintln(w, what+":"); err != nil {
			return err
		}
		return p(w, b)
	}
}
