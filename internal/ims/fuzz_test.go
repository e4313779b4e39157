package ims

// Fuzz targets for what the client reads from the network and from the
// operator. Responses are served by an in-memory transport, with no retries
// and no waits, so that an iteration takes microseconds; the HTTP machinery
// itself is covered by the tests against httptest servers.
//
// Seeds and inputs may use placeholders: $SECRET for the client secret,
// $TOKEN for the bearer token passed to the call (or the access token IMS
// mints), $NEW for a secret value in a management response.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"
)

// Secrets for checking redaction. They share no 6 bytes with the package's
// own wording, so any 6 bytes of theirs in an error or a log are a leak.
const (
	leakSecret    = "p8e-Qz7Rw2Lp9Xv4Kt8Nm3sJ6"
	leakToken     = "eyJhbGci.Wq5Tz8Yx3Rv6.Pk2d"
	leakNewSecret = "p8e-Hb4Gf7Dc2Sa9Ze5Wx1Qv8"
)

var placeholders = strings.NewReplacer("$SECRET", leakSecret, "$TOKEN", leakToken, "$NEW", leakNewSecret)

func expand(s string) string { return placeholders.Replace(s) }

// assertNoLeak fails if s holds any minRedactLen consecutive bytes of one
// of the secrets.
func assertNoLeak(t *testing.T, what, s string, secrets ...string) {
	t.Helper()
	for _, secret := range secrets {
		for i := 0; i+minRedactLen <= len(secret); i++ {
			if frag := secret[i : i+minRedactLen]; strings.Contains(s, frag) {
				t.Fatalf("%s holds %q, part of the secret %q:\n%s", what, frag, secret, s)
			}
		}
	}
}

// assertQuoted checks a piece of server-supplied text as quote leaves it:
// one line of valid UTF-8, no longer than max plus a redaction marker and
// "...", and without the secrets.
func assertQuoted(t *testing.T, what, s string, max int, secrets ...string) {
	t.Helper()
	if len(s) > max+len(redacted)+len("...") {
		t.Fatalf("%s is %d bytes long, more than %d: %q", what, len(s), max, s)
	}
	if !utf8.ValidString(s) || strings.ContainsFunc(s, unicode.IsControl) {
		t.Fatalf("%s is not one line of valid UTF-8: %q", what, s)
	}
	assertNoLeak(t, what, s, secrets...)
}

// canned is an http.RoundTripper answering every request with one response.
type canned struct {
	status int
	header http.Header
	body   []byte
}

func newCanned(status uint16, contentType, debugID string, body []byte) *canned {
	c := &canned{status: 200 + int(status)%400, header: http.Header{}, body: body}
	if contentType != "" {
		c.header.Set("Content-Type", expand(contentType))
	}
	if debugID != "" {
		c.header.Set("x-debug-id", expand(debugID))
	}
	return c
}

func (c *canned) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
		_ = r.Body.Close()
	}
	return &http.Response{
		StatusCode: c.status, Status: strconv.Itoa(c.status) + " " + http.StatusText(c.status),
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: c.header.Clone(), Body: io.NopCloser(bytes.NewReader(c.body)), ContentLength: int64(len(c.body)),
		Request: r,
	}, nil
}

// fuzzOptions send through rt, once, and log everything to logs.
func fuzzOptions(rt http.RoundTripper, logs *bytes.Buffer) Options {
	return Options{
		HTTPClient: &http.Client{Transport: rt},
		RetryMax:   -1,
		Logger:     hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Trace}),
	}
}

// errorTexts returns every text of err an operator or a log could see.
func errorTexts(t *testing.T, err error) (*Error, map[string]string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("err = %#v, want an *Error", err)
	}
	texts := map[string]string{"Error()": err.Error(), "Code": e.Code, "Description": e.Description, "DebugID": e.DebugID, "Hint": e.Hint}
	if e.Err != nil {
		texts["Err"] = e.Err.Error()
	}
	return e, texts
}

