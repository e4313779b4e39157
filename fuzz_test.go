package adobeims

// Fuzz targets for the parsing and validation of the config and role
// fields an operator writes. Fields arrive as Vault hands them to the
// callbacks: as strings, checked against the path's schema by
// FieldData.Validate first (Vault refuses what does not convert before any
// callback runs).

import (
	"net"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/hashicorp/vault/sdk/framework"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/ims"
)

// fuzzConfigKeys are the config fields mergeConfig reads, in the order of
// FuzzMergeConfig's string arguments and of the bits of its present mask.
var fuzzConfigKeys = []string{keyClientID, keyClientSecret, keyScopes, keyIMSURL, keyOrgID, keyCredentialID, keyIOManagementURL, keyRotationPeriod}

func fuzzOldConfig() *config {
	return &config{
		ClientID:         "5f1c6e2a9b8d4c3e",
		ClientSecret:     "p8e-OldClientSecretValue0000",
		Scopes:           []string{"openid", "AdobeID", "firefly_api"},
		IMSURL:           ims.DefaultURL,
		IOManagementURL:  ims.DefaultManagementURL,
		OrgID:            "ABC123@AdobeOrg",
		CredentialID:     "12345678",
		ClientSecretUUID: "11ede8ab6f1f4a1c9f6b3f2d1e0c9b8a",
		RotationPeriod:   30 * 24 * time.Hour,
	}
}

// rotateAlnum changes every ASCII letter and digit of s to another of its
// kind, keeping the length, emptiness, and the place of spaces and control
// characters: all that validation may look at in a client secret. It works
// on bytes, so that invalid UTF-8 stays as it is.
func rotateAlnum(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z':
			b[i] = 'a' + (c-'a'+1)%26
		case c >= 'A' && c <= 'Z':
			b[i] = 'A' + (c-'A'+1)%26
		case c >= '0' && c <= '9':
			b[i] = '0' + (c-'0'+1)%10
		}
	}
	return string(b)
}

