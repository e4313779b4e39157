package ims

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"unicode"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/imsgate"
	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/redact"
)

// Error is a failed call to Adobe IMS or to the Adobe I/O Management API.
// Its text is written for the operator: what came back, and what to check.
// It never holds the client secret, an access token or a response body.
type Error struct {
	Op          string // as in Attempt.Op
	StatusCode  int    // 0 when no HTTP response
	Code        string // IMS `error` (or Adobe I/O `error_code`)
	Description string // IMS `error_description` (or Adobe I/O `message`)
	DebugID     string // x-debug-id
	Hint        string // what the operator should check, in plain words
	Err         error  // underlying cause (network, TLS, decode); never holds secrets
	Attempts    int    // HTTP attempts made; 0 when none was

	// redact holds the secrets of the call, scrubbed from the text as a last
	// line of defence should anything upstream ever echo them.
	redact []string
}

func (e *Error) Error() string {
	var head, parts []string
	if e.StatusCode != 0 {
		head = append(head, fmt.Sprintf("HTTP %d", e.StatusCode))
	}
	if e.Code != "" {
		head = append(head, e.Code)
	}
	if len(head) > 0 {
		parts = append(parts, strings.Join(head, " "))
	}
	if e.Description != "" {
		parts = append(parts, e.Description)
	}
	if e.Err != nil {
		parts = append(parts, e.Err.Error())
	}
	msg := opTitle(e.Op) + ": " + strings.Join(parts, ": ")
	if e.Attempts > 1 {
		msg += fmt.Sprintf(" (after %d attempts)", e.Attempts)
	}
	if e.DebugID != "" {
		msg += fmt.Sprintf(" (x-debug-id %s)", e.DebugID)
	}
	if e.Hint != "" {
		msg += ": " + e.Hint
	}
	return scrub(msg, e.redact)
}

func (e *Error) Unwrap() error { return e.Err }

// Format prints the text Error returns, which is scrubbed of the call's
// secrets, with any verb; %#v prints GoString. Without it fmt would print the
// fields, the secrets kept for scrubbing among them, for %#v and for a verb
// that does not apply to an error, such as %d.
func (e Error) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = io.WriteString(f, e.GoString()) // a fmt.State write has no one to report to
		return
	}
	_, _ = fmt.Fprintf(f, fmt.FormatString(f, verb), e.Error())
}

// GoString prints the fields, with the secrets kept for scrubbing replaced by
// redact.Marker and Err by its scrubbed text.
func (e Error) GoString() string {
	v := redactedError{
		Op: e.Op, StatusCode: e.StatusCode, Code: e.Code, Description: e.Description,
		DebugID: e.DebugID, Hint: e.Hint, Attempts: e.Attempts,
	}
	if e.Err != nil {
		v.Err = scrub(e.Err.Error(), e.redact)
	}
	if len(e.redact) > 0 {
		v.Redact = redact.Marker
	}
	return scrub(fmt.Sprintf("%#v", v), e.redact)
}

// redactedError is what GoString shows of an Error.
type redactedError struct {
	Op          string
	StatusCode  int
	Code        string
	Description string
	DebugID     string
	Hint        string
	Err         string
	Attempts    int
	Redact      string
}

// Retryable reports whether the same request may succeed later: throttling,
// server errors, network failures and requests cancelled by their caller.
// IMS refusals, 501 Not Implemented, unusable responses and certificate
// errors will not fix themselves.
func (e *Error) Retryable() bool {
	switch {
	case e.StatusCode == http.StatusTooManyRequests:
		return true
	case e.StatusCode >= 500:
		return e.StatusCode != http.StatusNotImplemented
	case e.StatusCode != 0 || e.Err == nil:
		return false
	}
	return isNetworkError(e.Err)
}

// isNetworkError tells a failure on the way to the server, or a request cut
// short by its caller, from one that happened before any request was made
// or that trying again cannot fix.
func isNetworkError(err error) bool {
	var local *localError
	return !errors.As(err, &local) && !isCertError(err)
}

// localError is a failure of ours (bad input, unreadable response), never
// worth retrying.
type localError struct{ msg string }

func (l *localError) Error() string { return l.msg }

func localErrorf(format string, args ...any) error {
	return &localError{msg: fmt.Sprintf(format, args...)}
}

func isCertError(err error) bool {
	var (
		verify   *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
	)
	return errors.As(err, &verify) || errors.As(err, &unknown) ||
		errors.As(err, &hostname) || errors.As(err, &invalid)
}

func opTitle(op string) string {
	if isManagementOp(op) {
		return "adobe i/o management " + op + " request"
	}
	return "adobe ims " + op + " request"
}

