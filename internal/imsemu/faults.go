package imsemu

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Fault kinds, as used by Fault.Kind.
const (
	// KindStatus answers Status (default 503) with an error body and, when set, Retry-After.
	KindStatus = "status"
	// KindHang never answers; the request ends when the client gives up.
	KindHang = "hang"
	// KindMalformedJSON answers 200 with a truncated JSON body.
	KindMalformedJSON = "malformed_json"
	// KindHTML answers Status (default 502) with a text/html page, as a proxy in front of IMS might.
	KindHTML = "html"
	// KindNoAccessToken answers 200 with a token response lacking access_token.
	KindNoAccessToken = "no_access_token"
	// KindExpiresIn answers 200 with a fresh token and expires_in set to the raw JSON ExpiresInRaw.
	KindExpiresIn = "expires_in"
	// KindDrop closes the connection without answering.
	KindDrop = "drop"
)

// Fault makes the emulator misbehave on purpose, before normal handling.
type Fault struct {
	// Endpoint is EndpointToken, EndpointInvalidate, EndpointValidate, EndpointManagement,
	// or EndpointAll ("") for all four; or EndpointAPI for the Adobe API stand-in, which
	// EndpointAll does not match. Unknown paths are never faulted.
	Endpoint string `json:"endpoint"`
	Kind     string `json:"kind"`
	// Status is the HTTP status for KindStatus (default 503) and KindHTML (default 502).
	Status int `json:"status,omitempty"`
	// ErrorCode is the `error` of the IMS error body (`error_code` of the gateway one, which
	// the management endpoint and the API stand-in answer with)
	// for KindStatus. Adobe documents no codes for 429 or 5xx, so the default is generic:
	// "temporarily_unavailable" for 429 and 503, "server_error" for other 5xx,
	// "invalid_request" otherwise.
	ErrorCode string `json:"error_code,omitempty"`
	// RetryAfter, when set, is sent as the Retry-After header (every kind that answers).
	RetryAfter string `json:"retry_after,omitempty"`
	// ExpiresInRaw is the raw JSON value of expires_in for KindExpiresIn, e.g. `0`, `-5`,
	// `"3600"` or `99999999999`.
	ExpiresInRaw string `json:"expires_in_raw,omitempty"`
	// Times applies the fault to the next Times matching requests, then clears it;
	// 0 keeps it until cleared.
	Times int `json:"times,omitempty"`
}

// Validate reports whether the fault makes sense.
func (f *Fault) Validate() error {
	switch f.Endpoint {
	case EndpointAll, EndpointToken, EndpointInvalidate, EndpointValidate, EndpointManagement:
	case EndpointAPI:
		if f.Kind == KindNoAccessToken || f.Kind == KindExpiresIn {
			return fmt.Errorf("kind %q shapes a token response; it does not apply to endpoint %q", f.Kind, f.Endpoint)
		}
	default:
		return fmt.Errorf("unknown endpoint %q", f.Endpoint)
	}
	switch f.Kind {
	case KindStatus, KindHang, KindMalformedJSON, KindHTML, KindNoAccessToken, KindDrop:
	case KindExpiresIn:
		if !json.Valid([]byte(f.ExpiresInRaw)) {
			return fmt.Errorf("expires_in_raw %q is not a JSON value", f.ExpiresInRaw)
		}
	default:
		return fmt.Errorf("unknown kind %q", f.Kind)
	}
	if f.Status != 0 && (f.Status < 100 || f.Status > 599) {
		return fmt.Errorf("status %d is not an HTTP status", f.Status)
	}
	if f.Times < 0 {
		return errors.New("times must not be negative")
	}
	return nil
}

// SetFault installs f (a copy of it), replacing any other; nil clears.
func (e *Emulator) SetFault(f *Fault) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if f == nil {
		e.fault = nil
		return
	}
	c := *f
	e.fault = &c
}

// Fault returns a copy of the installed fault, with Times counting what is left, or nil.
func (e *Emulator) Fault() *Fault {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.fault == nil {
		return nil
	}
	c := *e.fault
	return &c
}

