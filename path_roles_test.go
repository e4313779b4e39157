package adobeims

import (
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

func TestRoleCRUDAndList(t *testing.T) {
	e := newTestEnv(t)
	e.configure(nil)
	e.mustOK(e.write("roles/firefly", map[string]any{"scopes": "firefly_api,ff_apis", "ttl": "1h", "max_ttl": "2h"}))
	e.mustOK(e.write("roles/ded", map[string]any{"scopes": "openid", "mode": "dedicated"}))

	got := e.mustOK(e.read("roles/firefly")).Data
	want := map[string]any{"scopes": []string{"firefly_api", "ff_apis"}, "mode": "shared", "ttl": int64(3600), "max_ttl": int64(7200)}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("role = %#v\nwant %#v", got, want)
	}

	// A partial update changes only the fields given.
	e.mustOK(e.write("roles/firefly", map[string]any{"ttl": "30m"}))
	got = e.mustOK(e.read("roles/firefly")).Data
	if got["ttl"] != int64(1800) || got["max_ttl"] != int64(7200) || !reflect.DeepEqual(got["scopes"], []string{"firefly_api", "ff_apis"}) {
		t.Fatalf("after partial update: %#v", got)
	}

	list := e.mustOK(e.request("list", "roles/", nil)).Data["keys"]
	if !reflect.DeepEqual(list, []string{"ded", "firefly"}) {
		t.Fatalf("list = %v", list)
	}

	e.mustOK(e.request("delete", "roles/ded", nil))
	if r := e.mustOK(e.read("roles/ded")); r != nil {
		t.Fatalf("deleted role still readable: %#v", r)
	}
}

func TestRoleBadInputChangesNothing(t *testing.T) {
	cases := []struct {
		name string
		data map[string]any
		want string
	}{
		{"scope outside config", map[string]any{"scopes": "openid,photoshop_api"}, "photoshop_api are not in the config's scopes"},
		{"unknown mode", map[string]any{"mode": "exclusive"}, `mode "exclusive" is not known`},
		{"ttl above max_ttl", map[string]any{"ttl": "3h"}, "longer than max_ttl"},
		{"negative ttl", map[string]any{"ttl": "-5s"}, "negative"},
		{"negative max_ttl", map[string]any{"max_ttl": -1}, "negative"},
		{"spaces in scopes", map[string]any{"scopes": "openid AdobeID"}, "separated by commas"},
		{"duplicate scopes", map[string]any{"scopes": "openid,openid"}, "twice"},
		{"empty scope item", map[string]any{"scopes": "openid,"}, "is empty"},
		{"unknown field", map[string]any{"ttls": "1h"}, "unknown field(s) ttls"},
		{"malformed ttl", map[string]any{"ttl": "soon"}, "ttl"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t)
			e.configure(nil)
			e.mustOK(e.write("roles/r", map[string]any{"scopes": "openid", "ttl": "1h", "max_ttl": "2h"}))
			before := e.mustOK(e.read("roles/r")).Data

			resp, err := e.write("roles/r", tc.data)
			e.mustFail(resp, err, tc.want)
			if after := e.mustOK(e.read("roles/r")).Data; !reflect.DeepEqual(before, after) {
				t.Fatalf("role changed:\nbefore %#v\nafter  %#v", before, after)
			}
		})
	}
}

func TestRoleNeedsScopesAndConfig(t *testing.T) {
	e := newTestEnv(t)
	resp, err := e.write("roles/r", map[string]any{"scopes": "openid"})
	e.mustFail(resp, err, `write "config" before roles`)
	e.configure(nil)
	resp, err = e.write("roles/r", map[string]any{"mode": "shared"})
	e.mustFail(resp, err, "scopes is required")
}

func TestRoleNamesWithOddCharactersAreRejected(t *testing.T) {
	e := newTestEnv(t)
	e.configure(nil)
	for _, name := range []string{"a/b", "a b", "a$", "-a"} {
		resp, err := e.write("roles/"+name, map[string]any{"scopes": "openid"})
		if err == nil && (resp == nil || !resp.IsError()) {
			t.Errorf("role name %q accepted", name)
		}
	}
	if keys := e.mustOK(e.request("list", "roles/", nil)); keys != nil && keys.Data["keys"] != nil {
		t.Fatalf("roles stored: %v", keys.Data["keys"])
	}
}

func TestRoleScopeChangeDropsItsOldToken(t *testing.T) {
	e := newTestEnv(t)
	e.configure(nil)
	e.mustOK(e.write("roles/r", map[string]any{"scopes": "openid"}))
	e.creds("creds/r")
	e.mustOK(e.write("roles/r", map[string]any{"scopes": "openid,AdobeID"}))
	for _, s := range e.b.cache.States() {
		if s.Scopes == "openid" {
			t.Fatal("token of the role's old scope set is still cached")
		}
	}
}

func TestRoleCacheFollowsWritesDeletesAndOtherNodes(t *testing.T) {
	e := newTestEnv(t)
	e.configure(nil)
	e.mustOK(e.write("roles/r", map[string]any{"scopes": "openid", "ttl": "1h"}))
	if got := e.creds("creds/r").Secret.TTL; got != time.Hour {
		t.Fatalf("ttl %s, want 1h", got)
	}
	e.mustOK(e.write("roles/r", map[string]any{"ttl": "30m"}))
	if got := e.creds("creds/r").Secret.TTL; got != 30*time.Minute {
		t.Fatalf("after a write: ttl %s, want 30m", got)
	}

	// Another node changed the role in storage.
	entry, err := logical.StorageEntryJSON("roles/r", &role{Scopes: []string{"openid"}, Mode: modeShared, TTL: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.storage.Put(t.Context(), entry); err != nil {
		t.Fatal(err)
	}
	e.b.invalidate(t.Context(), "roles/r")
	if got := e.creds("creds/r").Secret.TTL; got != 10*time.Minute {
		t.Fatalf("after a change elsewhere: ttl %s, want 10m", got)
	}

	e.mustOK(e.request("delete", "roles/r", nil))
	resp, err := e.read("creds/r")
	e.mustFail(resp, err, `role "r" does not exist`)
}
