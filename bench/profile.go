package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/pprof/profile"
)

// ProfileTargets are the targets a profiling run (Runner.Profile)
// measures: one per endpoint.
var ProfileTargets = []string{TargetGatewayNative, TargetGatewayChat, TargetGatewayMessages, TargetGatewayResponses}

// profileSeconds is how long the CPU profile of each measurement runs.
const profileSeconds = 3

// Profile is what the gateway spent its CPU and allocations on during
// one measurement: the functions with the largest shares.
type Profile struct {
	CPU    []FuncShare `json:"cpu"`
	Allocs []FuncShare `json:"allocs"`
	// raw are the profiles themselves, written next to profiles.md for
	// go tool pprof: the tables show where to look, not what to change.
	rawCPU, rawAllocs *profile.Profile
}

// FuncShare is a function's share of a profile: Flat in the function
// itself, Cum in it and what it called.
type FuncShare struct {
	Func string  `json:"func"`
	Flat float64 `json:"flat"`
	Cum  float64 `json:"cum"`
}

// freeAddr is a loopback address nobody listens on, for the gateway's
// profiler.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// fetchProfile reads a profile from the gateway's profiler at addr.
func fetchProfile(ctx context.Context, addr, path string) (*profile.Profile, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, b)
	}
	return profile.Parse(resp.Body)
}

// cpuDuring takes a CPU profile of profileSeconds, starting after wait
// (the load's ramp-up), while the load runs; the result arrives on the
// returned channel.
func cpuDuring(ctx context.Context, addr string, wait time.Duration) <-chan profileResult {
	ch := make(chan profileResult, 1)
	go func() {
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			ch <- profileResult{err: ctx.Err()}
			return
		}
		p, err := fetchProfile(ctx, addr, fmt.Sprintf("/debug/pprof/profile?seconds=%d", profileSeconds))
		ch <- profileResult{p, err}
	}()
	return ch
}

type profileResult struct {
	p   *profile.Profile
	err error
}

// top returns the n functions with the largest flat share of sample
// type typ in p, with their cumulative shares.
func top(p *profile.Profile, typ string, n int) []FuncShare {
	idx := -1
	for i, st := range p.SampleType {
		if st.Type == typ {
			idx = i
		}
	}
	if idx < 0 {
		return nil
	}
	flat, cum := map[string]int64{}, map[string]int64{}
	var total int64
	for _, s := range p.Sample {
		v := s.Value[idx]
		total += v
		seen := map[string]bool{}
		for i, loc := range s.Location {
			for j, line := range loc.Line {
				if line.Function == nil {
					continue
				}
				name := line.Function.Name
				if i == 0 && j == 0 {
					flat[name] += v
				}
				if !seen[name] {
					seen[name] = true
					cum[name] += v
				}
			}
		}
	}
	if total == 0 {
		return nil
	}
	out := make([]FuncShare, 0, len(flat))
	for name, v := range flat {
		out = append(out, FuncShare{Func: name, Flat: float64(v) / float64(total), Cum: float64(cum[name]) / float64(total)})
	}
	slices.SortFunc(out, func(a, b FuncShare) int {
		if a.Flat != b.Flat {
			if a.Flat > b.Flat {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Func, b.Func)
	})
	return out[:min(n, len(out))]
}

// WriteProfiles writes the profiles of a profiling run as Markdown.
func (rep *Report) WriteProfiles(w io.Writer) {
	fmt.Fprintf(w, "Profiles of %s: the gateway's CPU (%d s during the load) and allocations (bytes, since the process started) per scenario and endpoint, full gateway on. `gatewaybench run -profile`.\n",
		rep.Started.Format(time.RFC3339), profileSeconds)
	for _, m := range rep.Measurements {
		if m.Profile == nil {
			continue
		}
		fmt.Fprintf(w, "\n## %s, %s\n\n| CPU: function | flat | cum |\n|---|--:|--:|\n", m.Scenario, m.Target)
		for _, f := range m.Profile.CPU {
			fmt.Fprintf(w, "| `%s` | %.1f%% | %.1f%% |\n", f.Func, f.Flat*100, f.Cum*100)
		}
		fmt.Fprintf(w, "\n| allocated bytes: function | flat | cum |\n|---|--:|--:|\n")
		for _, f := range m.Profile.Allocs {
			fmt.Fprintf(w, "| `%s` | %.1f%% | %.1f%% |\n", f.Func, f.Flat*100, f.Cum*100)
		}
	}
}

// collect waits for the CPU profile taken during the load and reads the
// allocation profile after it.
func collect(ctx context.Context, addr string, cpu <-chan profileResult) (*Profile, error) {
	c := <-cpu
	if c.err != nil {
		return nil, fmt.Errorf("cpu profile: %w", c.err)
	}
	allocs, err := fetchProfile(ctx, addr, "/debug/pprof/allocs")
	if err != nil {
		return nil, fmt.Errorf("allocation profile: %w", err)
	}
	return &Profile{CPU: top(c.p, "cpu", 15), Allocs: top(allocs, "alloc_space", 10), rawCPU: c.p, rawAllocs: allocs}, nil
}

// WriteProfilesFile writes dir/profiles.md, and the profiles themselves
// as dir/pprof/<scenario>-<target>.{cpu,allocs}.pb.gz.
func (rep *Report) WriteProfilesFile(dir string) error {
	raw := filepath.Join(dir, "pprof")
	if err := os.MkdirAll(raw, 0o755); err != nil {
		return err
	}
	for _, m := range rep.Measurements {
		if m.Profile == nil {
			continue
		}
		for kind, p := range map[string]*profile.Profile{"cpu": m.Profile.rawCPU, "allocs": m.Profile.rawAllocs} {
			if p == nil {
				continue
			}
			if err := writeProfile(filepath.Join(raw, m.Scenario+"-"+m.Target+"."+kind+".pb.gz"), p); err != nil {
				return err
			}
		}
	}
	var b strings.Builder
	rep.WriteProfiles(&b)
	return os.WriteFile(filepath.Join(dir, "profiles.md"), []byte(b.String()), 0o644)
}

// writeProfile writes p to path in pprof's format.
func writeProfile(path string, p *profile.Profile) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := p.Write(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}
