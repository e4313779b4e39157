package ims

import (
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// ParseBaseURL validates an operator-supplied base URL for the config field
// named field (e.g. "ims_url") and returns it normalized, without a trailing
// slash.
//
// The URL must be https. Plain http is accepted only for loopback hosts, so
// that a local test double can stand in for IMS without the client secret
// ever crossing a network in clear text. User info, a query, a fragment or a
// path are refused: the client appends the documented paths itself, and
// anything else would be silently ignored or, worse, logged.
func ParseBaseURL(field, raw string) (string, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return "", fmt.Errorf("%s is empty: give an https URL such as %q", field, "https://ims-na1.adobelogin.com")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("%s %s is not a valid URL: give an https URL such as %q", field, quoteRaw(raw), "https://host.example.com")
	}
	// Shown in errors: never the user info or query, which may hold secrets,
	// nor a path with an "@", which may be user info that did not parse as
	// such.
	path := u.EscapedPath()
	if strings.Contains(path, "@") {
		path = "/..."
	}
	shown := u.Scheme + "://" + u.Host + path
	fail := func(format string, args ...any) (string, error) {
		return "", fmt.Errorf("%s %q: %s", field, shown, fmt.Sprintf(format, args...))
	}

	switch {
	case !strings.Contains(raw, "://"):
		return "", fmt.Errorf("%s %s is not an absolute URL: give scheme and host, e.g. %q", field, quoteRaw(raw), "https://host.example.com")
	case u.Scheme != "https" && u.Scheme != "http":
		return fail("scheme %q is not supported; use https", u.Scheme)
	case u.Host == "" || u.Hostname() == "":
		return fail("the host is missing; give one, e.g. %q", "https://host.example.com")
	case !validPort(u.Port()):
		return fail("the port %q is not a valid port; give one from 1 to 65535, or none", u.Port())
	case u.User != nil:
		return fail("remove the user info (user@ or user:password@): credentials go in client_id and client_secret")
	case u.RawQuery != "" || u.ForceQuery:
		return fail("remove the query string: give the base URL only")
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return fail("remove the fragment (#...): give the base URL only")
	case u.Path != "" && u.Path != "/":
		return fail("remove the path %q: give the base URL only; the plugin adds the API paths itself", path)
	case u.Scheme == "http" && !isLoopback(u.Hostname()):
		return fail("plain http is only allowed for loopback hosts; use https")
	}
	// An empty port ("host:") means the default one: drop the colon.
	host := u.Host
	if u.Port() == "" {
		host = strings.TrimSuffix(host, ":")
	}
	return u.Scheme + "://" + strings.ToLower(host), nil
}

func validPort(p string) bool {
	if p == "" {
		return true
	}
	n, err := strconv.Atoi(p)
	return err == nil && n >= 1 && n <= 65535
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// quoteRaw shows an unusable value, but never what could hold a password
// or a secret: user info, a query or a fragment.
func quoteRaw(raw string) string {
	if strings.Contains(raw, "@") {
		return "(value not shown: it may contain credentials)"
	}
	if i := strings.IndexAny(raw, "?#"); i >= 0 {
		return fmt.Sprintf("%q", raw[:i+1]+"...")
	}
	return fmt.Sprintf("%q", raw)
}
