package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// loader sends GET requests to Vault's HTTP API, as an application reading a
// secret would, over keep-alive connections.
type loader struct {
	client *http.Client
	base   string // http://host:port/v1/
	token  string
}

func newLoader(addr, token string) *loader {
	tr := &http.Transport{
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &loader{client: &http.Client{Transport: tr, Timeout: time.Minute}, base: "http://" + addr + "/v1/", token: token}
}

// stop says when a run ends: after a number of requests or at a deadline.
type stop struct {
	requests int           // > 0: this many requests in all
	duration time.Duration // otherwise: until this much time has passed
}

// sample is what one run measured.
type sample struct {
	requests, errors int
	elapsed          time.Duration
	latencies        []time.Duration // sorted, successful requests only
	firstErr         error
}

// add merges another run's figures into s; finish must follow.
func (s *sample) add(o sample) {
	s.requests += o.requests
	s.errors += o.errors
	s.elapsed += o.elapsed
	s.latencies = append(s.latencies, o.latencies...)
	if s.firstErr == nil {
		s.firstErr = o.firstErr
	}
}

func (s *sample) finish() { slices.Sort(s.latencies) }

// rps counts successful requests only.
func (s sample) rps() float64 { return float64(len(s.latencies)) / s.elapsed.Seconds() }

// quantile is the nearest-rank quantile of the successful requests' latencies.
func (s sample) quantile(q float64) time.Duration {
	if len(s.latencies) == 0 {
		return 0
	}
	return s.latencies[int(q*float64(len(s.latencies)-1)+0.5)]
}

// run reads path from concurrency workers until st says stop.
func (l *loader) run(ctx context.Context, path string, concurrency int, st stop) sample {
	var (
		issued   atomic.Int64
		deadline = time.Now().Add(st.duration)
		wg       sync.WaitGroup
		mu       sync.Mutex
		all      sample
	)
	more := func() bool {
		if ctx.Err() != nil {
			return false
		}
		if st.requests > 0 {
			return issued.Add(1) <= int64(st.requests)
		}
		return time.Now().Before(deadline)
	}
	start := time.Now()
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			var errs int
			var firstErr error
			for more() {
				t0 := time.Now()
				err := l.get(ctx, path)
				if err != nil {
					errs++
					if firstErr == nil {
						firstErr = err
					}
					continue
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			all.latencies = append(all.latencies, lat...)
			all.errors += errs
			if all.firstErr == nil {
				all.firstErr = firstErr
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	all.elapsed = time.Since(start)
	all.requests = len(all.latencies) + all.errors
	slices.Sort(all.latencies)
	return all
}

func (l *loader) get(ctx context.Context, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, l.base+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("X-Vault-Token", l.token)
	resp, err := l.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, b)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	return err
}
