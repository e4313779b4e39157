// Command loadbench measures the Adobe IMS plugin inside a real Vault server
// over Vault's HTTP API, against two floors: a minimal plugin whose read
// returns a constant lease (bench/baseline), and Vault's built-in kv v1.
//
// It builds both plugins, starts an in-process IMS emulator (a test double of
// Adobe IMS) and `vault server -dev` (VAULT_BINARY), registers the plugins by
// SHA-256 and version, then, for each concurrency, reads every workload for a
// fixed time (or number of requests) and reports requests/s, p50 and p99
// latency, IMS requests, errors and CPU time per read. The floors and the
// shared reads take turns in short slices so that other load on the machine
// weighs on them alike. Leases are revoked by prefix between runs, so that
// Vault's expiration manager never holds more than one run's leases. A growth
// run then makes -growth shared reads without revoking and reports the
// plugin's and Vault's resident memory before and after.
//
// Progress goes to stderr; the report, in markdown, to stdout:
//
//	VAULT_BINARY="$(./scripts/vault.sh)" go run ./bench/loadbench
package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/imsemu"
)

const (
	pluginVersion = "v0.1.0"
	clientID      = "loadbench-client-id"
	clientSecret  = "loadbench-client-secret"
	configScopes  = "openid,AdobeID,session,additional_info,read_organizations,firefly_api,ff_apis"
	sharedScopes  = "openid,AdobeID,firefly_api,ff_apis"
	// The dedicated role asks for other scopes than the shared one, so that
	// the emulator's tokens tell the two apart.
	dedicatedScopes = "openid,AdobeID,firefly_api"
	// tokenLifetime is Adobe's: 24 hours less a second.
	tokenLifetime = imsemu.DefaultExpiresIn
)

type options struct {
	vaultBin          string
	concurrency       []int
	duration          time.Duration
	requests          int
	warmup            time.Duration
	rounds            int
	slices            int
	imsLatency        time.Duration
	growth            int
	growthConcurrency int
	logLevel          string
	keep              bool
}

func parseFlags() (options, error) {
	o := options{}
	conc := flag.String("concurrency", "1,8,32,64", "comma-separated numbers of concurrent clients")
	flag.StringVar(&o.vaultBin, "vault", os.Getenv("VAULT_BINARY"), "the vault binary (default $VAULT_BINARY)")
	flag.DurationVar(&o.duration, "duration", 2*time.Second, "how long each workload is read at each concurrency")
	flag.IntVar(&o.requests, "requests", 0, "if > 0, read each workload this many times instead of for -duration")
	flag.DurationVar(&o.warmup, "warmup", 500*time.Millisecond, "unmeasured reads before each run")
	flag.IntVar(&o.rounds, "rounds", 1, "measure everything this many times and report, per workload and concurrency, the run with the median requests/s")
	flag.IntVar(&o.slices, "slices", 6, "split -duration into this many slices, in which the floors and the shared reads take turns")
	flag.DurationVar(&o.imsLatency, "ims-latency", 150*time.Millisecond, "IMS emulator latency for the slow dedicated workload")
	flag.IntVar(&o.growth, "growth", 100000, "shared reads, without revoking, in the growth run (0 skips it)")
	flag.IntVar(&o.growthConcurrency, "growth-concurrency", 32, "concurrent clients in the growth run")
	flag.StringVar(&o.logLevel, "vault-log-level", "warn", "Vault's -log-level")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory (plugins, Vault's log)")
	flag.Parse()
	if o.vaultBin == "" {
		return o, fmt.Errorf("set VAULT_BINARY (or -vault) to a Vault server binary; ./scripts/vault.sh builds one and prints its path")
	}
	for s := range strings.SplitSeq(*conc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return o, fmt.Errorf("-concurrency: %q is not a positive number", s)
		}
		o.concurrency = append(o.concurrency, n)
	}
	if o.rounds < 1 || o.slices < 1 || o.duration <= 0 && o.requests <= 0 {
		return o, fmt.Errorf("-rounds and -slices must be >= 1, and -duration or -requests positive")
	}
	return o, nil
}