// matches reports whether the fault applies to ep; EndpointAll spares the API stand-in.
func (f *Fault) matches(ep string) bool {
	return f.Endpoint == ep || (f.Endpoint == EndpointAll && ep != EndpointAPI)
}

// takeFault returns the fault to serve on ep, if any, counting it down.
func (e *Emulator) takeFault(ep string) *Fault {
	e.mu.Lock()
	defer e.mu.Unlock()
	f := e.fault
	if f == nil || !f.matches(ep) {
		return nil
	}
	served := *f
	if f.Times > 0 {
		f.Times--
		if f.Times == 0 {
			e.fault = nil
		}
	}
	e.stats.FaultsServed++
	return &served
}

func (e *Emulator) serveFault(w http.ResponseWriter, r *http.Request, ep string, f *Fault) {
	switch f.Kind {
	case KindHang:
		<-r.Context().Done()
		return
	case KindDrop:
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			// HTTP/2 or a recorder: abort the response, which resets the stream.
			panic(http.ErrAbortHandler)
		}
		_ = conn.Close()
		return
	}
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	switch f.Kind {
	case KindStatus:
		status := f.Status
		if status == 0 {
			status = http.StatusServiceUnavailable
		}
		code := f.ErrorCode
		if code == "" {
			code = defaultErrorCode(status)
		}
		desc := fmt.Sprintf("injected fault: HTTP %d", status)
		if ep == EndpointManagement || ep == EndpointAPI {
			writeGatewayError(w, status, code, desc)
		} else {
			writeJSON(w, status, imsError{Error: code, ErrorDescription: desc})
		}
	case KindMalformedJSON:
		w.Header().Set("Content-Type", contentTypeJSON)
		w.WriteHeader(http.StatusOK)
		if ep == EndpointAPI {
			_, _ = io.WriteString(w, `{"size":{"width":2048,"height":2048},"outputs":[{"seed":12`)
			return
		}
		_, _ = io.WriteString(w, `{"access_token":"eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJ0`)
	case KindHTML:
		status := f.Status
		if status == 0 {
			status = http.StatusBadGateway
		}
		text := fmt.Sprintf("%d %s", status, http.StatusText(status))
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(status)
		_, _ = fmt.Fprintf(w, "<html>\r\n<head><title>%s</title></head>\r\n<body>\r\n<center><h1>%s</h1></center>\r\n</body>\r\n</html>\r\n", text, text)
	case KindNoAccessToken:
		e.mu.Lock()
		secs := int64(e.expiresIn.Seconds())
		e.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]any{"token_type": "bearer", "expires_in": secs})
	case KindExpiresIn:
		e.serveExpiresIn(w, r, ep, f.ExpiresInRaw)
	default:
		writeJSON(w, http.StatusInternalServerError, imsError{Error: "server_error", ErrorDescription: "imsemu: unknown fault kind " + f.Kind})
	}
}

// serveExpiresIn answers with a real token but a raw expires_in. On the token endpoint
// the token is recorded as issued (with the requested scopes and the configured
// lifetime) so that it validates and can be invalidated; credentials are not checked,
// as the fault replaces normal handling.
func (e *Emulator) serveExpiresIn(w http.ResponseWriter, r *http.Request, ep, raw string) {
	var scopes []string
	if err := r.ParseForm(); err == nil && r.Form.Get("scope") != "" {
		scopes = strings.Split(r.Form.Get("scope"), ",")
	}
	e.mu.Lock()
	var rec *tokenRecord
	if ep == EndpointToken {
		rec = e.mintLocked(scopes, "")
	} else {
		rec = e.newTokenLocked(scopes, "")
	}
	e.mu.Unlock()
	token, _ := json.Marshal(rec.AccessToken)
	w.Header().Set("Content-Type", contentTypeJSON)
	w.WriteHeader(http.StatusOK)
	_, _ = fmt.Fprintf(w, `{"access_token":%s,"token_type":"bearer","expires_in":%s}`, token, raw)
}

// defaultErrorCode picks a generic IMS error code; Adobe documents none for these statuses.
func defaultErrorCode(status int) string {
	switch {
	case status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable:
		return "temporarily_unavailable"
	case status >= 500:
		return "server_error"
	}
	return "invalid_request"
}
