package imsemu

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"
)

// ControlHandler returns the JSON control API that end-to-end tests and the demo use to
// steer and observe the emulator. Serve it on a separate listener from ServeHTTP: it is
// not part of Adobe's surface.
//
//	GET    /stats                      -> Stats
//	POST   /stats/reset                -> 204
//	GET    /tokens                     -> []IssuedToken
//	GET    /tokens/valid?token=T       -> {"valid":bool}
//	GET    /fault                      -> Fault or null
//	POST   /fault     Fault            -> 204
//	DELETE /fault                      -> 204
//	POST   /expires_in {"seconds":N}   -> 204 (N > 0)
//	POST   /latency    {"ms":N}        -> 204 (N >= 0; 0 removes the delay)
//	GET    /rate_limit                 -> {"requests":N,"per_ms":M,"retry_after_seconds":S,"no_retry_after":B}
//	POST   /rate_limit {"requests":N,"per_ms":M[,"retry_after_seconds":S][,"no_retry_after":true]}
//	                                   -> 204: at most N token requests per client per M ms
//	                                      (sliding window, Config clock); 429 beyond. Retry-After is
//	                                      the seconds until the window has room, or S when S > 0, or
//	                                      absent with no_retry_after. N = 0 removes the limit. Every
//	                                      POST starts from an empty window. See SetRateLimit.
//	DELETE /rate_limit                 -> 204, no limit
//	POST   /wrong_secret_status {"status":400|401}
//	                                   -> 204: the status of invalid_client for a wrong client_secret
//	GET    /secrets                    -> []SecretInfo
//	GET    /secrets/accepted?secret=S  -> {"accepted":bool}
//	GET    /config                     -> client_id, org_id, credential_id, scopes, expires_in_seconds,
//	                                      latency_ms, wrong_secret_status, rate_limit
//
// Bad requests get 400 with {"error":"..."}.
func (e *Emulator) ControlHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, e.Stats())
	})
	mux.HandleFunc("POST /stats/reset", func(w http.ResponseWriter, r *http.Request) {
		e.ResetStats()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /tokens", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, e.Tokens())
	})
	mux.HandleFunc("GET /tokens/valid", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]bool{"valid": e.TokenValid(r.URL.Query().Get("token"))})
	})
	mux.HandleFunc("GET /fault", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, e.Fault())
	})
	mux.HandleFunc("POST /fault", func(w http.ResponseWriter, r *http.Request) {
		var f Fault
		if !decodeControl(w, r, &f) {
			return
		}
		if err := f.Validate(); err != nil {
			controlError(w, err.Error())
			return
		}
		e.SetFault(&f)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("DELETE /fault", func(w http.ResponseWriter, r *http.Request) {
		e.SetFault(nil)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /expires_in", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Seconds int64 `json:"seconds"`
		}
		if !decodeControl(w, r, &body) {
			return
		}
		if body.Seconds <= 0 {
			controlError(w, "seconds must be positive; use a fault of kind expires_in for odd values")
			return
		}
		e.SetExpiresIn(time.Duration(body.Seconds) * time.Second)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /latency", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			MS int64 `json:"ms"`
		}
		if !decodeControl(w, r, &body) {
			return
		}
		if body.MS < 0 {
			controlError(w, "ms must not be negative")
			return
		}
		e.SetLatency(time.Duration(body.MS) * time.Millisecond)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /rate_limit", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, rateLimitOf(e.RateLimit()))
	})
	mux.HandleFunc("POST /rate_limit", func(w http.ResponseWriter, r *http.Request) {
		var body rateLimitJSON
		if !decodeControl(w, r, &body) {
			return
		}
		if err := body.validate(); err != nil {
			controlError(w, err.Error())
			return
		}
		e.SetRateLimit(body.limit())
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("DELETE /rate_limit", func(w http.ResponseWriter, r *http.Request) {
		e.SetRateLimit(0, 0, 0)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /wrong_secret_status", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Status int `json:"status"`
		}
		if !decodeControl(w, r, &body) {
			return
		}
		if err := e.SetWrongSecretStatus(body.Status); err != nil {
			controlError(w, err.Error())
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /secrets", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, e.Secrets())
	})
	mux.HandleFunc("GET /secrets/accepted", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]bool{"accepted": e.SecretAccepted(r.URL.Query().Get("secret"))})
	})
	mux.HandleFunc("GET /config", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, e.controlConfig())
	})
	return mux
}

type controlConfig struct {
	ClientID          string        `json:"client_id"`
	OrgID             string        `json:"org_id"`
	CredentialID      string        `json:"credential_id"`
	Scopes            []string      `json:"scopes"`
	ExpiresInSeconds  int64         `json:"expires_in_seconds"`
	LatencyMS         int64         `json:"latency_ms"`
	WrongSecretStatus int           `json:"wrong_secret_status"`
	RateLimit         rateLimitJSON `json:"rate_limit"`
}

// rateLimitJSON is a RateLimit in the control API; Requests 0 means no limit.
type rateLimitJSON struct {
	Requests          int   `json:"requests"`
	PerMS             int64 `json:"per_ms"`
	RetryAfterSeconds int64 `json:"retry_after_seconds"`
	NoRetryAfter      bool  `json:"no_retry_after"`
}

func rateLimitOf(l RateLimit) rateLimitJSON {
	j := rateLimitJSON{Requests: l.Requests, PerMS: l.Per.Milliseconds()}
	switch {
	case l.RetryAfter < 0:
		j.NoRetryAfter = true
	case l.RetryAfter > 0:
		j.RetryAfterSeconds = int64(l.RetryAfter / time.Second)
	}
	return j
}

func (j rateLimitJSON) validate() error {
	switch {
	case j.Requests < 0:
		return errors.New("requests must not be negative; 0 removes the limit")
	case j.Requests > 0 && j.PerMS <= 0:
		return errors.New("per_ms must be positive")
	case j.RetryAfterSeconds < 0:
		return errors.New("retry_after_seconds must not be negative; 0 sends the computed wait")
	case j.NoRetryAfter && j.RetryAfterSeconds > 0:
		return errors.New("retry_after_seconds and no_retry_after exclude each other")
	}
	return nil
}

func (j rateLimitJSON) limit() (int, time.Duration, time.Duration) {
	retryAfter := time.Duration(j.RetryAfterSeconds) * time.Second
	if j.NoRetryAfter {
		retryAfter = NoRetryAfter
	}
	return j.Requests, time.Duration(j.PerMS) * time.Millisecond, retryAfter
}

func (e *Emulator) controlConfig() controlConfig {
	e.mu.Lock()
	defer e.mu.Unlock()
	return controlConfig{
		ClientID:          e.clientID,
		OrgID:             e.orgID,
		CredentialID:      e.credentialID,
		Scopes:            slices.Clone(e.scopes),
		ExpiresInSeconds:  int64(e.expiresIn / time.Second),
		LatencyMS:         e.latency.Milliseconds(),
		WrongSecretStatus: e.wrongSecretStatus,
		RateLimit:         rateLimitOf(e.rateLimit),
	}
}

// decodeControl reads one JSON object, refusing unknown fields so that a typo in a
// test's fault does not silently become a different fault.
func decodeControl(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		controlError(w, fmt.Sprintf("bad JSON body: %v", err))
		return false
	}
	return true
}

func controlError(w http.ResponseWriter, msg string) {
	writeJSON(w, http.StatusBadRequest, map[string]string{"error": msg})
}