func main() {
	o, err := parseFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadbench:", err)
		os.Exit(2)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "loadbench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "loadbench: "+format+"\n", args...)
}

// workload is one kind of read.
type workload struct {
	name       string
	path       string
	leases     string        // prefix to revoke after a run; "" when reads make no lease
	imsLatency time.Duration // the emulator's, while this workload runs
	// compared workloads take turns in slices, so that whatever else the
	// machine is doing weighs on each of them alike.
	compared bool
}

func workloads(o options) []workload {
	return []workload{
		{name: "floor (constant lease)", path: "floor/creds", leases: "floor/", compared: true},
		{name: "kv v1 (no lease)", path: "kv/bench", compared: true},
		{name: "shared, role", path: "adobe/creds/shared", leases: "adobe/", compared: true},
		{name: "shared, no role", path: "adobe/creds", leases: "adobe/", compared: true},
		{name: "dedicated, IMS 0ms", path: "adobe/creds/dedicated", leases: "adobe/"},
		{name: fmt.Sprintf("dedicated, IMS %s", o.imsLatency), path: "adobe/creds/dedicated", leases: "adobe/", imsLatency: o.imsLatency},
	}
}

// result is one measured run.
type result struct {
	w           workload
	concurrency int
	sample
	imsRequests int
	cpu         cpu
}

// env is everything the runs share.
type env struct {
	o     options
	vault *vaultServer
	emu   *imsemu.Emulator
	load  *loader
	// oursPID and baselinePID are the plugin processes, which Vault started
	// when it mounted them.
	oursPID, baselinePID int
}

// cpu is the CPU time used by Vault, by the two plugins together, by this
// program (the clients and the IMS emulator), and by the whole machine.
type cpu struct{ vault, plugins, client, machine time.Duration }

func (c cpu) plus(o cpu) cpu {
	return cpu{c.vault + o.vault, c.plugins + o.plugins, c.client + o.client, c.machine + o.machine}
}

func (c cpu) minus(o cpu) cpu {
	return cpu{c.vault - o.vault, c.plugins - o.plugins, c.client - o.client, c.machine - o.machine}
}

// others is the CPU time of everything else on the machine: other
// processes, and kernel work not charged to a process.
func (c cpu) others() time.Duration { return max(0, c.machine-c.vault-c.plugins-c.client) }

// cpuNow reads the CPU times so far; a process that cannot be read counts 0.
func (e *env) cpuNow() cpu {
	t := func(pid int) time.Duration {
		d, err := cpuTime(pid)
		if err != nil {
			return 0
		}
		return d
	}
	m, _ := machineBusy()
	return cpu{vault: t(e.vault.pid()), plugins: t(e.oursPID) + t(e.baselinePID), client: t(os.Getpid()), machine: m}
}

