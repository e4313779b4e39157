package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// Helpers of ha_test.go start with "ha".

// haNode is one `vault server` of a Raft cluster on loopback.
type haNode struct {
	*vaultServer
	name        string
	clusterAddr string // host:port of the cluster listener (Raft and forwarding)
}

// haPorts returns n loopback port pairs (API, cluster) that are free and
// distinct from each other.
func haPorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for len(ports) < n {
		p := freePortPair(t)
		if slices.ContainsFunc(ports, func(q int) bool { return p >= q-1 && p <= q+1 }) {
			continue
		}
		ports = append(ports, p)
	}
	return ports
}

// haStartNode writes the node's config and starts it; it answers HTTP but is
// sealed and uninitialised. joinAddr, when set, is the API address of the
// node it joins with retry_join.
func haStartNode(t *testing.T, name string, port int, joinAddr string) *haNode {
	t.Helper()
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	n := &haNode{
		vaultServer: &vaultServer{t: t, addr: addr, dir: dir, logPath: filepath.Join(dir, name+".log")},
		name:        name,
		clusterAddr: fmt.Sprintf("127.0.0.1:%d", port+1),
	}
	join := ""
	if joinAddr != "" {
		join = fmt.Sprintf("\n  retry_join {\n    leader_api_addr = \"http://%s\"\n  }", joinAddr)
	}
	dataDir := filepath.Join(dir, "raft")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	hcl := fmt.Sprintf(`storage "raft" {
  path    = %q
  node_id = %q
  # Raft's production timing (the default, 5, is five times slower), so a
  # new leader is elected within seconds.
  performance_multiplier = 1
  # Autopilot promotes joined nodes to voters when it reconciles (every 10s
  # by default); the update interval must be shorter.
  autopilot_update_interval    = "500ms"
  autopilot_reconcile_interval = "1s"%s
}
listener "tcp" {
  address         = %q
  cluster_address = %q
  tls_disable     = true
}
api_addr         = "http://%s"
cluster_addr     = "https://%s"
disable_mlock    = true
plugin_directory = %q
`, dataDir, name, join, addr, n.clusterAddr, addr, n.clusterAddr, suite.pluginDir)
	cfgPath := filepath.Join(dir, "vault.hcl")
	if err := os.WriteFile(cfgPath, []byte(hcl), 0o600); err != nil {
		t.Fatal(err)
	}
	n.start([]string{"server", "-log-level=debug", "-config=" + cfgPath})
	cfg := api.DefaultConfig()
	cfg.Address = "http://" + addr
	cfg.Timeout = time.Minute
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n.client = c
	eventually(t, 60*time.Second, name+" to answer on "+addr, func() error {
		if n.haExited() {
			t.Fatalf("%s exited at start (its log is printed below)", name)
		}
		_, err := c.Sys().Health()
		return err
	})
	return n
}

// haExited reports whether the node's process has ended (a zombie not yet
// reaped by stop), so that a node failing at start fails the test at once.
func (n *haNode) haExited() bool {
	n.mu.Lock()
	cmd := n.cmd
	n.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid))
	if err != nil {
		return os.IsNotExist(err)
	}
	// The state follows the command name in parentheses.
	i := strings.LastIndexByte(string(b), ')')
	return i >= 0 && i+2 < len(b) && (b[i+2] == 'Z' || b[i+2] == 'X')
}

// haLogin sets the root token on a node's client and CLI.
func (n *haNode) haLogin(token string) {
	n.token = token
	n.client.SetToken(token)
}

// haUnseal unseals a node with the cluster's key. A node that joins with
// retry_join accepts the key only once it has the leader's challenge, so
// this retries until the node reports unsealed.
func (n *haNode) haUnseal(key string, timeout time.Duration) {
	n.t.Helper()
	eventually(n.t, timeout, n.name+" to unseal", func() error {
		st, err := n.client.Sys().SealStatus()
		if err != nil {
			return err
		}
		if !st.Sealed {
			return nil
		}
		if st.Progress == 0 {
			if _, err := n.client.Sys().Unseal(key); err != nil {
				return fmt.Errorf("unseal: %w", err)
			}
		}
		return errors.New("still sealed")
	})
}

// haHealth says whether a node is active, standby or neither.
func (n *haNode) haHealth() (active bool, err error) {
	h, err := n.client.Sys().Health()
	if err != nil {
		return false, err
	}
	if h.Sealed || !h.Initialized {
		return false, fmt.Errorf("%s: sealed=%v initialized=%v", n.name, h.Sealed, h.Initialized)
	}
	return !h.Standby, nil
}