// FuzzMergeConfig parses config writes. It never panics; what it accepts
// passes every validator (client ID, secret without whitespace, scopes,
// https or loopback-http URLs that parse back to themselves, identifiers,
// rotation period); and its errors never depend on, so never quote, the
// client_secret given.
func FuzzMergeConfig(f *testing.F) {
	all := uint16(1)<<len(fuzzConfigKeys) - 1
	for _, s := range []struct {
		present uint16
		old     bool
		v       [8]string
	}{
		{all, false, [8]string{"5f1c6e2a9b8d4c3e", "p8e-Qz7Rw2Lp9Xv4Kt8Nm3sJ6", "openid,AdobeID,session,additional_info,read_organizations,firefly_api,ff_apis", "https://ims-na1.adobelogin.com", "1234ABCD@AdobeOrg", "12345678", "https://api.adobe.io", "30d"}},
		{0b00000111, false, [8]string{"5f1c6e2a9b8d4c3e", "p8e-Qz7Rw2Lp9Xv4Kt8Nm3sJ6", "openid,AdobeID,firefly_api", "", "", "", "", ""}},
		{0b00001111, false, [8]string{"client", "secret", "openid", "http://127.0.0.1:8200", "", "", "", ""}},
		{0b01001111, false, [8]string{"client", "secret", "openid", "https://ims-na1-stg1.adobelogin.com/", "", "", "http://localhost:9000", ""}},
		{0b00000111, false, [8]string{" 5f1c ", "p8e secret with spaces", "openid, AdobeID", "", "", "", "", ""}},
		{0b00000111, false, [8]string{"5f1c", "p8e-secret\n", "openid,,AdobeID", "", "", "", "", ""}},
		{0b00000111, false, [8]string{"5f1c", "", "openid,openid", "", "", "", "", ""}},
		{0b00000111, false, [8]string{"5f1c", "p8e-\xff\xfeAb1", "openid", "", "", "", "", ""}},
		{0b00000111, false, [8]string{"5f1c", strings.Repeat("p8e-Ab1", 147), "openid", "", "", "", "", ""}},
		{0b00001111, false, [8]string{"5f1c", "p8e-x", "openid", "http://ims.example.com", "", "", "", ""}},
		{0b00001111, false, [8]string{"5f1c", "p8e-x", "openid", "https://user:p8e-x@ims.example.com", "", "", "", ""}},
		{0b00001111, false, [8]string{"5f1c", "p8e-x", "openid", "ims.example.com?client_secret=p8e-x", "", "", "", ""}},
		{0b00000111, false, [8]string{"5f1c!", "p8e-Qz7Rw2Lp9Xv4Kt8Nm3sJ6", "openid", "", "", "", "", ""}},
		{0b10000111, false, [8]string{"5f1c", "p8e-x", "openid", "", "", "", "", "1h"}},
		{0b10000111, false, [8]string{"5f1c", "p8e-x", "openid", "", "", "", "", "5s"}},
		{0b00000001, true, [8]string{"another-client", "", "", "", "", "", "", ""}},
		{0b00000011, true, [8]string{"another-client", "p8e-NewCredentialSecret", "", "", "", "", "", ""}},
		{0b00000010, true, [8]string{"", "p8e-RotatedByHand0000", "", "", "", "", "", ""}},
		{0b00110000, true, [8]string{"", "", "", "", "", "", "", ""}},
		{0b10110000, true, [8]string{"", "", "", "", "", "", "", "1h"}},
		{0b00000100, true, [8]string{"", "", "openid,bad scope", "", "", "", "", ""}},
	} {
		f.Add(s.present, s.old, s.v[0], s.v[1], s.v[2], s.v[3], s.v[4], s.v[5], s.v[6], s.v[7])
	}

	schema := pathConfig(newBackend(backendOptions{})).Fields
	merge := func(present uint16, old *config, values []string) (*config, error, bool) {
		raw := map[string]any{}
		for i, k := range fuzzConfigKeys {
			if present&(1<<i) != 0 {
				raw[k] = values[i]
			}
		}
		d := &framework.FieldData{Raw: raw, Schema: schema}
		if d.Validate() != nil {
			return nil, nil, false // Vault refuses it before the callback
		}
		cfg, err := mergeConfig(old, d)
		return cfg, err, true
	}

	f.Fuzz(func(t *testing.T, present uint16, withOld bool, clientID, clientSecret, scopes, imsURL, orgID, credentialID, ioURL, rotation string) {
		values := []string{clientID, clientSecret, scopes, imsURL, orgID, credentialID, ioURL, rotation}
		given := func(k string) (string, bool) {
			i := slices.Index(fuzzConfigKeys, k)
			return values[i], present&(1<<i) != 0
		}
		var old *config
		if withOld {
			old = fuzzOldConfig()
		}
		cfg, err, valid := merge(present, old, values)
		if !valid {
			t.Skip()
		}
		if old != nil && !reflect.DeepEqual(old, fuzzOldConfig()) {
			t.Fatalf("mergeConfig changed the stored config: %+v", old)
		}

		// The same write with another secret of the same shape fails, or
		// not, alike: the error cannot be quoting the secret.
		if secret, ok := given(keyClientSecret); ok {
			other := slices.Clone(values)
			other[1] = rotateAlnum(secret)
			var oldAgain *config
			if withOld {
				oldAgain = fuzzOldConfig()
			}
			_, err2, _ := merge(present, oldAgain, other)
			if (err == nil) != (err2 == nil) || err != nil && err.Error() != err2.Error() {
				t.Fatalf("the outcome depends on the client secret's characters:\n%q: %v\n%q: %v", secret, err, other[1], err2)
			}
			if err != nil && len(secret) >= 8 && strings.Contains(err.Error(), secret) {
				if !slices.ContainsFunc(append(values[:1:1], values[2:]...), func(v string) bool { return strings.Contains(v, secret) }) {
					t.Fatalf("error quotes the client secret %q: %v", secret, err)
				}
			}
		}
		if err != nil {
			if cfg != nil {
				t.Fatalf("mergeConfig returned a config and an error: %v", err)
			}
			return
		}

		if err := validateClientID(cfg.ClientID); err != nil {
			t.Fatalf("accepted client_id %q: %v", cfg.ClientID, err)
		}
		if err := validateClientSecret(cfg.ClientSecret); err != nil || strings.ContainsFunc(cfg.ClientSecret, unicode.IsSpace) {
			t.Fatalf("accepted a client_secret that fails validation: %v", err)
		}
		if _, err := validateScopes(keyScopes, cfg.Scopes); err != nil {
			t.Fatalf("accepted scopes %q: %v", cfg.Scopes, err)
		}
		for _, u := range []struct{ key, value string }{{keyIMSURL, cfg.IMSURL}, {keyIOManagementURL, cfg.IOManagementURL}} {
			checkFuzzedURL(t, u.key, u.value)
		}
		for _, id := range []struct{ key, value string }{{keyOrgID, cfg.OrgID}, {keyCredentialID, cfg.CredentialID}} {
			if err := validateIdentifier(id.key, id.value, true); err != nil {
				t.Fatalf("accepted %s %q: %v", id.key, id.value, err)
			}
		}
		if cfg.RotationPeriod < 0 || (cfg.RotationPeriod > 0 && cfg.RotationPeriod < minRotationPeriod) {
			t.Fatalf("accepted rotation_period %s", cfg.RotationPeriod)
		}
		if cfg.RotationPeriod > 0 && cfg.RotationSchedule != "" {
			t.Fatalf("kept both rotation_period %s and rotation_schedule %q", cfg.RotationPeriod, cfg.RotationSchedule)
		}
		if rotationDriver(cfg) != driverNone && (cfg.OrgID == "" || cfg.CredentialID == "") {
			t.Fatalf("accepted automated rotation without org_id and credential_id")
		}

		// What was given is what is kept.
		if v, ok := given(keyClientSecret); ok && cfg.ClientSecret != v {
			t.Fatal("the client_secret kept is not the one given")
		}
		if v, ok := given(keyClientID); ok && cfg.ClientID != strings.TrimSpace(v) {
			t.Fatalf("client_id %q kept as %q", v, cfg.ClientID)
		}
		if old != nil {
			if _, ok := given(keyClientSecret); !ok && cfg.ClientID != old.ClientID {
				t.Fatal("client_id changed without a new client_secret")
			}
			if (cfg.ClientID != old.ClientID || cfg.ClientSecret != old.ClientSecret) && cfg.ClientSecretUUID != "" {
				t.Fatal("the stored secret's uuid survived a change of credential or secret")
			}
		}
	})
}