func run(ctx context.Context, o options, out io.Writer) error {
	began := time.Now()
	loadStart := loadavg()
	mod, err := moduleDir()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "adobe-ims-loadbench-")
	if err != nil {
		return err
	}
	if o.keep {
		logf("work directory %s is kept", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	pluginDir := filepath.Join(dir, "plugins")
	if err := os.Mkdir(pluginDir, 0o750); err != nil {
		return err
	}

	logf("building the plugins")
	ours, err := buildPlugin(mod, pluginDir, pluginName, modulePath+"/cmd/"+pluginName, modulePath+".Version", pluginVersion)
	if err != nil {
		return err
	}
	baseline, err := buildPlugin(mod, pluginDir, baselineName, modulePath+"/bench/baseline", "main.version", pluginVersion)
	if err != nil {
		return err
	}

	emu := imsemu.New(imsemu.Config{
		ClientID: clientID, ClientSecret: clientSecret,
		Scopes: strings.Split(configScopes, ","), ExpiresIn: tokenLifetime,
	})
	ims := httptest.NewServer(emu)
	defer ims.Close()

	logf("starting %s", o.vaultBin)
	v, err := startVault(o.vaultBin, dir, pluginDir, o.logLevel)
	if err != nil {
		return err
	}
	defer v.stop()
	if err := setUp(ctx, v, ours, baseline, ims.URL); err != nil {
		return err
	}
	e := &env{o: o, vault: v, emu: emu, load: newLoader(v.addr, rootToken)}
	if e.oursPID, err = childRunning(v.pid(), ours.path); err != nil {
		return err
	}
	if e.baselinePID, err = childRunning(v.pid(), baseline.path); err != nil {
		return err
	}

	results, revocations, err := e.measureAll(ctx)
	if err != nil {
		return err
	}
	var g *growth
	if o.growth > 0 {
		if g, err = e.measureGrowth(ctx); err != nil {
			return err
		}
	}
	return report(out, reportData{
		o: o, results: results, revocations: revocations, growth: g, vaultVersion: vaultVersion(o.vaultBin),
		took: time.Since(began), loadStart: loadStart, loadEnd: loadavg(),
	})
}

// setUp registers and mounts both plugins and kv v1, configures ours
// without verifying, and warms the shared tokens.
func setUp(ctx context.Context, v *vaultServer, ours, baseline *plugin, imsURL string) error {
	steps := []func() error{
		func() error { return v.register(ours) },
		func() error { return v.register(baseline) },
		func() error { return v.mount("adobe", ours.name, ours.version, nil) },
		func() error { return v.mount("floor", baseline.name, baseline.version, nil) },
		func() error { return v.mount("kv", "kv", "", map[string]string{"version": "1"}) },
		func() error { return v.write("kv/bench", map[string]any{"value": strings.Repeat("x", 700)}) },
		func() error {
			return v.write("adobe/config", map[string]any{
				"client_id": clientID, "client_secret": clientSecret, "scopes": configScopes,
				"ims_url": imsURL, "verify": false,
			})
		},
		func() error { return v.write("adobe/roles/shared", map[string]any{"scopes": sharedScopes}) },
		func() error {
			return v.write("adobe/roles/dedicated", map[string]any{"scopes": dedicatedScopes, "mode": "dedicated"})
		},
		func() error { return v.read("adobe/creds/shared") },
		func() error { return v.read("adobe/creds") },
		func() error { return v.read("floor/creds") },
		func() error { return v.read("kv/bench") },
		func() error { return v.revokePrefix(ctx, "adobe/") },
		func() error { return v.revokePrefix(ctx, "floor/") },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return fmt.Errorf("setting up Vault: %w", err)
		}
	}
	return nil
}

// measureAll runs every workload at every concurrency, -rounds times, and
// keeps per workload and concurrency the run with the median requests/s.
func (e *env) measureAll(ctx context.Context) ([]result, []revocation, error) {
	ws := workloads(e.o)
	runs := make(map[[2]int][]result) // (concurrency, workload) -> one result per round
	var revs []revocation
	for round := range e.o.rounds {
		for ci, c := range e.o.concurrency {
			rs, rev, err := e.measureCompared(ctx, ws, c)
			if err != nil {
				return nil, nil, err
			}
			revs = append(revs, rev)
			for wi, w := range ws {
				if !w.compared {
					if rs[wi], rev, err = e.measureAlone(ctx, w, c); err != nil {
						return nil, nil, err
					}
					revs = append(revs, rev)
				}
				r := rs[wi]
				logf("round %d/%d  %-26s c=%-3d %8.0f req/s  p50 %6.2f ms  p99 %7.2f ms  ims %5d  errors %d",
					round+1, e.o.rounds, w.name, c, r.rps(), ms(r.quantile(0.5)), ms(r.quantile(0.99)), r.imsRequests, r.errors)
				if r.firstErr != nil {
					logf("  first error: %v", r.firstErr)
				}
				runs[[2]int{ci, wi}] = append(runs[[2]int{ci, wi}], r)
			}
		}
	}
	var out []result
	for ci := range e.o.concurrency {
		for wi := range ws {
			rs := runs[[2]int{ci, wi}]
			slices.SortFunc(rs, func(a, b result) int { return cmp.Compare(a.rps(), b.rps()) })
			out = append(out, rs[len(rs)/2])
		}
	}
	return out, revs, nil
}