func isManagementOp(op string) bool {
	return op == OpListSecrets || op == OpCreateSecret || op == OpDeleteSecret
}

// hint says, in the operator's words, what to look at for e.
func hint(e *Error) string {
	service, urlField := "Adobe IMS", "ims_url"
	if isManagementOp(e.Op) {
		service, urlField = "the Adobe I/O Management API", "io_management_url"
	}
	var (
		h         string
		throttled *imsgate.ThrottledError
		busy      *imsgate.BusyError
	)
	switch {
	case errors.As(e.Err, &throttled):
		h = "no request for this credential leaves the plugin until then; tokens are cached and reused, so lower the use of dedicated-mode roles"
	case errors.As(e.Err, &busy):
		h = "reads wait for a slot within their own time limit: raise max_concurrent_ims_requests if they often run out of time"
	case e.StatusCode == 0 && e.Err != nil && isCertError(e.Err):
		h = fmt.Sprintf("the TLS certificate of %s is not trusted: check %s, and if an HTTPS proxy inspects traffic, add its CA to the system trust store", service, urlField)
	case e.StatusCode == 0 && e.Err != nil && (!isNetworkError(e.Err) || errors.Is(e.Err, context.Canceled)):
		return "" // nothing upstream to check
	case e.StatusCode == 0:
		h = fmt.Sprintf("%s could not be reached or did not answer in time: retry later; check %s, network access and the HTTPS_PROXY and NO_PROXY environment variables of the Vault server", service, urlField)
	case e.StatusCode == http.StatusTooManyRequests:
		h = fmt.Sprintf("%s is throttling this client: tokens are cached and reused, so lower the use of dedicated-mode roles or wait before retrying", service)
	case e.StatusCode == http.StatusNotImplemented:
		// Not retried: the server does not support the request at all.
		h = fmt.Sprintf("%s does not support this request: check %s", service, urlField)
	case e.StatusCode >= 500:
		h = fmt.Sprintf("%s is unavailable: retry later", service)
	case e.StatusCode >= 300 && e.StatusCode < 400:
		h = fmt.Sprintf("%s answered with a redirect, which is not followed: check %s", service, urlField)
	case e.Code == "invalid_client":
		h = "check client_id and client_secret in the plugin config, and that the credential still exists in the Adobe Developer Console"
	case e.Code == "invalid_scope":
		h = "request only scopes that the Adobe Developer Console shows for this credential"
	case isManagementOp(e.Op) && (e.StatusCode == http.StatusUnauthorized || e.StatusCode == http.StatusForbidden):
		h = "the credential's Developer Console project needs the I/O Management API, and the token needs the management scopes (" + strings.Join(ManagementScopes(), ",") + ")"
	case isManagementOp(e.Op) && e.StatusCode == http.StatusNotFound:
		h = "check org_id and credential_id: both appear in the Developer Console URL of the credential"
	}
	if e.DebugID != "" {
		if h != "" {
			h += "; "
		}
		h += "if this persists, give the x-debug-id to Adobe support"
	}
	return h
}

// errorBody holds both error shapes: IMS's {"error","error_description"}
// and Adobe I/O's {"error_code","message"}.
type errorBody struct {
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
	ErrorCode        string `json:"error_code"`
	Message          string `json:"message"`
}

// parseErrorBody fills e from a failed response. Anything that is not one of
// the known JSON shapes is described by its content type, never echoed: an
// unknown body might hold a token. What is quoted is redacted of e's secrets.
func parseErrorBody(e *Error, header http.Header, body []byte) {
	var eb errorBody
	err := json.Unmarshal(body, &eb)
	var typeErr *json.UnmarshalTypeError
	if err == nil || errors.As(err, &typeErr) {
		// JSON without the fields leaves the status to speak for itself.
		e.Code = quote(firstOf(eb.Error, eb.ErrorCode), maxCodeLen, e.redact)
		e.Description = quote(firstOf(eb.ErrorDescription, eb.Message), maxDescriptionLen, e.redact)
		return
	}
	if len(body) > 0 {
		e.Err = localErrorf("unexpected response: %s", describeContent(header.Get("Content-Type"), len(body), e.redact))
	}
}

