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
	exit := exitOK
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
		os.Exit(exitOK)
	}
	if errors.Is(err, errVersion) {
		fmt.Println(version())
		os.Exit(exitOK)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "vhost-arcnet: %v\n", err)
		os.Exit(exitUsage)
	}
	log := newLogger(cfg)
	slog.SetDefault(log)
	log.Info("starting", "version", version(), "pid", os.Getpid())

	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			log.Error("vhost-arcnet stopped", "err", fmt.Errorf("--cpuprofile: %w", err))
			os.Exit(exitFailure)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Error("vhost-arcnet stopped", "err", fmt.Errorf("--cpuprofile: %w", err))
			os.Exit(exitFailure)
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	stopping := make(chan struct{})
	go func() {
		// The first SIGINT/SIGTERM stops cleanly; a second one, while
		// that takes its time, kills the process (the default action).
		defer close(stopping)
		<-ctx.Done()
		log.Info("stopping", "cause", context.Cause(ctx).Error())
		stop()
	}()
	err = run(ctx, cfg, log)
	if ctx.Err() != nil {
		<-stopping // its line comes before the last ones
	}
	if err != nil {
		log.Error("vhost-arcnet stopped", "err", err)
		exit = exitFailure
		return
	}
	log.Info("stopped")
}

// The exit statuses (README "Exit status").
const (
	exitOK      = 0 // a clean stop (SIGINT, SIGTERM), -h, --version
	exitFailure = 1 // it could not start (a socket, the TAP, a port ...) or failed while running
	exitUsage   = 2 // the command line or the config file is wrong: nothing was started
)

// newLogger makes the logger of the process; its level is logLevel, which
// a reload (SIGHUP) sets.
func newLogger(cfg *config) *slog.Logger {
	logLevel.Set(cfg.logLevel)
	opts := &slog.HandlerOptions{Level: logLevel}
	if cfg.logJSON {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