// jsonStringsUnder returns the strings a JSON object body holds under a
// key equal to key regardless of case (Go's decoder matches keys so), at
// the top level and, when list is not empty, in the objects of the arrays
// under list.
func jsonStringsUnder(body []byte, key, list string) []string {
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
	for k, v := range top {
		if items, ok := v.([]any); ok && list != "" && strings.EqualFold(k, list) {
			for _, item := range items {
				if obj, ok := item.(map[string]any); ok {
					collect(obj)
				}
			}
		}
	}
	return out
}

// assertErrorLeaksNothing checks an error a decoder returned for body: no
// text of it (message, fields, formatting) holds any of always, nor echoed
// where the body carries it under key (in objects of the list named, if
// any), and what it quotes from the response is cut to the bounds.
func assertErrorLeaksNothing(t *testing.T, err error, body []byte, key, list, echoed string, always ...string) {
	t.Helper()
	leaks := always
	if slices.Contains(jsonStringsUnder(body, key, list), echoed) {
		leaks = append(slices.Clip(leaks), echoed)
	}
	e, texts := errorTexts(t, err)
	for what, s := range texts {
		assertNoLeak(t, what, s, leaks...)
	}
	assertQuoted(t, "Code", e.Code, maxCodeLen, leaks...)
	assertQuoted(t, "Description", e.Description, maxDescriptionLen, leaks...)
	assertQuoted(t, "DebugID", e.DebugID, maxDebugIDLen, leaks...)
}

// jsonStrings returns every string value and key in a JSON document.
func jsonStrings(body []byte) []string {
	var v any
	if json.Unmarshal(body, &v) != nil {
		return nil
	}
	var out []string
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case string:
			out = append(out, v)
		case []any:
			for _, x := range v {
				walk(x)
			}
		case map[string]any:
			for k, x := range v {
				out = append(out, k)
				walk(x)
			}
		}
	}
	walk(v)
	return out
}

const (
	ctJSON = "application/json;charset=utf-8"
	ctHTML = "text/html; charset=utf-8"
	ctForm = "application/x-www-form-urlencoded"
)

type responseSeed struct {
	status            uint16
	contentType, body string
}