// haPeer is one server of `vault operator raft list-peers -format=json`.
type haPeer struct {
	NodeID string `json:"node_id"`
	Leader bool   `json:"leader"`
	Voter  bool   `json:"voter"`
}

// haPeers runs `vault operator raft list-peers` against n.
func (n *haNode) haPeers() ([]haPeer, error) {
	out, err := n.cli("operator", "raft", "list-peers", "-format=json")
	if err != nil {
		return nil, fmt.Errorf("vault operator raft list-peers: %w: %s", err, out)
	}
	var resp struct {
		Data struct {
			Config struct {
				Servers []haPeer `json:"servers"`
			} `json:"config"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		return nil, fmt.Errorf("decoding list-peers: %w: %s", err, out)
	}
	return resp.Data.Config.Servers, nil
}

// haLeader returns the node every given node names as leader, once they all
// agree and the leader reports itself active.
func haLeader(nodes []*haNode) (*haNode, error) {
	var leaderAddr string
	for _, n := range nodes {
		l, err := n.client.Sys().Leader()
		if err != nil {
			return nil, fmt.Errorf("%s: sys/leader: %w", n.name, err)
		}
		if !l.HAEnabled || l.LeaderAddress == "" {
			return nil, fmt.Errorf("%s knows no leader (ha_enabled=%v)", n.name, l.HAEnabled)
		}
		if leaderAddr != "" && l.LeaderAddress != leaderAddr {
			return nil, fmt.Errorf("nodes disagree on the leader: %s and %s", leaderAddr, l.LeaderAddress)
		}
		leaderAddr = l.LeaderAddress
	}
	for _, n := range nodes {
		if "http://"+n.addr != leaderAddr {
			continue
		}
		l, err := n.client.Sys().Leader()
		if err != nil {
			return nil, err
		}
		active, err := n.haHealth()
		if err != nil {
			return nil, err
		}
		if !l.IsSelf || !active {
			return nil, fmt.Errorf("%s is named leader but is_self=%v active=%v", n.name, l.IsSelf, active)
		}
		return n, nil
	}
	return nil, fmt.Errorf("the leader %s is none of the nodes asked", leaderAddr)
}

// haCreds reads a creds path on node n and returns the token and lease ID.
func haCreds(n *haNode, emu *emulator, path string) (string, string, error) {
	s, err := n.client.Logical().Read(path)
	if err != nil {
		return "", "", fmt.Errorf("%s: read %s: %w", n.name, path, err)
	}
	tok, err := lcCheckCreds(s, emu)
	if err != nil {
		return "", "", fmt.Errorf("%s: read %s: %w", n.name, path, err)
	}
	return tok, s.LeaseID, nil
}

// haCheckState reads config and roles back through n and checks they are
// what the test wrote.
func haCheckState(t *testing.T, n *haNode, emu *emulator, roles map[string][2]string) {
	t.Helper()
	s, err := n.client.Logical().Read("adobe/config")
	if err != nil || s == nil {
		t.Errorf("%s: read adobe/config: %v (nil=%v)", n.name, err, s == nil)
	} else {
		if s.Data["client_id"] != testClientID || s.Data["ims_url"] != emu.URL {
			t.Errorf("%s: adobe/config is %v, want client_id %s and ims_url %s", n.name, s.Data, testClientID, emu.URL)
		}
		if got := fmt.Sprint(s.Data["scopes"]); got != fmt.Sprint(strings.Split(fireflyScopes, ",")) {
			t.Errorf("%s: adobe/config scopes %s, want %s", n.name, got, fireflyScopes)
		}
		if _, ok := s.Data["client_secret"]; ok {
			t.Errorf("%s: adobe/config returns client_secret", n.name)
		}
	}
	l, err := n.client.Logical().List("adobe/roles/")
	if err != nil || l == nil {
		t.Errorf("%s: list adobe/roles/: %v", n.name, err)
	} else if got := fmt.Sprint(l.Data["keys"]); got != "[dedicated shared]" {
		t.Errorf("%s: adobe/roles/ lists %s, want [dedicated shared]", n.name, got)
	}
	for name, want := range roles {
		r, err := n.client.Logical().Read("adobe/roles/" + name)
		if err != nil || r == nil {
			t.Errorf("%s: read adobe/roles/%s: %v", n.name, name, err)
			continue
		}
		if got := fmt.Sprint(r.Data["scopes"]); got != fmt.Sprint(strings.Split(want[0], ",")) || r.Data["mode"] != want[1] {
			t.Errorf("%s: adobe/roles/%s is %v, want scopes %s mode %s", n.name, name, r.Data, want[0], want[1])
		}
	}
}

// TestHARaftClusterFailover runs the plugin in a 3-node Raft cluster of real
// Vault servers, kills the active node, and checks that the new active node
// and the remaining standby serve shared and dedicated creds with config,
// roles and leases intact.
func TestHARaftClusterFailover(t *testing.T) {
	emu := startEmulator(t, time.Hour)
	ports := haPorts(t, 3)
	began := time.Now()

	// node1 bootstraps the cluster; it has no retry_join, as joining itself
	// while being initialised would race the init.
	n1 := haStartNode(t, "node1", ports[0], "")
	initResp, err := n1.client.Sys().Init(&api.InitRequest{SecretShares: 1, SecretThreshold: 1})
	if err != nil {
		t.Fatalf("vault operator init on node1: %v", err)
	}
	key := initResp.KeysB64[0]
	n1.haLogin(initResp.RootToken)
	n1.haUnseal(key, 60*time.Second)
	eventually(t, 60*time.Second, "node1 to become active", func() error {
		active, err := n1.haHealth()
		if err == nil && !active {
			err = errors.New("node1 is standby")
		}
		return err
	})
	t.Logf("ha: node1 initialised and active after %s", time.Since(began).Round(time.Millisecond))
	// Joined nodes become voters once autopilot finds them stable (10s by
	// default); 2s keeps the test short and changes nothing else.
	if _, err := n1.client.Logical().Write("sys/storage/raft/autopilot/configuration", map[string]any{"server_stabilization_time": "2s"}); err != nil {
		t.Fatalf("tuning autopilot: %v", err)
	}

	nodes := []*haNode{n1}
	for i, name := range []string{"node2", "node3"} {
		n := haStartNode(t, name, ports[i+1], n1.addr)
		n.haLogin(initResp.RootToken)
		n.haUnseal(key, 90*time.Second)
		t.Logf("ha: %s joined and unsealed after %s", name, time.Since(began).Round(time.Millisecond))
		nodes = append(nodes, n)
	}
	eventually(t, 90*time.Second, "vault operator raft list-peers to show 3 voters", func() error {
		peers, err := n1.haPeers()
		if err != nil {
			return err
		}
		var voters []string
		for _, p := range peers {
			if p.Voter {
				voters = append(voters, p.NodeID)
			}
		}
		slices.Sort(voters)
		if !slices.Equal(voters, []string{"node1", "node2", "node3"}) {
			return fmt.Errorf("voters %v of peers %+v", voters, peers)
		}
		return nil
	})
	for _, n := range nodes[1:] {
		if active, err := n.haHealth(); err != nil || active {
			t.Fatalf("%s: want an unsealed standby, got active=%v err=%v", n.name, active, err)
		}
	}
	t.Logf("ha: 3-node Raft cluster up with 3 voters after %s", time.Since(began).Round(time.Millisecond))

	// Register, mount, configure and create roles through the leader.
	leader, err := haLeader(nodes)
	if err != nil || leader != n1 {
		t.Fatalf("leader before failover: %v, %v (want node1)", leader, err)
	}
	n1.mountPlugin()
	n1.configure(emu)
	roles := map[string][2]string{
		"shared":    {"openid,AdobeID,firefly_api,ff_apis", "shared"},
		"dedicated": {"openid,AdobeID,firefly_api", "dedicated"},
	}
	for name, r := range roles {
		n1.mustCLI("write", "adobe/roles/"+name, "scopes="+r[0], "mode="+r[1])
	}

	// Reads on every node: standbys forward to the active node, so every
	// shared read gets the active node's one cached token.
	var sharedBefore string
	var oldDedicated []string // tokens
	var oldLeases []string
	for _, n := range nodes {
		tok, _, err := haCreds(n, emu, "adobe/creds/shared")
		if err != nil {
			t.Fatal(err)
		}
		if sharedBefore == "" {
			sharedBefore = tok
		} else if tok != sharedBefore {
			t.Errorf("%s: shared read got another token than the active node's", n.name)
		}
		dtok, lease, err := haCreds(n, emu, "adobe/creds/dedicated")
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(oldDedicated, dtok) || dtok == sharedBefore {
			t.Errorf("%s: dedicated read returned a token handed out before", n.name)
		}
		oldDedicated, oldLeases = append(oldDedicated, dtok), append(oldLeases, lease)
	}

	// Kill the active node, as a crash would.
	sharedMintsBefore := haSharedMints(emu, roles["shared"][0])
	killedAt := time.Now()
	n1.mu.Lock()
	if err := n1.cmd.Process.Kill(); err != nil {
		n1.mu.Unlock()
		t.Fatalf("killing node1: %v", err)
	}
	n1.mu.Unlock()
	n1.stop() // reaps the process
	rest := nodes[1:]
	var newLeader *haNode
	eventually(t, 90*time.Second, "a new leader among node2 and node3", func() error {
		l, err := haLeader(rest)
		newLeader = l
		return err
	})
	electedIn := time.Since(killedAt)
	standby := rest[0]
	if standby == newLeader {
		standby = rest[1]
	}
	t.Logf("ha: %s killed; %s elected and active after %s; %s is standby", n1.name, newLeader.name, electedIn.Round(time.Millisecond), standby.name)

	// The new active node mounts the plugin from its own plugin_directory
	// and the standby learns where to forward: both may take a moment.
	var sharedAfter string
	eventually(t, 60*time.Second, "a shared read through the new leader "+newLeader.name, func() error {
		tok, _, err := haCreds(newLeader, emu, "adobe/creds/shared")
		sharedAfter = tok
		return err
	})
	eventually(t, 60*time.Second, "a shared read through the standby "+standby.name, func() error {
		tok, _, err := haCreds(standby, emu, "adobe/creds/shared")
		if err == nil && tok != sharedAfter {
			return errors.New("the standby's shared read got another token than the new leader's")
		}
		return err
	})
	t.Logf("ha: creds served again %s after the kill (shared token re-minted by the new active node: %v)",
		time.Since(killedAt).Round(time.Millisecond), sharedAfter != sharedBefore)
	// The new leader serves the shared token the old one persisted: one IMS
	// token request per scope set per token lifetime, for the whole cluster.
	if sharedAfter != sharedBefore {
		t.Errorf("the new leader minted a shared token though the persisted one is valid")
	}
	if n := haSharedMints(emu, roles["shared"][0]) - sharedMintsBefore; n != 0 {
		t.Errorf("the leader change made %d IMS token requests for the shared scope set, want 0", n)
	}

	for _, n := range []*haNode{newLeader, standby, newLeader, standby} {
		tok, _, err := haCreds(n, emu, "adobe/creds/shared")
		if err != nil {
			t.Error(err)
		} else if tok != sharedAfter {
			t.Errorf("%s: shared read after failover got another token than the active node's", n.name)
		}
		dtok, lease, err := haCreds(n, emu, "adobe/creds/dedicated")
		if err != nil {
			t.Error(err)
			continue
		}
		if slices.Contains(oldDedicated, dtok) || dtok == sharedAfter {
			t.Errorf("%s: dedicated read after failover returned a token handed out before", n.name)
		}
		oldDedicated, oldLeases = append(oldDedicated, dtok), append(oldLeases, lease)
	}
	for _, n := range rest {
		haCheckState(t, n, emu, roles)
	}

	// Leases issued before and after the failover live in Raft: revoking
	// them through either node invalidates their tokens at IMS.
	for i, lease := range oldLeases {
		n := rest[i%2]
		if err := n.client.Sys().Revoke(lease); err != nil {
			t.Errorf("%s: revoking dedicated lease %d: %v", n.name, i, err)
			continue
		}
		if emu.TokenValid(oldDedicated[i]) {
			t.Errorf("%s: dedicated lease %d was revoked but its token is still valid at IMS", n.name, i)
		}
	}
	if s := emu.Stats(); s.Invalidated != len(oldLeases) {
		t.Errorf("IMS invalidated %d tokens, want %d (one per revoked dedicated lease)", s.Invalidated, len(oldLeases))
	}
}

// haSharedMints counts the tokens the emulator issued for a scope set.
func haSharedMints(emu *emulator, scopes string) int {
	want := strings.Split(scopes, ",")
	slices.Sort(want)
	n := 0
	for _, tok := range emu.Tokens() {
		got := slices.Clone(tok.Scopes)
		slices.Sort(got)
		if slices.Equal(got, want) {
			n++
		}
	}
	return n
}
