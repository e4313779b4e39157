// ims-emulator is a test double of Adobe IMS for tests and `make demo`; never point
// production at it.
//
// It serves the IMS token endpoints, the I/O Management client-secrets API and the Adobe
// API stand-in (POST /v3/images/generate, a test double of Firefly Services) of package
// imsemu on -addr, and the emulator's JSON control API on -control-addr, plus
//
//	POST /down {"down":true|false}  close the IMS listener (connections are refused) or re-open it
//	GET  /down                      {"down":bool}
//
// The API stand-in shares the IMS listener, so /down takes it down too. Run
// `ims-emulator -h` for the list of endpoints.
//
// Adobe publishes no rate limit; -rate-limit N/PER (with -rate-limit-retry-after) sets
// the emulator's, per client_id, answering 429 beyond it. -wrong-secret-status chooses
// 400 or 401 for a wrong client secret, both of which Adobe documents.
//
// The client secret can come from IMS_EMULATOR_CLIENT_SECRET so that it stays off
// command lines. Neither it nor any token is ever logged.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/imsemu"
)

const envClientSecret = "IMS_EMULATOR_CLIENT_SECRET" //nolint:gosec // G101: the name of an environment variable, not a secret

// defaultScopes are the Firefly Services scopes of adobe-ims.md plus those the I/O
// Management API needs, so that the demo can mint tokens and rotate the secret.
var defaultScopes = strings.Join(append(
	[]string{"openid", "AdobeID", "session", "additional_info", "read_organizations", "firefly_api", "ff_apis"},
	"additional_info.projectedProductContext", "additional_info.roles", "adobeio_api",
	"read_client_secret", "manage_client_secrets"), ",")