// FuzzTokenResponse decodes token endpoint responses through Client.Token.
// A token is accepted only from a 2xx JSON body with an access_token and a
// whole, positive expires_in of at most 7 days; an error never holds the
// client secret, nor the access token of the body, however the body echoes
// them.
func FuzzTokenResponse(f *testing.F) {
	for _, s := range []responseSeed{
		{200, ctJSON, `{"access_token":"$TOKEN","token_type":"bearer","expires_in":86399}`},
		{200, "application/json", `{"access_token":"$TOKEN","expires_in":1}`},
		{200, ctJSON, `{"access_token":"$TOKEN","token_type":"bearer","expires_in":604800}`},
		{200, ctJSON, `{"access_token":"$TOKEN","token_type":"bearer","expires_in":604801}`},
		{200, ctJSON, `{"access_token":"$TOKEN","token_type":"bearer","expires_in":86399999}`}, // milliseconds, as /ims/exchange/jwt sent
		{200, ctJSON, `{"access_token":"$TOKEN","token_type":"bearer","expires_in":0}`},
		{200, ctJSON, `{"access_token":"$TOKEN","token_type":"bearer","expires_in":-86399}`},
		{200, ctJSON, `{"access_token":"$TOKEN","token_type":"bearer","expires_in":86399.5}`},
		{200, ctJSON, `{"access_token":"$TOKEN","token_type":"bearer","expires_in":1e300}`},
		{200, ctJSON, `{"access_token":"$TOKEN","token_type":"bearer","expires_in":"86399"}`},
		{200, ctJSON, `{"access_token":"$TOKEN","token_type":"bearer","expires_in":null}`},
		{200, ctJSON, `{"access_token":"$TOKEN","token_type":"bearer"}`},
		{200, ctJSON, `{"access_token":"$TOKEN","EXPIRES_IN":86399}`},
		{200, ctJSON, `{"ACCESS_TOKEN":"$TOKEN","expires_in":"soon"}`},
		{200, ctJSON, `{"access_token":"","expires_in":86399}`},
		{200, ctJSON, `{"access_token":"$TOKEN","expires_in":86399,"access_token":"x"}`},
		{200, ctForm, "access_token=$TOKEN&token_type=bearer&expires_in=86399"},
		{200, "text/plain", "access_token=$TOKEN&expires_in=86399"},
		{200, ctHTML, "<html><body>$TOKEN</body></html>"},
		{200, "", `{"access_token":"$TOKEN","expires_in":86399}`},
		{200, "application/$SECRET", `{"access_token":"$TOKEN","expires_in":"86399"}`},
		{400, ctJSON, `{"error":"invalid_client","error_description":"invalid client_secret parameter"}`},
		{401, ctJSON, `{"error":"invalid_client","error_description":"invalid client_secret parameter"}`},
		{400, ctJSON, `{"error":"invalid_scope","error_description":"invalid scope"}`},
		{400, ctJSON, `{"error":"invalid_client","error_description":"` + strings.Repeat("x", 290) + `$SECRET"}`},
		{400, ctJSON, `{"error":"invalid_client","error_description":"bad ` + leakSecret[:8] + `...","access_token":"$TOKEN"}`},
		{400, ctForm, "error=invalid_client&error_description=$SECRET"},
		{429, ctJSON, `{"error":"too_many_requests"}`},
		{503, ctHTML, "<html><body>Service Unavailable</body></html>"},
		{500, "", ""},
		{302, ctHTML, ""},
	} {
		f.Add(s.status, s.contentType, "dbg-4ae1", []byte(s.body))
	}
	f.Add(uint16(200), ctJSON, "$SECRET", []byte(`{"access_token":"$TOKEN","expires_in":86399}`))
	f.Add(uint16(400), ctJSON, strings.Repeat("d", 95)+"$SECRET", []byte(`{"error":"invalid_client"}`))

	creds := Credentials{ClientID: testClientID, ClientSecret: leakSecret}
	f.Fuzz(func(t *testing.T, status uint16, contentType, debugID string, body []byte) {
		if len(body) > maxBody {
			t.Skip("longer than the client reads")
		}
		body = []byte(expand(string(body)))
		rt := newCanned(status, contentType, debugID, body)
		var logs bytes.Buffer
		tok, err := NewClient("https://ims.example.com", creds, fuzzOptions(rt, &logs)).Token(context.Background(), []string{"openid", "AdobeID"})
		assertNoLeak(t, "log", logs.String(), leakSecret)

		if err != nil {
			assertErrorLeaksNothing(t, err, body, "access_token", "", leakToken, leakSecret)
			if e := (*Error)(nil); !errors.As(err, &e) || e.Op != OpToken || e.StatusCode != rt.status {
				t.Fatalf("error %#v for HTTP %d; want an *Error of op %q with that status", err, rt.status, OpToken)
			}
			return
		}

		if rt.status < 200 || rt.status > 299 {
			t.Fatalf("a token was accepted from HTTP %d", rt.status)
		}
		if tok.AccessToken == "" || tok.TokenType == "" {
			t.Fatalf("accepted token without a value or a type: %+v", tok)
		}
		if tok.ExpiresIn <= 0 || tok.ExpiresIn > maxExpiresIn || tok.ExpiresIn%time.Second != 0 {
			t.Fatalf("accepted expires_in of %s", tok.ExpiresIn)
		}
		// Checked apart from oauth2 and the client: the body is a JSON
		// object whose expires_in is the whole, positive number of seconds
		// the token was given.
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("accepted a body that is not a JSON object (%v): %q", err, body)
		}
		n, ok := m["expires_in"].(float64)
		if !ok || n <= 0 || n > (7*24*time.Hour).Seconds() || n != math.Trunc(n) || time.Duration(n)*time.Second != tok.ExpiresIn {
			t.Fatalf("accepted expires_in %v (%T) as %s", m["expires_in"], m["expires_in"], tok.ExpiresIn)
		}
		if media := strings.ToLower(rt.header.Get("Content-Type")); strings.HasPrefix(media, ctForm) || strings.HasPrefix(media, "text/plain") {
			t.Fatalf("accepted a token from a %q body", media)
		}
		assertQuoted(t, "DebugID", tok.DebugID, maxDebugIDLen, leakSecret)
	})
}