// checkFuzzedURL checks an accepted base URL: https, or http to a loopback
// host, nothing but scheme and host, and stable under ims.ParseBaseURL.
func checkFuzzedURL(t *testing.T, key, v string) {
	t.Helper()
	u, err := url.Parse(v)
	if err != nil {
		t.Fatalf("accepted %s %q, which does not parse: %v", key, v, err)
	}
	if u.Scheme != "https" && u.Scheme != "http" || u.Host == "" || u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" {
		t.Fatalf("accepted %s %q: not a bare https or http base URL", key, v)
	}
	if u.Scheme == "http" {
		ip := net.ParseIP(u.Hostname())
		if u.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
			t.Fatalf("accepted %s %q: plain http to a host that is not loopback", key, v)
		}
	}
	if again, err := ims.ParseBaseURL(key, v); err != nil || again != v {
		t.Fatalf("accepted %s %q, which parses again as %q, %v", key, v, again, err)
	}
}

// fuzzRoleKeys are the role fields mergeRole reads, in the order of
// FuzzMergeRole's string arguments and of the bits of its present mask.
var fuzzRoleKeys = []string{keyScopes, keyMode, keyTTL, keyMaxTTL}

var fuzzConfigScopes = []string{"openid", "AdobeID", "session", "additional_info", "read_organizations", "firefly_api", "ff_apis"}