// usageHeader opens the -h text; the flags follow it.
const usageHeader = `ims-emulator: a TEST DOUBLE of Adobe IMS for tests and the demo; never point production at it.

Serves on -addr:
  POST /ims/token/v3                   client_credentials token (form body)
  POST /ims/invalidate_token/v2        invalidate a token
  POST /ims/validate_token/v1          validate a token (undocumented by Adobe)
  GET|POST /console/organizations/{org}/credentials/{credential}/secrets
  DELETE   /console/organizations/{org}/credentials/{credential}/secrets/{uuid}
                                       I/O Management API client secrets
  POST ` + imsemu.APIPath + `             Adobe API stand-in (Firefly Services, also a test double):
                                       200 and a fake generate response for
                                       Authorization: Bearer {token issued here, live, with firefly_api},
                                       x-api-key: {client id}, body {"prompt":"..."};
                                       otherwise the API gateway's {"error_code","message"}
Serves on -control-addr: the JSON control API (/stats, /tokens, /fault, /expires_in,
  /latency, /rate_limit, /wrong_secret_status, /secrets, /config) and POST|GET /down.

Throttling: Adobe publishes no rate limit, so the emulator's is a knob, off by default.
With -rate-limit N/PER each client_id gets at most N token requests in any window of
length PER (sliding; throttled requests do not count); beyond that the token endpoint
answers 429 with the IMS error body and, per -rate-limit-retry-after, a Retry-After
header. Change it at run time with POST /rate_limit
  {"requests":N,"per_ms":M[,"retry_after_seconds":S][,"no_retry_after":true]}
or DELETE /rate_limit. GET /stats shows token_throttled and token_in_flight_peak.

The client secret can come from ` + envClientSecret + `.

Flags:
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "ims-emulator:", err)
		}
		os.Exit(2)
	}
}

// run serves until ctx is done. It writes one line to stdout once both listeners are ready.
func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("ims-emulator", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageHeader) //nolint:errcheck // usage text, as flag.PrintDefaults writes it: nothing to do if it cannot be shown
		fs.PrintDefaults()
	}
	addr := fs.String("addr", "127.0.0.1:8181", "address of the IMS, I/O Management API and Adobe API stand-in surface")
	controlAddr := fs.String("control-addr", "127.0.0.1:8182", "address of the JSON control API")
	clientID := fs.String("client-id", "", "client ID of the emulated credential (required)")
	clientSecret := fs.String("client-secret", "", "its initial client secret (required; or set "+envClientSecret+")")
	scopes := fs.String("scopes", defaultScopes, "comma-separated scopes granted to the credential")
	expiresIn := fs.Duration("expires-in", imsemu.DefaultExpiresIn, "token lifetime, reported in whole seconds")
	latency := fs.Duration("latency", 0, "delay before every answer on -addr")
	orgID := fs.String("org-id", imsemu.DefaultOrgID, "organization ID in I/O Management API paths")
	credentialID := fs.String("credential-id", imsemu.DefaultCredentialID, "credential ID in I/O Management API paths")
	tlsCert := fs.String("tls-cert", "", "PEM certificate: serve HTTPS on -addr (needs -tls-key)")
	tlsKey := fs.String("tls-key", "", "PEM private key for -tls-cert")
	quiet := fs.Bool("quiet", false, "do not log requests on -addr to stderr")
	var rateLimit rateLimitFlag
	fs.Var(&rateLimit, "rate-limit", "per-client limit on token requests: at most N in any window of length PER (`N/PER`, e.g. 10/1m, 5/30s, 100/h); 429 beyond (default off)")
	var retryAfter retryAfterFlag
	fs.Var(&retryAfter, "rate-limit-retry-after", "Retry-After of the rate limit's 429: auto (seconds until the window has room), none (no header, which Adobe does not guarantee either), or a fixed `duration` such as 30s (default auto)")
	wrongSecretStatus := fs.Int("wrong-secret-status", 400, "HTTP status of invalid_client for a wrong client_secret: 400 or 401 (Adobe documents both)")
	faultJSON := fs.String("fault", "", `inject a failure from the start, as the control API's fault JSON, e.g. '{"endpoint":"token","kind":"status","status":503,"times":2}'; endpoint is token, invalidate, validate, management, api, or "" for all but api`)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if *clientSecret == "" {
		*clientSecret = os.Getenv(envClientSecret)
	}
	if *clientID == "" || *clientSecret == "" {
		return errors.New("-client-id and -client-secret (or " + envClientSecret + ") are required")
	}
	if (*tlsCert == "") != (*tlsKey == "") {
		return errors.New("-tls-cert and -tls-key go together")
	}
	if *wrongSecretStatus != http.StatusBadRequest && *wrongSecretStatus != http.StatusUnauthorized {
		return fmt.Errorf("-wrong-secret-status %d: want 400 or 401", *wrongSecretStatus)
	}
	var fault *imsemu.Fault
	if *faultJSON != "" {
		fault = &imsemu.Fault{}
		dec := json.NewDecoder(strings.NewReader(*faultJSON))
		dec.DisallowUnknownFields()
		if err := dec.Decode(fault); err != nil {
			return fmt.Errorf("-fault: %w", err)
		}
		if err := fault.Validate(); err != nil {
			return fmt.Errorf("-fault: %w", err)
		}
	}

	emu := imsemu.New(imsemu.Config{
		ClientID:     *clientID,
		ClientSecret: *clientSecret,
		Scopes:       splitScopes(*scopes),
		ExpiresIn:    *expiresIn,
		OrgID:        *orgID,
		CredentialID: *credentialID,
	})
	emu.SetLatency(*latency)
	emu.SetFault(fault)
	emu.SetRateLimit(rateLimit.n, rateLimit.per, retryAfter.d)
	if err := emu.SetWrongSecretStatus(*wrongSecretStatus); err != nil {
		return err
	}

	ims := &imsListener{handler: emu, errc: make(chan error, 1)}
	if !*quiet {
		ims.handler = logRequests(emu, log.New(os.Stderr, "ims-emulator: ", log.LstdFlags))
	}
	scheme := "http"
	if *tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(*tlsCert, *tlsKey)
		if err != nil {
			return err
		}
		ims.tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		scheme = "https"
	}
	ims.addr = *addr
	if err := ims.up(); err != nil {
		return err
	}
	defer ims.down()
	imsAddr := ims.addr // resolved; read before the control API can touch it

	controlLn, err := net.Listen("tcp", *controlAddr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/", emu.ControlHandler())
	mux.HandleFunc("GET /down", ims.handleGetDown)
	mux.HandleFunc("POST /down", ims.handleDown)
	control := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	controlErr := make(chan error, 1)
	go func() { controlErr <- control.Serve(controlLn) }()
	defer control.Close() //nolint:errcheck // shutting down; the control server's own failure already came through controlErr

	fmt.Fprintf(stdout, "ims-emulator listening on %s://%s (control http://%s)\n", scheme, imsAddr, controlLn.Addr()) //nolint:errcheck // startup banner; with stdout gone there is no one to tell

	select {
	case <-ctx.Done():
		return nil
	case err := <-controlErr:
		return fmt.Errorf("control listener: %w", err)
	case err := <-ims.errc:
		return fmt.Errorf("IMS listener: %w", err)
	}
}