// FuzzListSecretsResponse decodes the I/O Management API's list of secrets
// through Management.ListSecrets. What it returns never holds a secret's
// value, and an error never holds the bearer token or a secret value the
// body sent.
func FuzzListSecretsResponse(f *testing.F) {
	if got, want := fieldNames(reflect.TypeFor[Secret]()), "UUID CreatedAt ExpiresAt LastUsedAt"; got != want {
		f.Fatalf("Secret has fields %s, want %s: a listed secret must have no room for a value", got, want)
	}
	for _, s := range []responseSeed{
		{200, ctJSON, `{"client_id":"test-client-id","client_secrets":[{"uuid":"11ede8ab6f1f4a1c9f6b3f2d1e0c9b8a","created_at":"1683005777000","expires_at":"PERMANENT","secret_usages":[{"last_used_at":"1683162010101","grant_type":"client_credentials"}]}]}`},
		{200, ctJSON, `{"client_id":"test-client-id","client_secrets":[{"uuid":"11ede8ab6f1f4a1c9f6b3f2d1e0c9b8a","created_at":"1683005777000","created_at_str":"2023-05-02T05:36:17.000Z","expires_at":"PERMANENT","expires_at_str":"PERMANENT","secret_usages":[]},{"uuid":"22fe","created_at":1683005777001,"expires_at":1714541777000,"secret_usages":null}]}`},
		{200, ctJSON, `{"client_secrets":[]}`},
		{200, ctJSON, `{"client_secrets":null}`},
		{200, ctJSON, `{"client_id":"x"}`},
		{200, ctJSON, `{"client_secrets":{"uuid":"a"}}`},
		{200, ctJSON, `{"client_secrets":[{"uuid":"a","created_at":"yesterday"}]}`},
		{200, ctJSON, `{"client_secrets":[{"uuid":"a","created_at":"$TOKEN"}]}`},
		{200, ctJSON, `{"client_secrets":[{"uuid":"a","client_secret":"$NEW","created_at":"` + strings.Repeat("1", 30) + `$NEW"}]}`},
		{200, ctJSON, `{"client_secrets":[{"uuid":"a","CLIENT_SECRET":"$NEW","expires_at":true}]}`},
		{200, ctJSON, `{"client_secrets":[`},
		{200, "text/plain", "not json"},
		{401, ctJSON, `{"error_code":"401013","message":"Oauth token is not valid"}`},
		{403, ctJSON, `{"error_code":"403003","message":"Api Key is invalid"}`},
		{404, ctJSON, `{"message":"not found"}`},
		{400, ctJSON, `{"message":"bad $TOKEN"}`},
		{400, ctJSON, `{"error_code":"400001","message":"` + strings.Repeat("x", 290) + `$TOKEN"}`},
		{429, ctJSON, `{"error_code":"429050","message":"Too many requests"}`},
		{502, ctHTML, "<html><body>Bad Gateway $TOKEN</body></html>"},
	} {
		f.Add(s.status, s.contentType, []byte(s.body))
	}

	f.Fuzz(func(t *testing.T, status uint16, contentType string, body []byte) {
		if len(body) > maxBody {
			t.Skip("longer than the client reads")
		}
		body = []byte(expand(string(body)))
		rt := newCanned(status, contentType, "dbg-1", body)
		var logs bytes.Buffer
		m := NewManagement("https://api.adobe.io", testClientID, fuzzOptions(rt, &logs))
		secrets, err := m.ListSecrets(context.Background(), leakToken, testOrg, testCredential)
		assertNoLeak(t, "log", logs.String(), leakToken)

		if err != nil {
			assertErrorLeaksNothing(t, err, body, "client_secret", "client_secrets", leakNewSecret, leakToken)
			return
		}

		if rt.status != http.StatusOK {
			t.Fatalf("a list was accepted from HTTP %d", rt.status)
		}
		if secrets == nil {
			t.Fatal("an accepted list is nil: it must not read as missing")
		}
		// A value the body sends only as a client_secret never reaches what
		// is returned.
		values := jsonStringsUnder(body, "client_secret", "client_secrets")
		all := jsonStrings(body)
		for _, v := range values {
			if len(v) < minRedactLen || countContaining(all, v) > 1 {
				continue
			}
			for _, s := range secrets {
				if strings.Contains(s.UUID, v) || strings.Contains(s.ExpiresAt, v) {
					t.Fatalf("listed secret %+v holds the value %q", s, v)
				}
			}
		}
	})
}

