package main

import (
	"fmt"
	"io"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// The targets the shared read is held to, against the constant-lease floor.
const (
	targetThroughput = 0.90 // shared req/s >= this × floor req/s
	targetP99        = 1.20 // shared p99 <= this × floor p99
)

type reportData struct {
	o                  options
	results            []result
	revocations        []revocation
	growth             *growth
	vaultVersion       string
	took               time.Duration
	loadStart, loadEnd string
}

// report writes the report to w and returns the first write error, so that
// a truncated report (a full disk, a closed pipe) does not pass for a whole one.
func report(w io.Writer, d reportData) error {
	cpus, model, mem := machine()
	var werr error
	p := func(format string, args ...any) {
		if werr == nil {
			_, werr = fmt.Fprintf(w, format+"\n", args...)
		}
	}

	p("## Machine\n")
	p("- %d CPUs, %s, %s memory; load average (1, 5, 15 min) %s at the start, %s at the end", cpus, model, mem, d.loadStart, d.loadEnd)
	p("- %s, %s, plugin %s; `vault server -dev` (in-memory storage), log level %s", d.vaultVersion, runtime.Version(), pluginVersion, d.o.logLevel)
	each := d.o.duration.String()
	if d.o.requests > 0 {
		each = fmt.Sprintf("%d requests", d.o.requests)
	}
	p("- each workload is read for %s per concurrency after %s of unmeasured warm-up; the floors and the shared reads take turns in %d slices, so that other load on the machine weighs on them alike; %d round(s), the round with the median req/s reported", each, d.o.warmup, d.o.slices, d.o.rounds)
	p("- leases are revoked by prefix after each concurrency's compared reads and after each dedicated run, so Vault's expiration manager never holds more than one run's leases")
	p("- clients: Go net/http keep-alive GETs with the root token, on the same machine as Vault, its plugins and the IMS emulator")
	p("")

	p("## Reads\n")
	p("CPU µs/req is the CPU time used during the run divided by the successful reads, for Vault, for the plugins (ours and the baseline together), and for loadbench itself (clients and IMS emulator); /proc counts it in 10 ms ticks. Other CPU is the share of the machine's %d CPUs used meanwhile by everything else (other processes, and kernel work charged to none): the noise.\n", cpus)
	p("| workload | path | clients | requests | errors | req/s | p50 ms | p99 ms | IMS token requests | CPU µs/req: Vault | plugins | loadbench | other CPU |")
	p("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, r := range d.results {
		n := time.Duration(max(1, len(r.latencies)))
		p("| %s | `%s` | %d | %d | %d | %.0f | %.2f | %.2f | %d | %d | %d | %d | %.0f%% |", r.w.name, r.w.path, r.concurrency, r.requests, r.errors,
			r.rps(), ms(r.quantile(0.5)), ms(r.quantile(0.99)), r.imsRequests,
			(r.cpu.vault / n).Microseconds(), (r.cpu.plugins / n).Microseconds(), (r.cpu.client / n).Microseconds(),
			100*r.cpu.others().Seconds()/(r.elapsed.Seconds()*float64(cpus)))
	}
	p("")

	p("## Revoking the leases between runs\n")
	p("`sys/leases/revoke-prefix` (synchronous), warm-up leases included.\n")
	p("| after | leases | seconds | leases/s |")
	p("|---|--:|--:|--:|")
	for _, r := range d.revocations {
		p("| %s | %d | %.1f | %.0f |", r.after, r.leases, r.took.Seconds(), float64(r.leases)/r.took.Seconds())
	}
	p("")

	p("## Shared reads against the floors\n")
	p("Target: shared req/s >= %.2f × floor and shared p99 <= %.2f × floor.\n", targetThroughput, targetP99)
	p("| clients | shared read | req/s ÷ floor | p99 ÷ floor | req/s ÷ kv v1 | p99 ÷ kv v1 | target met |")
	p("|--:|---|--:|--:|--:|--:|---|")
	find := func(name string, c int) *result {
		for i := range d.results {
			if d.results[i].w.name == name && d.results[i].concurrency == c {
				return &d.results[i]
			}
		}
		return nil
	}
	ws := workloads(d.o)
	floor, kv := ws[0].name, ws[1].name
	missed := map[string][]string{}
	for _, shared := range []string{ws[2].name, ws[3].name} {
		for _, c := range d.o.concurrency {
			s, f, k := find(shared, c), find(floor, c), find(kv, c)
			tput, p99 := s.rps()/f.rps(), ratio(s.quantile(0.99), f.quantile(0.99))
			ok := tput >= targetThroughput && p99 <= targetP99 && s.errors == 0
			if !ok {
				missed[shared] = append(missed[shared], strconv.Itoa(c))
			}
			p("| %d | %s | %.2f | %.2f | %.2f | %.2f | %s |", c, shared, tput, p99,
				s.rps()/k.rps(), ratio(s.quantile(0.99), k.quantile(0.99)), yesNo(ok))
		}
	}
	p("")
	for _, shared := range []string{ws[2].name, ws[3].name} {
		if m := missed[shared]; len(m) > 0 {
			p("- %s: target **not met** at %s clients", shared, strings.Join(m, ", "))
		} else {
			p("- %s: target met at every concurrency", shared)
		}
	}
	p("")

	if g := d.growth; g != nil {
		p("## Growth: %d shared reads without revoking\n", g.reads)
		p("| | before | after %d reads | after revoke-prefix |", g.reads)
		p("|---|--:|--:|--:|")
		p("| plugin RSS (pid %d) | %s | %s | %s |", g.pluginPID, mib(g.pluginRSS[0]), mib(g.pluginRSS[1]), mib(g.pluginRSS[2]))
		p("| Vault RSS (pid %d) | %s | %s | %s |", g.vaultPID, mib(g.vaultRSS[0]), mib(g.vaultRSS[1]), mib(g.vaultRSS[2]))
		p("| leases under `adobe/creds/shared/` | %d | %d | %d |", g.leases[0], g.leases[1], g.leases[2])
		p("")
		if n := g.leases[1] - g.leases[0]; n > 0 && g.vaultRSS[0] > 0 {
			p("- Vault's RSS grew by %.1f KiB per lease held; the plugin's changed by %+.1f MiB in all",
				float64(g.vaultRSS[1]-g.vaultRSS[0])/float64(n), float64(g.pluginRSS[1]-g.pluginRSS[0])/1024)
		}
		p("- the reads: %d at %d clients in %.1f s (%.0f req/s, p50 %.2f ms, p99 %.2f ms, %d errors); revoking their leases by prefix took %.1f s",
			g.sample.requests, g.concurrency, g.sample.elapsed.Seconds(), g.sample.rps(), ms(g.sample.quantile(0.5)), ms(g.sample.quantile(0.99)), g.sample.errors, g.revokeTook.Seconds())
		p("- IMS token requests during the reads: %d; tokens minted for the role's scope set since Vault started: %d (IMS tokens live %s)",
			g.imsDuring, g.sharedTokensMinted, tokenLifetime)
		p("")
	}
	p("Total run time: %s.", d.took.Round(time.Second))
	return werr
}

func ratio(a, b time.Duration) float64 { return float64(a) / float64(b) }

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "**no**"
}

func mib(kib int64) string {
	if kib < 0 {
		return "?"
	}
	return fmt.Sprintf("%.1f MiB", float64(kib)/1024)
}