// FuzzMergeRole parses role writes. It never panics, and what it accepts
// has valid scopes within the config's, a known mode, and caps that are not
// negative with ttl no longer than max_ttl.
func FuzzMergeRole(f *testing.F) {
	for _, s := range []struct {
		present uint8
		old     bool
		v       [4]string
	}{
		{0b1111, false, [4]string{"firefly_api,ff_apis", "shared", "1h", "2h"}},
		{0b0011, false, [4]string{"openid", "dedicated", "", ""}},
		{0b0011, false, [4]string{"openid", " DEDICATED ", "", ""}},
		{0b0011, false, [4]string{"openid", "exclusive", "", ""}},
		{0b0001, false, [4]string{"openid,unknown_scope", "", "", ""}},
		{0b0001, false, [4]string{"openid,,AdobeID", "", "", ""}},
		{0b0001, false, [4]string{"openid AdobeID", "", "", ""}},
		{0b1101, false, [4]string{"openid", "", "2h", "1h"}},
		{0b1101, false, [4]string{"openid", "", "-5", "0"}},
		{0b1101, false, [4]string{"openid", "", "30d", "9223372036"}},
		{0b0000, false, [4]string{"", "", "", ""}},
		{0b0100, true, [4]string{"", "", "30m", ""}},
		{0b1000, true, [4]string{"", "", "", "10m"}},
		{0b0001, true, [4]string{"", "", "", ""}},
	} {
		f.Add(s.present, s.old, s.v[0], s.v[1], s.v[2], s.v[3])
	}

	var schema map[string]*framework.FieldSchema
	for _, p := range pathRoles(newBackend(backendOptions{})) {
		if p.Fields[keyMode] != nil {
			schema = p.Fields
		}
	}
	fuzzOldRole := func() *role {
		return &role{Scopes: []string{"firefly_api", "ff_apis"}, Mode: modeShared, TTL: time.Hour, MaxTTL: 2 * time.Hour}
	}

	f.Fuzz(func(t *testing.T, present uint8, withOld bool, scopes, mode, ttl, maxTTL string) {
		values := []string{scopes, mode, ttl, maxTTL}
		raw := map[string]any{keyName: "fuzz"}
		for i, k := range fuzzRoleKeys {
			if present&(1<<i) != 0 {
				raw[k] = values[i]
			}
		}
		d := &framework.FieldData{Raw: raw, Schema: schema}
		if d.Validate() != nil {
			t.Skip() // Vault refuses it before the callback
		}
		var old *role
		if withOld {
			old = fuzzOldRole()
		}
		r, err := mergeRole(old, d, slices.Clone(fuzzConfigScopes))
		if old != nil && !reflect.DeepEqual(old, fuzzOldRole()) {
			t.Fatalf("mergeRole changed the stored role: %+v", old)
		}
		if err != nil {
			if r != nil {
				t.Fatalf("mergeRole returned a role and an error: %v", err)
			}
			return
		}

		if _, err := validateScopes(keyScopes, r.Scopes); err != nil {
			t.Fatalf("accepted scopes %q: %v", r.Scopes, err)
		}
		if extra := missingFrom(r.Scopes, fuzzConfigScopes); len(extra) > 0 {
			t.Fatalf("accepted scopes %q beyond the config's", extra)
		}
		if r.Mode != modeShared && r.Mode != modeDedicated {
			t.Fatalf("accepted mode %q", r.Mode)
		}
		if r.TTL < 0 || r.MaxTTL < 0 || r.TTL > 0 && r.MaxTTL > 0 && r.TTL > r.MaxTTL {
			t.Fatalf("accepted ttl %s, max_ttl %s", r.TTL, r.MaxTTL)
		}
		if old == nil && present&1 == 0 {
			t.Fatal("a new role was accepted without scopes")
		}
		if present&2 != 0 && r.Mode != strings.ToLower(strings.TrimSpace(mode)) {
			t.Fatalf("mode %q kept as %q", mode, r.Mode)
		}
		for _, c := range []struct {
			key, raw string
			got      time.Duration
		}{{keyTTL, ttl, r.TTL}, {keyMaxTTL, maxTTL, r.MaxTTL}} {
			if _, ok := raw[c.key]; !ok {
				continue
			}
			secs, _ := d.GetOk(c.key)
			if c.got != time.Duration(secs.(int))*time.Second {
				t.Fatalf("%s %q kept as %s", c.key, c.raw, c.got)
			}
		}
	})
}