func fieldNames(t reflect.Type) string {
	var names []string
	for i := range t.NumField() {
		names = append(names, t.Field(i).Name)
	}
	return strings.Join(names, " ")
}

// countContaining counts the strings of all that contain v.
func countContaining(all []string, v string) int {
	n := 0
	for _, s := range all {
		if strings.Contains(s, v) {
			n++
		}
	}
	return n
}

// FuzzCreateSecretResponse decodes the I/O Management API's new secret
// through Management.CreateSecret. Success needs a uuid and a value; an
// error never holds the bearer token or the new secret's value.
func FuzzCreateSecretResponse(f *testing.F) {
	for _, s := range []responseSeed{
		{201, ctJSON, `{"client_secret":"$NEW","uuid":"11ede8ab6f1f4a1c9f6b3f2d1e0c9b8a","created_at":"1683005777000","expires_at":"PERMANENT","secret_usages":null}`},
		{200, ctJSON, `{"client_secret":"$NEW","uuid":"11ede8ab6f1f4a1c9f6b3f2d1e0c9b8a","created_at":1683005777000,"expires_at":"PERMANENT"}`},
		{201, ctJSON, `{"client_secret":"$NEW","created_at":"1683005777000"}`},
		{201, ctJSON, `{"uuid":"11ede8ab","created_at":"1683005777000"}`},
		{201, ctJSON, `{"client_secret":"$NEW","uuid":"11ede8ab","created_at":"` + strings.Repeat("1", 30) + `$NEW"}`},
		{201, ctJSON, `{"uuid":"11ede8ab","created_at":"$NEW","client_secret":"$NEW"}`},
		{201, ctJSON, `{"client_secret":"$NEW","uuid":11}`},
		{201, ctJSON, `{"Client_Secret":"$NEW","uuid":"11ede8ab","expires_at":{}}`},
		{201, ctJSON, `{"client_secret":"$NEW",`},
		{201, ctHTML, "<html>$NEW</html>"},
		{400, ctJSON, `{"error_code":"400001","message":"a credential has at most 2 client secrets"}`},
		{401, ctJSON, `{"error_code":"401013","message":"Oauth token is not valid $TOKEN"}`},
		{409, ctJSON, `{"message":"conflict","client_secret":"$NEW"}`},
		{500, ctHTML, "<html>Internal Server Error</html>"},
	} {
		f.Add(s.status, s.contentType, []byte(s.body))
	}

	f.Fuzz(func(t *testing.T, status uint16, contentType string, body []byte) {
		if len(body) > maxBody {
			t.Skip("longer than the client reads")
		}
		body = []byte(expand(string(body)))
		rt := newCanned(status, contentType, "dbg-1", body)
		var logs bytes.Buffer
		m := NewManagement("https://api.adobe.io", testClientID, fuzzOptions(rt, &logs))
		created, err := m.CreateSecret(context.Background(), leakToken, testOrg, testCredential)
		assertNoLeak(t, "log", logs.String(), leakToken, leakNewSecret)

		if err != nil {
			assertErrorLeaksNothing(t, err, body, "client_secret", "", leakNewSecret, leakToken)
			return
		}

		if rt.status != http.StatusOK && rt.status != http.StatusCreated {
			t.Fatalf("a new secret was accepted from HTTP %d", rt.status)
		}
		if created.UUID == "" || created.ClientSecret == "" {
			t.Fatalf("accepted a new secret without a uuid or a value: %+v", created)
		}
	})
}

