package ims

import (
	"strings"
	"testing"
)

func TestParseBaseURL(t *testing.T) {
	tests := []struct {
		raw     string
		want    string
		wantErr string // substring; empty means valid
	}{
		{"https://ims-na1.adobelogin.com", "https://ims-na1.adobelogin.com", ""},
		{"https://ims-na1.adobelogin.com/", "https://ims-na1.adobelogin.com", ""},
		{"  https://IMS-NA1.adobelogin.com  ", "https://ims-na1.adobelogin.com", ""},
		{"HTTPS://api.adobe.io:443", "https://api.adobe.io:443", ""},
		{"http://127.0.0.1:8200", "http://127.0.0.1:8200", ""},
		{"http://127.3.4.5", "http://127.3.4.5", ""},
		{"http://localhost", "http://localhost", ""},
		{"http://LocalHost:9000/", "http://localhost:9000", ""},
		{"http://[::1]:1", "http://[::1]:1", ""},
		{"http://[::1]:", "http://[::1]", ""},
		{"https://api.adobe.io:/", "https://api.adobe.io", ""},
		{"http://ims.example.com", "", `ims_url "http://ims.example.com": plain http is only allowed for loopback hosts; use https`},
		{"http://10.0.0.1", "", "plain http is only allowed for loopback hosts"},
		{"http://localhost.example.com", "", "plain http is only allowed for loopback hosts"},
		{"ftp://ims.example.com", "", `scheme "ftp" is not supported; use https`},
		{"https://user:hunter2@ims.example.com", "", "remove the user info"},
		{"https://ims.example.com?x=1", "", "remove the query string"},
		{"https://ims.example.com/?", "", "remove the query string"},
		{"https://ims.example.com#frag", "", "remove the fragment"},
		{"https://ims.example.com/ims/token/v3", "", `remove the path "/ims/token/v3"`},
		{"", "", "ims_url is empty"},
		{"   ", "", "ims_url is empty"},
		{"ims.example.com", "", "is not an absolute URL"},
		{"https://", "", "the host is missing"},
		{"https://:443", "", "the host is missing"},
		{"https://ims.example.com:99999999", "", `the port "99999999" is not a valid port`},
		{"https://ims.example.com:0", "", `the port "0" is not a valid port`},
		{"https://ims.example.com:x", "", "is not a valid URL"},
		{"https://user:hunter2@ims example.com", "", "value not shown"},
		{"ims.example.com?client_secret=hunter2", "", `ims_url "ims.example.com?..." is not an absolute URL`},
		{"/://user:hunter2@", "", `ims_url ":///...": scheme "" is not supported`},
		{"https://ims.example.com/user:hunter2@x", "", `remove the path "/..."`},
		{"https://ims.example.com:x?token=hunter2", "", `ims_url "https://ims.example.com:x?..." is not a valid URL`},
		{"https://ims.example.com:x#hunter2", "", `ims_url "https://ims.example.com:x#..." is not a valid URL`},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			got, err := ParseBaseURL("ims_url", tt.raw)
			if tt.wantErr == "" {
				if err != nil || got != tt.want {
					t.Errorf("ParseBaseURL(%q) = %q, %v; want %q", tt.raw, got, err, tt.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseBaseURL(%q) = %q, %v; want an error containing %q", tt.raw, got, err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error shows the password: %v", err)
			}
		})
	}
}