// rateLimitFlag is -rate-limit: N/PER, where PER is a Go duration ("1m", "30s") or a
// bare unit ("m" for "1m"); "off" or "0" means no limit.
type rateLimitFlag struct {
	n   int
	per time.Duration
}

func (f *rateLimitFlag) String() string {
	if f == nil || f.n <= 0 {
		return "off"
	}
	return fmt.Sprintf("%d/%s", f.n, f.per)
}

func (f *rateLimitFlag) Set(s string) error {
	if s == "off" || s == "0" {
		*f = rateLimitFlag{}
		return nil
	}
	count, window, ok := strings.Cut(s, "/")
	n, err := strconv.Atoi(count)
	if !ok || err != nil || n <= 0 {
		return errors.New("want N/PER with N > 0, e.g. 10/1m, or off")
	}
	per, err := time.ParseDuration(window)
	if err != nil {
		per, err = time.ParseDuration("1" + window) // "10/m"
	}
	if err != nil || per <= 0 {
		return fmt.Errorf("window %q: want a positive duration such as 1m or 30s", window)
	}
	*f = rateLimitFlag{n: n, per: per}
	return nil
}

// retryAfterFlag is -rate-limit-retry-after: auto, none or a positive duration.
type retryAfterFlag struct{ d time.Duration }

func (f *retryAfterFlag) String() string {
	switch {
	case f == nil || f.d == 0:
		return "auto"
	case f.d < 0:
		return "none"
	}
	return f.d.String()
}

func (f *retryAfterFlag) Set(s string) error {
	switch s {
	case "auto":
		f.d = 0
		return nil
	case "none":
		f.d = imsemu.NoRetryAfter
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return errors.New("want auto, none or a positive duration such as 30s")
	}
	f.d = d
	return nil
}

func splitScopes(s string) []string {
	var out []string
	for _, scope := range strings.Split(s, ",") {
		if scope = strings.TrimSpace(scope); scope != "" {
			out = append(out, scope)
		}
	}
	return out
}

// imsListener serves the IMS surface and can be taken down and brought back on the same
// address, so that tests see "connection refused" rather than an HTTP error.
type imsListener struct {
	handler   http.Handler
	tlsConfig *tls.Config
	errc      chan error // a Serve failure other than being closed

	mu   sync.Mutex
	addr string       // after the first up, the resolved address, so port 0 is reused
	srv  *http.Server // nil while down
}

func (l *imsListener) up() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.srv != nil {
		return nil
	}
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		return err
	}
	l.addr = ln.Addr().String()
	if l.tlsConfig != nil {
		ln = tls.NewListener(ln, l.tlsConfig)
	}
	srv := &http.Server{Handler: l.handler, ReadHeaderTimeout: 10 * time.Second}
	l.srv = srv
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			select {
			case l.errc <- err:
			default:
			}
		}
	}()
	return nil
}

// down closes the listener and every connection, in-flight requests included: the
// listener is closed when down returns.
func (l *imsListener) down() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.srv != nil {
		_ = l.srv.Close()
		l.srv = nil
	}
}

func (l *imsListener) isDown() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.srv == nil
}

func (l *imsListener) handleGetDown(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]bool{"down": l.isDown()})
}

func (l *imsListener) handleDown(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Down *bool `json:"down"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil || body.Down == nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": `want {"down":true} or {"down":false}`})
		return
	}
	if *body.Down {
		l.down()
	} else if err := l.up(); err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "re-opening the IMS listener: " + err.Error()})
		return
	}
	l.handleGetDown(w, r)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// logRequests logs method, path, status and x-debug-id: never the query string, the
// body or headers, which carry the client secret and tokens.
func logRequests(next http.Handler, logger *log.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			status := "no answer"
			if sw.status != 0 {
				status = fmt.Sprint(sw.status)
			}
			logger.Printf("%s %s -> %s (x-debug-id %s)", r.Method, r.URL.Path, status, w.Header().Get("X-Debug-Id"))
		}()
		next.ServeHTTP(sw, r)
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Hijack for the "drop" fault.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