// FuzzParseErrorBody parses error bodies of both shapes. What it quotes is
// redacted and short; a body of another shape is described by its content
// type and length alone, never echoed.
func FuzzParseErrorBody(f *testing.F) {
	for _, s := range []responseSeed{
		{400, ctJSON, `{"error":"invalid_client","error_description":"invalid client_secret parameter"}`},
		{400, ctJSON, `{"error":"invalid_scope","error_description":"invalid scope"}`},
		{401, ctJSON, `{"error_code":"401013","message":"Oauth token is not valid"}`},
		{403, ctJSON, `{"error_code":"403003","message":"Api Key is invalid"}`},
		{400, ctJSON, `{"error":"invalid_client","error_description":"` + strings.Repeat("x", 290) + `$SECRET"}`},
		{400, ctJSON, `{"error":"` + strings.Repeat("x", 95) + `$TOKEN","message":"$SECRET"}`},
		{400, ctJSON, `{"error":"invalid_client","error_description":"bad\u0000\n\t$SECRET"}`},
		{400, ctJSON, `{"error":42,"error_description":["x"]}`},
		{400, ctJSON, `{"error":"é` + strings.Repeat("é", 60) + `"}`},
		{400, ctJSON, `null`},
		{400, ctJSON, `[]`},
		{502, ctHTML, "<html><body>Bad Gateway $TOKEN</body></html>"},
		{502, "text/$SECRET", "<p>$SECRET</p>"},
		{502, "", "$TOKEN"},
		{502, "application/json; charset=" + strings.Repeat("x", 50) + "$SECRET", "{"},
		{500, "", ""},
	} {
		f.Add(s.contentType, []byte(s.body))
	}

	secrets := []string{leakSecret, leakToken}
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		if len(body) > maxBody {
			t.Skip("longer than the client reads")
		}
		contentType, body = expand(contentType), []byte(expand(string(body)))
		e := &Error{Op: OpToken, StatusCode: http.StatusBadRequest, redact: secrets}
		header := http.Header{"Content-Type": {contentType}}
		parseErrorBody(e, header, body)

		assertQuoted(t, "Code", e.Code, maxCodeLen, secrets...)
		assertQuoted(t, "Description", e.Description, maxDescriptionLen, secrets...)
		assertNoLeak(t, "Error()", e.Error(), secrets...)

		var eb errorBody
		err := json.Unmarshal(body, &eb)
		var typeErr *json.UnmarshalTypeError
		if err == nil || errors.As(err, &typeErr) {
			if e.Err != nil {
				t.Fatalf("JSON body gave Err %v", e.Err)
			}
			// Text with nothing to clean is quoted as sent.
			for _, f := range []struct {
				what, got, sent string
				max             int
			}{{"Code", e.Code, firstOf(eb.Error, eb.ErrorCode), maxCodeLen}, {"Description", e.Description, firstOf(eb.ErrorDescription, eb.Message), maxDescriptionLen}} {
				plain := len(f.sent) <= f.max && utf8.ValidString(f.sent) && f.sent == strings.TrimSpace(f.sent) &&
					!strings.ContainsFunc(f.sent, unicode.IsControl) && secretRuns(f.sent, secrets) == nil
				if plain && f.got != f.sent {
					t.Fatalf("%s = %q, want %q as sent", f.what, f.got, f.sent)
				}
			}
			return
		}
		// Another shape: described, never echoed.
		if e.Code != "" || e.Description != "" {
			t.Fatalf("a body that is not JSON gave Code %q, Description %q", e.Code, e.Description)
		}
		if len(body) == 0 {
			if e.Err != nil {
				t.Fatalf("an empty body gave Err %v", e.Err)
			}
			return
		}
		if e.Err == nil {
			t.Fatal("a body of unknown shape was not described")
		}
		// The description depends on the content type and the length only.
		want := "unexpected response: " + describeContent(contentType, len(body), secrets)
		if got := e.Err.Error(); got != want {
			t.Fatalf("Err = %q, want %q", got, want)
		}
		if strings.ContainsFunc(want, unicode.IsControl) {
			t.Fatalf("Err is not one line: %q", want)
		}
	})
}