func firstOf(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// describeContent names what came back without showing it. The content
// type is redacted before it is parsed: parsing lowercases it, and a
// lowercased secret no longer matches the secret.
func describeContent(contentType string, n int, secrets []string) string {
	shown := quote(contentType, maxContentTypeLen, secrets)
	media, _, err := mime.ParseMediaType(shown)
	switch {
	case n == 0:
		return "an empty body"
	case contentType == "":
		return "a body without Content-Type"
	case err != nil || shown != strings.TrimSpace(contentType):
		return fmt.Sprintf("a body with Content-Type %q", shown)
	case media == "text/html":
		return "an HTML page (text/html)"
	}
	return "a body of type " + media
}

// How much of each piece of server-supplied text is quoted, in bytes.
const (
	maxCodeLen        = 100
	maxDescriptionLen = 300
	maxDebugIDLen     = 100
	maxContentTypeLen = 60
	maxTimestampLen   = 40
	maxFieldLen       = 100
)

// redacted stands in for a secret, or part of one, taken out of text.
const redacted = redact.Marker

// minRedactLen keeps scrubbing from mangling text around trivially short
// values, which cannot be real secrets or tokens. It is also the shortest
// part of a secret that quote redacts.
const minRedactLen = 6

// quote makes server-supplied text safe to put in one line of an error or
// a log, and at most about max bytes long. Redaction comes before the cut:
// the text is redacted of the secrets while they are whole, so a cut cannot
// leave the start of one behind. Any run of minRedactLen or more bytes that
// also occurs in a secret is redacted too, so that a server quoting part of
// a secret, or the end of one, gives nothing away. A redaction that
// straddles the cut is kept whole, so the result may exceed max by
// len(redacted); "..." marks a cut.
func quote(s string, max int, secrets []string) string {
	// Mapping first keeps byte offsets meaningful for the cut (it also
	// turns invalid UTF-8 into U+FFFD); secrets are mapped alike.
	s = strings.TrimSpace(strings.Map(controlToSpace, s))
	cut := len(s) > max
	// Only what can be kept needs redacting: the bytes before the cut, and
	// enough after it to recognise a run that starts before it.
	if window := max + minRedactLen; len(s) > window {
		s = s[:window]
	}
	hidden := secretRuns(s, secrets)
	if hidden == nil {
		out := s[:min(len(s), max)]
		if cut {
			out = strings.ToValidUTF8(out, "") + "..." // the cut may split a rune
		}
		return out
	}
	var b strings.Builder
	for i := 0; i < len(s) && i < max; i++ {
		if !hidden[i] {
			b.WriteByte(s[i])
			continue
		}
		b.WriteString(redacted)
		for i+1 < len(s) && hidden[i+1] {
			i++
		}
	}
	out := strings.ToValidUTF8(b.String(), "") // a cut or a redaction may split a rune
	if cut {
		out += "..."
	}
	return out
}

func controlToSpace(r rune) rune {
	if unicode.IsControl(r) {
		return ' '
	}
	return r
}

// secretRuns marks the bytes of s that belong to a run of minRedactLen or
// more bytes also found in one of the secrets (a whole secret is such a
// run). It returns nil when nothing is marked.
func secretRuns(s string, secrets []string) []bool {
	var hidden []bool
	for _, v := range secrets {
		if len(v) < minRedactLen {
			continue
		}
		v = strings.Map(controlToSpace, v)
		for i := 0; i+minRedactLen <= len(s); i++ {
			if strings.Contains(v, s[i:i+minRedactLen]) {
				if hidden == nil {
					hidden = make([]bool, len(s))
				}
				for j := i; j < i+minRedactLen; j++ {
					hidden[j] = true
				}
			}
		}
	}
	return hidden
}

func scrub(s string, secrets []string) string {
	for _, v := range secrets {
		if len(v) >= minRedactLen {
			s = strings.ReplaceAll(s, v, redacted)
		}
	}
	return s
}

// scrubbedError stands in for an error whose text held a secret. It does not
// unwrap: the original text must not be reachable.
type scrubbedError struct{ msg string }

func (s *scrubbedError) Error() string { return s.msg }

func scrubErr(err error, secrets []string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if clean := scrub(msg, secrets); clean != msg {
		return &scrubbedError{msg: clean}
	}
	return err
}

// echoedStrings returns the strings a JSON object body holds under key, at
// the top level and, when list is not empty, in the objects of the array
// under list, matching keys regardless of case as Go's decoder does. An
// error about a response redacts them: a token or a secret a server echoes
// must not reach an error through some other field's description.
func echoedStrings(body []byte, key, list string) []string {
	var top map[string]any
	if json.Unmarshal(body, &top) != nil {
		return nil
	}
	var out []string
	collect := func(obj map[string]any) {
		for k, v := range obj {
			if s, ok := v.(string); ok && strings.EqualFold(k, key) {
				out = append(out, s)
			}
		}
	}
	collect(top)
	if list == "" {
		return out
	}
	for k, v := range top {
		if items, ok := v.([]any); ok && strings.EqualFold(k, list) {
			for _, item := range items {
				if obj, ok := item.(map[string]any); ok {
					collect(obj)
				}
			}
		}
	}
	return out
}
