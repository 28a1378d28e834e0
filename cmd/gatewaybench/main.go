// Command gatewaybench measures what the gateway adds between a client and
// a model.
//
//	gatewaybench run -gateway BIN [-out DIR] [-quick] [-scenarios a,b]
//	    start mock, baseline proxy and gateway as separate processes, run
//	    every scenario against each, write results.{md,json,svg} to DIR
//	gatewaybench load -url URL [-format chat|native|messages|responses] [-c N] [-n N | -d DUR] [-tokens N] [-delay DUR] [-h2c] [-key KEY] [-instructions BYTES]
//	    run one load and print its result as JSON
//	gatewaybench soak -gateway BIN [-c N] [-d DUR] [-out FILE]
//	    run the gateway under faults and impatient clients; print what
//	    held and what broke (and write it as JSON to FILE)
//	gatewaybench mock [-listen ADDR] [-h2c]
//	    the mock upstream, in OpenAI's streaming wire format
//	gatewaybench baseline -upstream URL [-listen ADDR] [-h2c]
//	    a bare httputil.ReverseProxy (FlushInterval -1), the yardstick
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/streamgate/gateway/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "gatewaybench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: gatewaybench run|soak|load|mock|baseline [flags]")
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "listen address (mock, baseline)")
	h2c := fs.Bool("h2c", false, "also accept (mock, baseline) or speak (load) cleartext HTTP/2")
	switch args[0] {
	case "mock":
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		return bench.ServeMock(ctx, *listen, *h2c, os.Stdout)
	case "baseline":
		upstream := fs.String("upstream", "", "URL of the upstream, e.g. http://127.0.0.1:9000")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *upstream == "" {
			return errors.New("baseline: -upstream is required")
		}
		return bench.ServeBaseline(ctx, *listen, *upstream, *h2c, os.Stdout)
	case "load":
		var l bench.Load
		fs.StringVar(&l.URL, "url", "", "endpoint URL")
		format := fs.String("format", "chat", "chat (OpenAI chunks), native (/v1/stream events), messages (Anthropic events) or responses (OpenAI Responses events)")
		fs.StringVar(&l.Model, "model", "bench", "model name")
		fs.IntVar(&l.Tokens, "tokens", 64, "tokens per stream")
		fs.DurationVar(&l.Delay, "delay", 0, "delay between tokens")
		fs.StringVar(&l.Key, "key", "", "API key sent as a bearer token (the gateway's, when auth is on)")
		fs.IntVar(&l.Concurrency, "c", 1, "concurrent streams")
		fs.IntVar(&l.Requests, "n", 0, "total streams (0: use -d)")
		fs.DurationVar(&l.Duration, "d", 5*time.Second, "duration when -n is 0")
		fs.DurationVar(&l.RampUp, "ramp", 0, "spread worker starts over this time")
		fs.IntVar(&l.Instructions, "instructions", 0, "bytes of system instructions in each request, as an agent sends (not native)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		l.Format, l.H2C = bench.Format(*format), *h2c
		if _, err := bench.RaiseFileLimit(); err != nil {
			return err
		}
		res, err := bench.Run(ctx, l)
		if err != nil {
			return err
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	case "soak":
		gw := fs.String("gateway", "bin/gateway", "gateway binary")
		c := fs.Int("c", 300, "concurrent streams")
		d := fs.Duration("d", time.Minute, "how long")
		out := fs.String("out", "", "write the report as JSON to this file")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if _, err := bench.RaiseFileLimit(); err != nil {
			return err
		}
		work, err := os.MkdirTemp("", "gatewaybench-soak-")
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "gateway log in %s\n", work)
		rep, err := (&bench.Soak{GatewayBin: *gw, WorkDir: work, Concurrency: *c, Duration: *d, Log: os.Stderr}).Run(ctx)
		if err != nil {
			return err
		}
		b, _ := json.MarshalIndent(rep, "", "  ")
		fmt.Println(string(b))
		if *out != "" {
			if err := os.WriteFile(*out, append(b, '\n'), 0o644); err != nil {
				return err
			}
		}
		if v := rep.Violations(); v > 0 {
			return fmt.Errorf("soak: %d violations", v)
		}
		return nil
	case "run":
		gw := fs.String("gateway", "bin/gateway", "gateway binary")
		out := fs.String("out", "docs/bench", "directory for results.{md,json,svg}")
		quick := fs.Bool("quick", false, "tiny scenarios: a smoke run")
		only := fs.String("scenarios", "", "comma-separated subset of latency,throughput,slow,idle")
		prof := fs.Bool("profile", false, "profile the gateway (CPU and allocations) on each endpoint under each scenario, writing profiles.md in -out, instead of measuring")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		self, err := os.Executable()
		if err != nil {
			return err
		}
		work, err := os.MkdirTemp("", "gatewaybench-")
		if err != nil {
			return err
		}
		scenarios := bench.Scenarios()
		if *quick {
			scenarios = bench.QuickScenarios()
		}
		if *only != "" {
			names := strings.Split(*only, ",")
			scenarios = slices.DeleteFunc(scenarios, func(s bench.Scenario) bool { return !slices.Contains(names, s.Name) })
		}
		fmt.Fprintf(os.Stderr, "server logs in %s\n", work)
		r := &bench.Runner{GatewayBin: *gw, BenchBin: self, Scenarios: scenarios, WorkDir: work, Log: os.Stderr, Profile: *prof}
		rep, err := r.Run(ctx)
		if err != nil {
			return err
		}
		if *prof {
			return rep.WriteProfilesFile(*out)
		}
		if err := rep.Write(*out); err != nil {
			return err
		}
		for _, c := range rep.Checks {
			fmt.Fprintf(os.Stderr, "%-42s %-15s want %-10s got %s\n", c.Name, c.Target, c.Want, c.Got)
		}
		fmt.Fprintf(os.Stderr, "wrote %s/results.{md,json,svg}\n", *out)
		return nil
	}
	return fmt.Errorf("unknown command %q: want run, soak, load, mock or baseline", args[0])
}