// FuzzParseBaseURL validates operator-supplied base URLs. An accepted URL
// is https, or http to a loopback host, with no user info, query, fragment
// or path, and is stable: parsing it again gives it back. An error never
// shows user info, a query or a fragment, which may hold secrets.
func FuzzParseBaseURL(f *testing.F) {
	for _, s := range []string{
		"https://ims-na1.adobelogin.com",
		"https://ims-na1-stg1.adobelogin.com/",
		"https://api.adobe.io",
		"  HTTPS://IMS-NA1.adobelogin.com:443  ",
		"http://127.0.0.1:8200",
		"http://localhost:9000/",
		"http://[::1]:1",
		"http://[::ffff:127.0.0.1]",
		"http://ims.example.com",
		"http://10.0.0.1",
		"ftp://ims.example.com",
		"https://user:hunter2@ims.example.com",
		"https://ims.example.com?x=1",
		"https://ims.example.com/?",
		"https://ims.example.com#frag",
		"https://ims.example.com/ims/token/v3",
		"ims.example.com",
		"https://",
		"https://:443",
		"https://ims.example.com:99999999",
		"https://ims.example.com:x",
		"https://user:hunter2@ims example.com",
		"https://%41.example.com",
		"https://ims.example.com.",
		"",
	} {
		f.Add(s)
	}

	const secret = "Zq7Xw3Kd9LsV" // shares no 6 bytes with the messages
	f.Fuzz(func(t *testing.T, raw string) {
		got, err := ParseBaseURL("ims_url", raw)
		if err != nil {
			if got != "" {
				t.Fatalf("ParseBaseURL(%q) = %q and an error", raw, got)
			}
		} else {
			checkBaseURL(t, raw, got)
		}

		// The same URL carrying a secret in the user info, the query or the
		// fragment is refused, without showing it.
		if strings.Contains(raw, secret[:minRedactLen]) {
			return
		}
		for _, variant := range withSecret(raw, secret) {
			got, err := ParseBaseURL("ims_url", variant)
			if err == nil {
				t.Fatalf("ParseBaseURL(%q) = %q, want it refused", variant, got)
			}
			assertNoLeak(t, "error for "+strconv.Quote(variant), err.Error(), secret)
		}
	})
}

// withSecret puts secret in the user info, the query and the fragment of raw.
func withSecret(raw, secret string) []string {
	out := []string{
		raw + "?client_secret=" + secret,
		raw + "#" + secret,
		raw + "/?client_secret=" + secret,
	}
	if i := strings.Index(raw, "://"); i >= 0 {
		out = append(out,
			raw[:i+3]+"user:"+secret+"@"+raw[i+3:],
			raw[:i+3]+secret+"@"+raw[i+3:])
	}
	return out
}

func checkBaseURL(t *testing.T, raw, got string) {
	t.Helper()
	u, err := url.Parse(got)
	if err != nil {
		t.Fatalf("ParseBaseURL(%q) = %q, which does not parse: %v", raw, got, err)
	}
	switch {
	case u.Scheme != "https" && u.Scheme != "http":
		t.Fatalf("ParseBaseURL(%q) = %q: scheme %q", raw, got, u.Scheme)
	case u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.Path != "" || u.Opaque != "":
		t.Fatalf("ParseBaseURL(%q) = %q: more than scheme and host", raw, got)
	case u.Hostname() == "" || strings.ContainsFunc(got, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }):
		t.Fatalf("ParseBaseURL(%q) = %q: no host, or spaces", raw, got)
	case got != strings.ToLower(got):
		t.Fatalf("ParseBaseURL(%q) = %q: not lower case", raw, got)
	}
	if u.Scheme == "http" {
		host := u.Hostname()
		ip := net.ParseIP(host)
		if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			t.Fatalf("ParseBaseURL(%q) = %q: plain http to a host that is not loopback", raw, got)
		}
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			t.Fatalf("ParseBaseURL(%q) = %q: port %q", raw, got, p)
		}
	}
	again, err := ParseBaseURL("ims_url", got)
	if err != nil || again != got {
		t.Fatalf("ParseBaseURL(%q) = %q, but ParseBaseURL(%q) = %q, %v", raw, got, got, again, err)
	}
	// The client appends the documented paths: requests go to that host,
	// at that path.
	req, err := http.NewRequest(http.MethodPost, got+"/ims/token/v3", nil)
	if err != nil {
		t.Fatalf("ParseBaseURL(%q) = %q, which cannot make a request: %v", raw, got, err)
	}
	if req.URL.Path != "/ims/token/v3" || req.URL.Host != u.Host || req.URL.Scheme != u.Scheme || req.URL.RawQuery != "" {
		t.Fatalf("ParseBaseURL(%q) = %q, which sends the token request to %s", raw, got, req.URL.Redacted())
	}
}
