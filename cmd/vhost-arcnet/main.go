// Command vhost-arcnet is a network backend for virtual machines: it serves
// guests' virtio-net devices over vhost-user and moves their frames to an
// uplink. See the README for the command line, the config file and the
// metrics.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "config" {
		os.Exit(configCommand(os.Args[2:], os.Stdout, os.Stderr))
	}
	if len(os.Args) > 1 && os.Args[1] == "ctl" {
		os.Exit(ctlCommand(os.Args[2:], os.Stdout, os.Stderr))
	}
	exit := 0
	defer func() {
		// A panic must not leave through os.Exit(0), which would hide it:
		// re-raise it (exit status 2 and its stack on stderr).
		if r := recover(); r != nil {
			panic(r)
		}
		os.Exit(exit)
	}()
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if errors.Is(err, errVersion) {
		fmt.Println(version())
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "vhost-arcnet: %v\n", err)
		os.Exit(2)
	}
	log := newLogger(cfg)
	slog.SetDefault(log)
	log.Info("starting", "version", version())

	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			fmt.Fprintf(os.Stderr, "vhost-arcnet: --cpuprofile: %v\n", err)
			os.Exit(2)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(os.Stderr, "vhost-arcnet: --cpuprofile: %v\n", err)
			os.Exit(2)
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error("vhost-arcnet stopped", "err", err)
		exit = 1
	}
}

func newLogger(cfg *config) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.logLevel}
	if cfg.logJSON {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
