package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/imsemu"
)

const (
	testClientID = "cmd-test-client"
	testSecret   = "cmd-test-secret"
)

var readyLine = regexp.MustCompile(`^ims-emulator listening on (https?)://(\S+) \(control http://(\S+)\)$`)

type emulator struct {
	scheme, addr, control string
	errc                  chan error
	cancel                context.CancelFunc
}

// start runs the command on free ports and waits for its ready line.
func start(t *testing.T, extra ...string) *emulator {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	args := append([]string{"-addr", "127.0.0.1:0", "-control-addr", "127.0.0.1:0", "-quiet",
		"-client-id", testClientID}, extra...)
	errc := make(chan error, 1)
	go func() {
		err := run(ctx, args, pw)
		pw.CloseWithError(errors.New("run returned"))
		errc <- err
	}()
	sc := bufio.NewScanner(pr)
	if !sc.Scan() {
		cancel()
		t.Fatalf("no ready line: %v; run: %v", sc.Err(), <-errc)
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	m := readyLine.FindStringSubmatch(sc.Text())
	if m == nil {
		cancel()
		t.Fatalf("ready line %q", sc.Text())
	}
	e := &emulator{scheme: m[1], addr: m[2], control: m[3], errc: errc, cancel: cancel}
	t.Cleanup(func() { e.stop(t) })
	return e
}

func (e *emulator) stop(t *testing.T) {
	t.Helper()
	if e.cancel == nil {
		return
	}
	e.cancel()
	e.cancel = nil
	if err := <-e.errc; err != nil {
		t.Errorf("run returned %v after cancel, want nil", err)
	}
}

func tokenForm() url.Values {
	return url.Values{
		"grant_type":    {"client_credentials"},
		"client_id":     {testClientID},
		"client_secret": {testSecret},
		"scope":         {"openid,firefly_api"},
	}
}

// mint obtains a token (scopes openid,firefly_api), failing the test otherwise.
func mint(t *testing.T, client *http.Client, base string) string {
	t.Helper()
	resp, err := client.PostForm(base+"/ims/token/v3", tokenForm())
	if err != nil {
		t.Fatalf("token request: %v", err)
	}
	defer resp.Body.Close()
	var body map[string]any
	err = json.NewDecoder(resp.Body).Decode(&body)
	token, _ := body["access_token"].(string)
	if err != nil || resp.StatusCode != 200 || token == "" {
		t.Fatalf("token request: %d %v %v", resp.StatusCode, body, err)
	}
	return token
}

func setDown(t *testing.T, control string, down bool) {
	t.Helper()
	body := `{"down":false}`
	if down {
		body = `{"down":true}`
	}
	resp, err := http.Post("http://"+control+"/down", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || strings.TrimSpace(string(b)) != body {
		t.Fatalf("POST /down %s: %d %s", body, resp.StatusCode, b)
	}
}

func TestDownAndUp(t *testing.T) {
	e := start(t, "-client-secret", testSecret)
	base := "http://" + e.addr
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	mint(t, client, base)

	setDown(t, e.control, true)
	downResp, err := client.PostForm(base+"/ims/token/v3", tokenForm())
	if err == nil {
		downResp.Body.Close()
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("while down: err = %v, want connection refused", err)
	}
	setDown(t, e.control, true) // idempotent

	setDown(t, e.control, false)
	mint(t, client, base)

	// The control API keeps serving the emulator's state across down and up.
	resp, err := http.Get("http://" + e.control + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var stats struct {
		TokensIssued int `json:"tokens_issued"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&stats); err != nil || stats.TokensIssued != 2 {
		t.Errorf("stats %+v %v, want 2 tokens issued", stats, err)
	}

	resp, err = http.Post("http://"+e.control+"/down", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("POST /down {}: %d, want 400", resp.StatusCode)
	}
}

func TestDownEndsHangingRequests(t *testing.T) {
	e := start(t, "-client-secret", testSecret)
	resp, err := http.Post("http://"+e.control+"/fault", "application/json", strings.NewReader(`{"kind":"hang"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	done := make(chan error, 1)
	go func() {
		resp, err := http.PostForm("http://"+e.addr+"/ims/token/v3", tokenForm())
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	// Wait until the emulator holds the request, then take it down.
	for {
		resp, err := http.Get("http://" + e.control + "/stats")
		if err != nil {
			t.Fatal(err)
		}
		var stats struct {
			FaultsServed int `json:"faults_served"`
		}
		err = json.NewDecoder(resp.Body).Decode(&stats)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if stats.FaultsServed == 1 {
			break
		}
		time.Sleep(5 * time.Millisecond) // polling a condition; there is nothing to block on
	}
	setDown(t, e.control, true)
	if err := <-done; err == nil {
		t.Error("hanging request got an answer, want its connection closed")
	}
}

func TestSecretFromEnvironment(t *testing.T) {
	t.Setenv(envClientSecret, testSecret)
	e := start(t)
	mint(t, http.DefaultClient, "http://"+e.addr)
}

func TestStopsOnCancel(t *testing.T) {
	e := start(t, "-client-secret", testSecret)
	e.stop(t) // fails the test unless run returns nil
	if _, err := net.Dial("tcp", e.addr); err == nil {
		t.Error("IMS listener still open after run returned")
	}
	if _, err := net.Dial("tcp", e.control); err == nil {
		t.Error("control listener still open after run returned")
	}
}

func TestBadArguments(t *testing.T) {
	t.Setenv(envClientSecret, "")
	tests := map[string][]string{
		"no secret":                  {"-client-id", "x"},
		"no client id":               {"-client-secret", "y"},
		"cert without key":           {"-client-id", "x", "-client-secret", "y", "-tls-cert", "c.pem"},
		"unknown flag":               {"-nope"},
		"extra argument":             {"-client-id", "x", "-client-secret", "y", "extra"},
		"bad address":                {"-client-id", "x", "-client-secret", "y", "-addr", "256.0.0.1:bad"},
		"rate limit without window":  {"-client-id", "x", "-client-secret", "y", "-rate-limit", "10"},
		"rate limit of 0 per window": {"-client-id", "x", "-client-secret", "y", "-rate-limit", "0/1m"},
		"rate limit with bad window": {"-client-id", "x", "-client-secret", "y", "-rate-limit", "10/fortnight"},
		"rate limit with no window":  {"-client-id", "x", "-client-secret", "y", "-rate-limit", "10/0s"},
		"bad Retry-After":            {"-client-id", "x", "-client-secret", "y", "-rate-limit-retry-after", "-5s"},
		"wrong secret status 403":    {"-client-id", "x", "-client-secret", "y", "-wrong-secret-status", "403"},
	}
	for name, args := range tests {
		t.Run(name, func(t *testing.T) {
			if err := run(t.Context(), append(args, "-quiet"), io.Discard); err == nil {
				t.Error("run succeeded")
			}
		})
	}
}

func TestTLS(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t)
	e := start(t, "-client-secret", testSecret, "-tls-cert", certFile, "-tls-key", keyFile)
	if e.scheme != "https" {
		t.Fatalf("scheme %q, want https", e.scheme)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	mint(t, client, "https://"+e.addr)
}

// selfSigned writes a certificate for 127.0.0.1 and returns its files and a pool trusting it.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "ims-emulator test"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func TestFaultFlag(t *testing.T) {
	e := start(t, "-client-secret", testSecret, "-fault", `{"endpoint":"token","kind":"status","status":503,"times":1}`)
	base := e.scheme + "://" + e.addr
	resp, err := http.PostForm(base+"/ims/token/v3", tokenForm())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("first token request: %d, want the injected 503", resp.StatusCode)
	}
	mint(t, http.DefaultClient, base) // Times 1: the fault is spent
}

func TestFaultFlagRejectsBadJSON(t *testing.T) {
	for _, f := range []string{`{"kind":"nope"}`, `{"kind":"status","stauts":503}`, `not json`} {
		err := run(t.Context(), []string{"-client-id", "x", "-client-secret", "y", "-fault", f}, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "-fault") {
			t.Errorf("-fault %s: err %v, want one naming -fault", f, err)
		}
	}
}

// callAPI calls the Adobe API stand-in and returns status and body.
func callAPI(t *testing.T, base, token, apiKey string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+imsemu.APIPath, strings.NewReader(`{"prompt":"a red kite"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	if apiKey != "" {
		req.Header.Set("x-api-key", apiKey)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestAPIStandIn(t *testing.T) {
	e := start(t, "-client-secret", testSecret)
	base := "http://" + e.addr
	token := mint(t, http.DefaultClient, base)

	if status, body := callAPI(t, base, token, testClientID); status != 200 || !strings.Contains(body, `"outputs"`) {
		t.Errorf("good call: %d %s", status, body)
	}
	if status, body := callAPI(t, base, token, ""); status != 403 || strings.TrimSpace(body) != `{"error_code":"403003","message":"Api Key is invalid"}` {
		t.Errorf("no x-api-key: %d %s", status, body)
	}
	if status, body := callAPI(t, base, "not-a-token", testClientID); status != 401 || strings.TrimSpace(body) != `{"error_code":"401013","message":"Oauth token is not valid"}` {
		t.Errorf("unknown token: %d %s", status, body)
	}

	resp, err := http.Get("http://" + e.control + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var stats imsemu.Stats
	if err := json.NewDecoder(resp.Body).Decode(&stats); err != nil || stats.APIRequests != 3 || stats.APIAccepted != 1 || stats.APIRejections != 2 {
		t.Errorf("stats %+v %v, want 3 API requests, 1 accepted, 2 rejected", stats, err)
	}
}

func TestHelpListsEndpoints(t *testing.T) {
	// The flag package prints -h to stderr: capture it (no test here runs in parallel).
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stderr
	os.Stderr = w
	err = run(t.Context(), []string{"-h"}, io.Discard)
	os.Stderr = saved
	w.Close()
	help, _ := io.ReadAll(r)
	r.Close()
	if !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v, want flag.ErrHelp", err)
	}
	for _, want := range []string{"TEST DOUBLE", "/ims/token/v3", "/ims/invalidate_token/v2", "/ims/validate_token/v1",
		"/console/organizations/", "POST " + imsemu.APIPath, "stand-in", "/down", "-client-id",
		"-rate-limit N/PER", "-rate-limit-retry-after", "/rate_limit", "429", "Retry-After", "-wrong-secret-status", "/wrong_secret_status"} {
		if !strings.Contains(string(help), want) {
			t.Errorf("-h text lacks %q:\n%s", want, help)
		}
	}
}

// tokenRequest makes one token request and returns its status, Retry-After header and
// whether that header was present.
func tokenRequest(t *testing.T, base, secret string) (int, string, bool) {
	t.Helper()
	form := tokenForm()
	form.Set("client_secret", secret)
	resp, err := http.PostForm(base+"/ims/token/v3", form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("token answer %d: %v", resp.StatusCode, err)
	}
	if resp.StatusCode != 200 {
		if e, _ := body["error"].(string); e == "" || body["error_description"] == nil {
			t.Errorf("%d body %v, want the IMS error body", resp.StatusCode, body)
		}
	}
	return resp.StatusCode, resp.Header.Get("Retry-After"), len(resp.Header.Values("Retry-After")) > 0
}

func TestRateLimitFlag(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		statuses   []int
		retryAfter string // of the 429s; "" wants no header
	}{
		{"computed Retry-After", []string{"-rate-limit", "2/1h"}, []int{200, 200, 429, 429}, "3600"},
		{"bare unit", []string{"-rate-limit", "1/h"}, []int{200, 429}, "3600"},
		{"fixed Retry-After", []string{"-rate-limit", "1/1m", "-rate-limit-retry-after", "20s"}, []int{200, 429}, "20"},
		{"no Retry-After", []string{"-rate-limit", "1/1m", "-rate-limit-retry-after", "none"}, []int{200, 429}, ""},
		{"auto, spelled out", []string{"-rate-limit", "1/1m", "-rate-limit-retry-after", "auto"}, []int{200, 429}, "60"},
		{"off", []string{"-rate-limit", "off"}, []int{200, 200, 200}, ""},
		{"default", nil, []int{200, 200, 200}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := start(t, append([]string{"-client-secret", testSecret}, tc.args...)...)
			base := "http://" + e.addr
			throttled := 0
			for i, want := range tc.statuses {
				status, retryAfter, present := tokenRequest(t, base, testSecret)
				if status != want {
					t.Fatalf("request %d: %d, want %d", i, status, want)
				}
				if status != 429 {
					continue
				}
				throttled++
				// The window is real time here: a slow machine may shave a second off.
				if n, _ := strconv.Atoi(tc.retryAfter); present != (tc.retryAfter != "") ||
					(retryAfter != tc.retryAfter && retryAfter != strconv.Itoa(n-1)) {
					t.Errorf("request %d: Retry-After %q (present %v), want %q", i, retryAfter, present, tc.retryAfter)
				}
			}
			var stats imsemu.Stats
			getJSON(t, e.control, "/stats", &stats)
			if stats.TokenThrottled != throttled || stats.TokenInFlightPeak != 1 || stats.TokenRequests != len(tc.statuses) {
				t.Errorf("stats %+v, want %d throttled, peak 1", stats, throttled)
			}
		})
	}
}

func TestRateLimitThroughTheControlAPI(t *testing.T) {
	e := start(t, "-client-secret", testSecret, "-rate-limit", "5/1m")
	var cfg struct {
		RateLimit struct {
			Requests int   `json:"requests"`
			PerMS    int64 `json:"per_ms"`
		} `json:"rate_limit"`
		WrongSecretStatus int `json:"wrong_secret_status"`
	}
	getJSON(t, e.control, "/config", &cfg)
	if cfg.RateLimit.Requests != 5 || cfg.RateLimit.PerMS != 60000 || cfg.WrongSecretStatus != 400 {
		t.Errorf("GET /config %+v, want the -rate-limit 5/1m and status 400", cfg)
	}
	resp, err := http.Post("http://"+e.control+"/rate_limit", "application/json",
		strings.NewReader(`{"requests":1,"per_ms":60000,"no_retry_after":true}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 {
		t.Fatalf("POST /rate_limit: %d", resp.StatusCode)
	}
	base := "http://" + e.addr
	if status, _, _ := tokenRequest(t, base, testSecret); status != 200 {
		t.Fatalf("first request: %d", status)
	}
	if status, _, present := tokenRequest(t, base, testSecret); status != 429 || present {
		t.Errorf("second request: %d, Retry-After present %v; want 429 without", status, present)
	}
}

func TestWrongSecretStatusFlag(t *testing.T) {
	tests := []struct {
		args []string
		want int
	}{
		{nil, 400},
		{[]string{"-wrong-secret-status", "400"}, 400},
		{[]string{"-wrong-secret-status", "401"}, 401},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			e := start(t, append([]string{"-client-secret", testSecret}, tc.args...)...)
			if status, _, _ := tokenRequest(t, "http://"+e.addr, "not-the-secret"); status != tc.want {
				t.Errorf("wrong secret: %d, want %d", status, tc.want)
			}
		})
	}
}

func TestRateLimitFlagParsing(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		per  time.Duration
		fail bool
	}{
		{in: "10/1m", n: 10, per: time.Minute},
		{in: "10/m", n: 10, per: time.Minute},
		{in: "1/1500ms", n: 1, per: 1500 * time.Millisecond},
		{in: "off"},
		{in: "0"},
		{in: "10", fail: true},
		{in: "-1/1m", fail: true},
		{in: "x/1m", fail: true},
		{in: "10/-1m", fail: true},
		{in: "10/", fail: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			var f rateLimitFlag
			err := f.Set(tc.in)
			if (err != nil) != tc.fail || f.n != tc.n || f.per != tc.per {
				t.Errorf("Set(%q): %+v, %v", tc.in, f, err)
			}
		})
	}
}

// getJSON decodes the answer of GET path on the control API.
func getJSON(t *testing.T, control, path string, v any) {
	t.Helper()
	resp, err := http.Get("http://" + control + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v", path, resp.StatusCode, err)
	}
}
