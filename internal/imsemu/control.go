package imsemu

import (
	"encoding/json"
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
//	GET    /secrets                    -> []SecretInfo
//	GET    /secrets/accepted?secret=S  -> {"accepted":bool}
//	GET    /config                     -> client_id, org_id, credential_id, scopes, expires_in_seconds, latency_ms
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
	ClientID         string   `json:"client_id"`
	OrgID            string   `json:"org_id"`
	CredentialID     string   `json:"credential_id"`
	Scopes           []string `json:"scopes"`
	ExpiresInSeconds int64    `json:"expires_in_seconds"`
	LatencyMS        int64    `json:"latency_ms"`
}

func (e *Emulator) controlConfig() controlConfig {
	e.mu.Lock()
	defer e.mu.Unlock()
	return controlConfig{
		ClientID:         e.clientID,
		OrgID:            e.orgID,
		CredentialID:     e.credentialID,
		Scopes:           slices.Clone(e.scopes),
		ExpiresInSeconds: int64(e.expiresIn / time.Second),
		LatencyMS:        e.latency.Milliseconds(),
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