// measureCompared reads the compared workloads at c clients in turns of a
// slice each, then revokes their leases.
func (e *env) measureCompared(ctx context.Context, ws []workload, c int) (map[int]result, revocation, error) {
	e.emu.SetLatency(0)
	out := map[int]result{}
	leases := 0
	prefixes := map[string]bool{}
	for i, w := range ws {
		if !w.compared {
			continue
		}
		out[i] = result{w: w, concurrency: c}
		if w.leases != "" {
			prefixes[w.leases] = true
		}
		if e.o.warmup > 0 {
			leases += e.countLeases(w, e.load.run(ctx, w.path, c, stop{duration: e.o.warmup}))
		}
	}
	slice := stop{duration: e.o.duration / time.Duration(e.o.slices)}
	if e.o.requests > 0 {
		slice = stop{requests: max(1, e.o.requests/e.o.slices)}
	}
	for range e.o.slices {
		for i, w := range ws {
			if !w.compared {
				continue
			}
			before, cpuBefore := e.emu.Stats().TokenRequests, e.cpuNow()
			s := e.load.run(ctx, w.path, c, slice)
			r := out[i]
			r.add(s)
			r.imsRequests += e.emu.Stats().TokenRequests - before
			r.cpu = r.cpu.plus(e.cpuNow().minus(cpuBefore))
			out[i] = r
			leases += e.countLeases(w, s)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, revocation{}, err
	}
	for i, r := range out {
		r.finish()
		out[i] = r
	}
	rev, err := e.revoke(ctx, fmt.Sprintf("compared reads, %d clients", c), leases, slices.Sorted(maps.Keys(prefixes))...)
	return out, rev, err
}

// measureAlone reads one workload at c clients, then revokes its leases
// with the emulator answering at once: revoking a dedicated lease
// invalidates its token at IMS.
func (e *env) measureAlone(ctx context.Context, w workload, c int) (result, revocation, error) {
	e.emu.SetLatency(w.imsLatency)
	leases := 0
	if e.o.warmup > 0 {
		leases += e.countLeases(w, e.load.run(ctx, w.path, c, stop{duration: e.o.warmup}))
	}
	before, cpuBefore := e.emu.Stats().TokenRequests, e.cpuNow()
	s := e.load.run(ctx, w.path, c, stop{requests: e.o.requests, duration: e.o.duration})
	r := result{w: w, concurrency: c, sample: s, imsRequests: e.emu.Stats().TokenRequests - before, cpu: e.cpuNow().minus(cpuBefore)}
	leases += e.countLeases(w, s)
	e.emu.SetLatency(0)
	if err := ctx.Err(); err != nil {
		return r, revocation{}, err
	}
	rev, err := e.revoke(ctx, fmt.Sprintf("%s, %d clients", w.name, c), leases, w.leases)
	return r, rev, err
}

// countLeases is how many leases a run left in Vault.
func (e *env) countLeases(w workload, s sample) int {
	if w.leases == "" {
		return 0
	}
	return len(s.latencies)
}

// revocation is one wait for revoke-prefix.
type revocation struct {
	after  string
	leases int
	took   time.Duration
}

func (e *env) revoke(ctx context.Context, after string, leases int, prefixes ...string) (revocation, error) {
	t0 := time.Now()
	for _, p := range prefixes {
		if err := e.vault.revokePrefix(ctx, p); err != nil {
			return revocation{}, fmt.Errorf("revoking %s after %s: %w", p, after, err)
		}
	}
	rev := revocation{after: after, leases: leases, took: time.Since(t0)}
	logf("revoked %d leases under %s in %.1fs", leases, strings.Join(prefixes, ", "), rev.took.Seconds())
	return rev, nil
}

// growth is what many shared reads without revocation do to memory.
type growth struct {
	reads, concurrency  int
	pluginPID, vaultPID int
	sample              sample
	revokeTook          time.Duration
	imsDuring           int // token requests during the reads
	sharedTokensMinted  int // for the role's scope set since Vault started

	// Before the reads, after them, and after revoking their leases.
	pluginRSS, vaultRSS [3]int64 // KiB
	leases              [3]int
}

func (e *env) measureGrowth(ctx context.Context) (*growth, error) {
	const path, leases = "adobe/creds/shared", "adobe/creds/shared/"
	e.emu.SetLatency(0)
	g := &growth{reads: e.o.growth, concurrency: e.o.growthConcurrency, vaultPID: e.vault.pid(), pluginPID: e.oursPID}
	if err := g.observe(e, 0, leases); err != nil {
		return nil, err
	}
	before := e.emu.Stats().TokenRequests

	logf("growth: %d reads of %s at concurrency %d, leases kept", g.reads, path, g.concurrency)
	g.sample = e.load.run(ctx, path, g.concurrency, stop{requests: g.reads})
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	g.imsDuring = e.emu.Stats().TokenRequests - before
	if err := g.observe(e, 1, leases); err != nil {
		return nil, err
	}
	logf("growth: %d reads in %.1fs (%.0f req/s, %d errors); %d leases; revoking them",
		g.sample.requests, g.sample.elapsed.Seconds(), g.sample.rps(), g.sample.errors, g.leases[1])
	if g.sample.firstErr != nil {
		logf("  first error: %v", g.sample.firstErr)
	}

	t0 := time.Now()
	if err := e.vault.revokePrefix(ctx, leases); err != nil {
		return nil, fmt.Errorf("revoking the growth run's leases: %w", err)
	}
	g.revokeTook = time.Since(t0)
	if err := g.observe(e, 2, leases); err != nil {
		return nil, err
	}
	logf("growth: revoked in %.1fs", g.revokeTook.Seconds())

	want := strings.Split(sharedScopes, ",")
	slices.Sort(want)
	for _, t := range e.emu.Tokens() {
		got := slices.Sorted(slices.Values(t.Scopes))
		if slices.Equal(got, want) {
			g.sharedTokensMinted++
		}
	}
	return g, nil
}

// observe records memory and leases at moment i.
func (g *growth) observe(e *env, i int, leases string) error {
	g.pluginRSS[i], g.vaultRSS[i] = rss(g.pluginPID), rss(g.vaultPID)
	n, err := e.vault.countLeases(leases)
	g.leases[i] = n
	return err
}

func rss(pid int) int64 {
	kib, err := rssKiB(pid)
	if err != nil {
		logf("reading the RSS of pid %d: %v", pid, err)
		return -1
	}
	return kib
}

// countLeases lists the leases under prefix (which ends in a slash).
func (v *vaultServer) countLeases(prefix string) (int, error) {
	s, err := v.client.Logical().List("sys/leases/lookup/" + prefix)
	if err != nil {
		return 0, fmt.Errorf("listing leases under %s: %w", prefix, err)
	}
	if s == nil {
		return 0, nil
	}
	keys, _ := s.Data["keys"].([]any)
	return len(keys), nil
}

func vaultVersion(bin string) string {
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// machine describes the host, for the report.
func machine() (cpus int, model, mem string) {
	cpus, model, mem = runtime.NumCPU(), "unknown", "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kib, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				mem = fmt.Sprintf("%.1f GiB", float64(kib)/(1<<20))
			}
		}
	}
	return cpus, model, mem
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
