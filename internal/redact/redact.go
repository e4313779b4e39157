// Package redact keeps secrets out of formatted text. A type that holds the
// client secret or an access token implements fmt.Formatter (and String and
// GoString, for callers that ask for those by name) by formatting a view of
// itself in which each secret is Marker. Whatever formats such a value, for
// a log line, an error or a panic message, then prints the fields an
// operator needs and never the secret. JSON encoding is untouched: storage
// and responses see the real values.
package redact

import "fmt"

// Marker stands in for a secret in formatted text.
const Marker = "[redacted]"

// Secret returns Marker for a secret that is set, and "" for one that is
// not, so that formatted text still tells whether a secret is there.
func Secret(s string) string {
	if s == "" {
		return ""
	}
	return Marker
}

// Format prints view, a copy of a value with its secrets replaced by Marker
// and without the value's own methods, with the verb and the flags, width
// and precision of f.
func Format(f fmt.State, verb rune, view any) {
	_, _ = fmt.Fprintf(f, fmt.FormatString(f, verb), view) // a fmt.State write has no one to report to
}
