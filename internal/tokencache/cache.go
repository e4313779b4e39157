// Package tokencache holds the shared Adobe IMS access tokens: one token per
// credential and scope set, reused by every reader until it nears its end.
//
// The rules, in the order a token lives through them:
//
//   - A token is fresh from the moment it is minted until two thirds of its
//     lifetime have passed (its refresh point). Readers get it without any
//     call to IMS.
//   - At the refresh point a replacement is minted in the background, if the
//     token was read during its life: by a timer set when the token was
//     stored, or else by the first reader that notices, or by Refresh, which
//     the plugin runs periodically. The old token is served until then, and
//     readers never wait for the replacement.
//   - A token is served until its safe end: its expiry less a safety margin of
//     a tenth of its lifetime, at most five minutes. A lease handed out from a
//     token never outlives that safe end. Past it, a reader must wait for a
//     new token.
//   - Concurrent readers that find no servable token share one IMS request.
//   - With a Store, a token another process or node saved is used before
//     minting: by a reader that finds no servable token in memory, if it is
//     servable, and by a replacement, if it is newer and not itself due.
//     Every token minted is saved there.
//   - At most one background refresh runs per scope set: readers past the
//     refresh point while it is under way neither start another nor wait for
//     it, and a failed refresh is reported once, then retried after a back-off.
//   - Purge starts a new generation: a token minted before it, in the cache
//     or by a caller handing it to Put, is never stored after it.
//   - Close stops everything: no timer stays armed, background refreshes are
//     cancelled and waited for, and their failures are not reported.
//
// Nothing here knows about Vault; time comes from an injected clock.
package tokencache

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/redact"
)

// Token is one IMS access token and the moments that govern its reuse.
type Token struct {
	AccessToken string
	TokenType   string
	Scopes      []string
	MintedAt    time.Time
	ExpiresAt   time.Time
}

// String, GoString and Format print the token with its value replaced by
// redact.Marker, whatever the verb: a log line, an error or a panic message
// that formats a Token cannot carry it.
func (t Token) String() string                { return fmt.Sprint(t.withoutSecrets()) }
func (t Token) GoString() string              { return fmt.Sprintf("%#v", t.withoutSecrets()) }
func (t Token) Format(f fmt.State, verb rune) { redact.Format(f, verb, t.withoutSecrets()) }

// redactedToken is a Token without its methods, to be formatted.
type redactedToken Token

func (t Token) withoutSecrets() redactedToken {
	v := redactedToken(t)
	v.AccessToken = redact.Secret(t.AccessToken)
	return v
}

// Lifetime is how long the token was issued for.
func (t *Token) Lifetime() time.Duration { return t.ExpiresAt.Sub(t.MintedAt) }

// SafetyMargin is how long before its expiry a token stops being handed out:
// a tenth of its lifetime, at most five minutes. That is five minutes for
// Adobe's 24-hour tokens and two seconds for the 20-second tokens of tests.
func (t *Token) SafetyMargin() time.Duration {
	return min(t.Lifetime()/10, MaxSafetyMargin)
}

// SafeEnd is the last moment the token is handed out; leases end by then.
func (t *Token) SafeEnd() time.Time { return t.ExpiresAt.Add(-t.SafetyMargin()) }

// RefreshAt is when a replacement is minted ahead of time: once a third of
// the token's lifetime is left.
func (t *Token) RefreshAt() time.Time { return t.MintedAt.Add(t.Lifetime() * 2 / 3) }

// MaxSafetyMargin bounds SafetyMargin for long-lived tokens.
const MaxSafetyMargin = 5 * time.Minute

// MintFunc asks IMS for a new token with the given (sorted) scopes.
type MintFunc func(ctx context.Context, scopes []string) (*Token, error)

// Options configure a Cache.
type Options struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// MintTimeout bounds one shared mint, which outlives the reader that
	// started it so that a cancelled reader does not fail the others.
	MintTimeout time.Duration
	// RetryBackoff is how long background refreshes of a scope set wait after
	// a failure before trying again: it doubles from RetryBackoff up to
	// MaxRetryBackoff.
	RetryBackoff, MaxRetryBackoff time.Duration
	// OnBackgroundError is told about failed background refreshes.
	OnBackgroundError func(key string, err error)
	// Store, if set, is asked for a token before each mint and given each
	// token minted.
	Store Store
	// OnStoreError is told when the Store fails; the cache goes on.
	OnStoreError func(key string, err error)
	// AfterFunc runs f after d, like time.AfterFunc, which nil means. Tests
	// replace it to fire refreshes without waiting.
	AfterFunc func(d time.Duration, f func()) Stopper
}

// Store keeps tokens beyond this process, so that a restarted node, a
// reloaded plugin or another node reuses a token instead of minting one. The
// cache asks it before every mint and hands it every token it mints. It is
// best effort: its errors are reported and the cache goes on without it.
type Store interface {
	// Load returns the token stored for a scope set key, or nil.
	Load(ctx context.Context, key string) (*Token, error)
	// Save stores a token minted for a scope set key.
	Save(ctx context.Context, key string, tok *Token) error
}

// Stopper stops a scheduled call; *time.Timer is one.
type Stopper interface{ Stop() bool }

// Cache is safe for concurrent use.
type Cache struct {
	mint MintFunc
	opts Options

	generation atomic.Uint64 // bumped by Purge so in-flight mints are not stored
	flight     singleflight.Group

	// entries is copied on write: a cache hit reads it without a lock, and
	// scope sets are few and seldom added, so copying it costs nothing that
	// matters. Writers hold mu.
	mu      sync.Mutex
	entries atomic.Pointer[map[string]*entry]

	bgCtx    context.Context
	bgCancel context.CancelFunc
	bgWG     sync.WaitGroup
	bgMu     sync.Mutex  // orders bgWG.Add after Close's Wait
	closed   atomic.Bool // set under bgMu, so no bgWG.Add follows Close's Wait

	// testHookBeforeStore, if set, runs when a token has passed the
	// generation check and is about to be stored, so that tests can land a
	// Purge there.
	testHookBeforeStore func()
	// testHookBeforeRefreshFlight, if set, runs in Refresh once it found the
	// token of key due, before it joins or starts the flight, so that tests
	// can land another refresh there.
	testHookBeforeRefreshFlight func(key string)
}

type entry struct {
	key      string
	token    atomic.Pointer[Token]
	lastUsed atomic.Int64 // unix nanos of the last read
	// refreshing is set while a background refresh goroutine runs for this
	// entry, so that readers past the refresh point start no other.
	refreshing atomic.Bool
	// retryAfter is nextAttempt in unix nanos (0 for none), so that readers
	// past the refresh point check the back-off without locking.
	retryAfter atomic.Int64

	mu    sync.Mutex // guards the fields below
	timer Stopper    // the scheduled replacement of the current token
	// retired is set once Drop or Purge removed the entry: a timer armed on
	// it would only keep the old token alive, so none is.
	retired     bool
	failures    int
	lastErr     error
	lastErrAt   time.Time
	nextAttempt time.Time
}

// String, GoString and Format print the entry's key and token, redacted,
// and nothing guarded by mu, so that they take no lock. Without them, fmt
// would print lastErr (a caller's error, which may keep secrets to scrub)
// field by field for a verb such as %s.
func (e *entry) String() string                { return fmt.Sprint(e.withoutSecrets()) }
func (e *entry) GoString() string              { return fmt.Sprintf("%#v", e.withoutSecrets()) }
func (e *entry) Format(f fmt.State, verb rune) { redact.Format(f, verb, e.withoutSecrets()) }

// redactedEntry is what formatting an entry shows.
type redactedEntry struct {
	Key   string
	Token *Token
}

func (e *entry) withoutSecrets() redactedEntry {
	return redactedEntry{Key: e.key, Token: e.token.Load()}
}

// New returns an empty cache that mints through mint.
func New(mint MintFunc, opts Options) *Cache {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MintTimeout <= 0 {
		opts.MintTimeout = time.Minute
	}
	if opts.RetryBackoff <= 0 {
		opts.RetryBackoff = 5 * time.Second
	}
	if opts.MaxRetryBackoff <= 0 {
		opts.MaxRetryBackoff = 5 * time.Minute
	}
	if opts.AfterFunc == nil {
		opts.AfterFunc = func(d time.Duration, f func()) Stopper { return time.AfterFunc(d, f) }
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Cache{mint: mint, opts: opts, bgCtx: ctx, bgCancel: cancel}
	c.entries.Store(&map[string]*entry{})
	return c
}

// Key is the cache key of a scope set: sorted and comma-joined, so that the
// same scopes in any order share one token.
func Key(scopes []string) string {
	return string(appendKey(nil, scopes))
}

// appendKey appends the key of scopes to dst. Scopes are sorted in a copy on
// the stack, so that Get, with dst on the stack too, finds a cached token
// without allocating.
func appendKey(dst []byte, scopes []string) []byte {
	var buf [16]string
	s := append(buf[:0], scopes...)
	slices.Sort(s)
	for i, scope := range slices.Compact(s) {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, scope...)
	}
	return dst
}

// Result is what Get returns: the token and how it was obtained.
type Result struct {
	Token *Token
	// Hit is true when no reader had to wait for IMS.
	Hit bool
}

// Get returns a servable token for scopes, minting one if none is.
func (c *Cache) Get(ctx context.Context, scopes []string) (Result, error) {
	var buf [512]byte
	k := appendKey(buf[:0], scopes)
	e := (*c.entries.Load())[string(k)] // no allocation: the compiler reads k in place
	if e == nil {
		e = c.entry(string(k))
	}
	key := e.key
	now := c.opts.Now()
	e.lastUsed.Store(now.UnixNano())

	if tok := e.token.Load(); tok != nil && now.Before(tok.SafeEnd()) {
		if !now.Before(tok.RefreshAt()) {
			c.refreshInBackground(key, e)
		}
		return Result{Token: tok, Hit: true}, nil
	}

	ch := c.flight.DoChan(c.flightKey(key), func() (any, error) { //nolint:contextcheck // a shared mint runs on the cache's context; one caller's cancellation must not fail the flight
		// A mint that finished after this reader looked has already stored
		// a servable token.
		if tok := e.token.Load(); tok != nil && c.opts.Now().Before(tok.SafeEnd()) {
			return tok, nil
		}
		return c.mintAndStore(key, e)
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return Result{}, res.Err
		}
		// This reader uses the new token: it counts as read during its life.
		e.lastUsed.Store(c.opts.Now().UnixNano())
		return Result{Token: res.Val.(*Token)}, nil
	case <-ctx.Done():
		return Result{}, fmt.Errorf("waiting for a new IMS token: %w", ctx.Err())
	}
}

// Generation identifies the credential the cache's tokens belong to: Purge
// moves it on. A caller that mints a token outside the cache reads it once
// its credential is the current one (right after the Purge that retired the
// previous one) and hands it to Put with the token.
func (c *Cache) Generation() uint64 { return c.generation.Load() }

// Put stores a token minted elsewhere (for example while verifying a new
// config) so readers reuse it instead of minting another, and reports whether
// it did. It does not if the cache was purged since generation gen, since the
// token may come from a credential that no longer applies, nor once the cache
// is closed.
func (c *Cache) Put(tok *Token, gen uint64) bool {
	key := Key(tok.Scopes)
	c.mu.Lock()
	kept := !c.closed.Load() && c.generation.Load() == gen && c.storeLocked(c.entryLocked(key), tok, gen)
	c.mu.Unlock()
	if kept {
		c.save(key, tok)
	}
	return kept
}

// save hands a token the cache kept to the Store, if there is one.
//
// It runs on the cache's context, not a caller's: the token is kept for
// every reader, and the caller that handed it over going away must not lose it.
//
//nolint:contextcheck // by design, as above; this also spares Put's callers
func (c *Cache) save(key string, tok *Token) {
	// After Close (an unmount) the Store may be gone with the mount.
	if c.opts.Store == nil || c.closed.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(c.bgCtx, c.opts.MintTimeout)
	defer cancel()
	if err := c.opts.Store.Save(ctx, key, tok); err != nil && c.opts.OnStoreError != nil {
		c.opts.OnStoreError(key, err)
	}
}

// Drop forgets the token of one scope set.
func (c *Cache) Drop(scopes []string) {
	key := Key(scopes)
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := (*c.entries.Load())[key]; !ok {
		return
	}
	m := maps.Clone(*c.entries.Load())
	m[key].retire()
	delete(m, key)
	c.entries.Store(&m)
}

// Purge forgets every token, and makes mints already in flight not store
// theirs: they were made with a credential that may no longer apply.
func (c *Cache) Purge() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.generation.Add(1)
	for _, e := range *c.entries.Load() {
		e.retire()
	}
	c.entries.Store(&map[string]*entry{})
}

// Refresh mints replacements for tokens past their refresh point that were
// read during their life, honouring the back-off after failures. It returns
// how many tokens it replaced. Readers keep being served the old tokens.
func (c *Cache) Refresh(ctx context.Context) (int, error) {
	now := c.opts.Now()
	var errs []error
	refreshed := 0
	for key, e := range *c.entries.Load() {
		tok := e.token.Load()
		if tok == nil || now.Before(tok.RefreshAt()) || !e.readSince(tok.MintedAt) || !e.mayAttempt(now) {
			continue
		}
		if c.testHookBeforeRefreshFlight != nil {
			c.testHookBeforeRefreshFlight(key)
		}
		_, err, _ := c.flight.Do(c.flightKey(key), func() (any, error) { //nolint:contextcheck // a shared mint runs on the cache's context; one caller's cancellation must not fail the flight
			return c.replaceIfDue(key, e)
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("refreshing token for scopes %q: %w", key, err))
		} else {
			refreshed++
		}
		if ctx.Err() != nil {
			break
		}
	}
	return refreshed, errors.Join(errs...)
}

// Close stops background refreshes and waits for them to end. Afterwards no
// timer is armed, none is armed again, and failures of the cancelled
// refreshes are not reported: the cache is going away with its mount.
func (c *Cache) Close() {
	c.bgMu.Lock()
	c.closed.Store(true)
	c.bgMu.Unlock()
	c.bgCancel()
	// An entry added after this snapshot sees closed before arming a timer;
	// one in it either armed its timer before stopTimer or sees closed: both
	// take e.mu.
	for _, e := range *c.entries.Load() {
		e.stopTimer()
	}
	c.bgWG.Wait()
}

// State describes one cached scope set, for operators. It never holds the token.
type State struct {
	Scopes      string
	MintedAt    time.Time
	ExpiresAt   time.Time
	RefreshAt   time.Time
	SafeEnd     time.Time
	LastUsed    time.Time
	LastError   string
	LastErrorAt time.Time
	NextAttempt time.Time
	Failures    int // consecutive failed mints since the last success
}

// States lists the cached scope sets, sorted by scopes.
func (c *Cache) States() []State {
	var out []State
	for key, e := range *c.entries.Load() {
		s := State{Scopes: key}
		if tok := e.token.Load(); tok != nil {
			s.MintedAt, s.ExpiresAt, s.RefreshAt, s.SafeEnd = tok.MintedAt, tok.ExpiresAt, tok.RefreshAt(), tok.SafeEnd()
		}
		if n := e.lastUsed.Load(); n != 0 {
			s.LastUsed = time.Unix(0, n).UTC()
		}
		e.mu.Lock()
		if e.lastErr != nil {
			s.LastError, s.LastErrorAt = e.lastErr.Error(), e.lastErrAt
		}
		s.NextAttempt, s.Failures = e.nextAttempt, e.failures
		e.mu.Unlock()
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b State) int { return strings.Compare(a.Scopes, b.Scopes) })
	return out
}

func (c *Cache) entry(key string) *entry {
	if e := (*c.entries.Load())[key]; e != nil {
		return e
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.entryLocked(key)
}

// entryLocked is entry for a caller holding c.mu.
func (c *Cache) entryLocked(key string) *entry {
	old := *c.entries.Load()
	if e := old[key]; e != nil {
		return e
	}
	m := make(map[string]*entry, len(old)+1)
	maps.Copy(m, old)
	e := &entry{key: key}
	m[key] = e
	c.entries.Store(&m)
	return e
}

// flightKey ties a mint to the cache generation, so a reader arriving after a
// Purge never joins a mint made with the old credential.
func (c *Cache) flightKey(key string) string {
	return fmt.Sprintf("%d/%s", c.generation.Load(), key)
}

// replaceIfDue replaces e's token if it is still due, inside the flight:
// another refresh (a reader's, the timer's or the periodic one) may have
// replaced it since the caller looked, and minting again would spend an IMS
// call on a token nobody needs.
func (c *Cache) replaceIfDue(key string, e *entry) (*Token, error) {
	if tok := e.token.Load(); tok != nil && c.opts.Now().Before(tok.RefreshAt()) {
		return tok, nil
	}
	return c.mintAndStore(key, e)
}

func (c *Cache) mintAndStore(key string, e *entry) (*Token, error) {
	gen := c.generation.Load()
	ctx, cancel := context.WithTimeout(c.bgCtx, c.opts.MintTimeout)
	defer cancel()
	if tok := c.loadStored(ctx, key, e); tok != nil {
		e.recordSuccess()
		c.mu.Lock()
		c.storeLocked(e, tok, gen)
		c.mu.Unlock()
		return tok, nil
	}
	tok, err := c.mint(ctx, strings.Split(key, ","))
	if err != nil {
		e.recordFailure(c.opts.Now(), err, c.opts.RetryBackoff, c.opts.MaxRetryBackoff)
		return nil, err
	}
	e.recordSuccess()
	c.mu.Lock()
	kept := c.storeLocked(e, tok, gen)
	c.mu.Unlock()
	if kept {
		c.save(key, tok)
	}
	return tok, nil
}

// loadStored returns the Store's token for key when it serves where a mint
// was about to: servable, newer than the token e has, and, while e's token
// is still servable (a replacement ahead of time), not itself due for
// replacement. Otherwise nil.
func (c *Cache) loadStored(ctx context.Context, key string, e *entry) *Token {
	if c.opts.Store == nil {
		return nil
	}
	tok, err := c.opts.Store.Load(ctx, key)
	if err != nil {
		if c.opts.OnStoreError != nil {
			c.opts.OnStoreError(key, err)
		}
		return nil
	}
	now := c.opts.Now()
	if tok == nil || !now.Before(tok.SafeEnd()) {
		return nil
	}
	if cur := e.token.Load(); cur != nil {
		if !tok.ExpiresAt.After(cur.ExpiresAt) || (now.Before(cur.SafeEnd()) && !now.Before(tok.RefreshAt())) {
			return nil
		}
	}
	return tok
}

// storeLocked makes tok the token of e and schedules its replacement, unless
// the cache was purged since generation gen or e was dropped: then tok may
// come from a credential that no longer applies. The caller holds c.mu, which
// Purge and Drop take, so that neither can land between check and store.
func (c *Cache) storeLocked(e *entry, tok *Token, gen uint64) bool {
	if c.generation.Load() != gen || (*c.entries.Load())[e.key] != e {
		return false
	}
	if c.testHookBeforeStore != nil {
		c.testHookBeforeStore()
	}
	e.token.Store(tok)
	c.scheduleRefresh(e, tok, tok.RefreshAt())
	return true
}

// scheduleRefresh arranges for tok to be replaced at its refresh point (or
// at a retry after a failed replacement), so a token in use is replaced
// before any reader finds it old, without waiting for the periodic Refresh.
// It arms nothing once the cache is closed or e retired, nor for a token
// already replaced: a late retry of an old token must not cancel the
// replacement scheduled for its successor.
func (c *Cache) scheduleRefresh(e *entry, tok *Token, at time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.retired || c.closed.Load() || e.token.Load() != tok {
		return
	}
	if e.timer != nil {
		e.timer.Stop()
	}
	e.timer = c.opts.AfterFunc(max(at.Sub(c.opts.Now()), 0), func() { c.refreshDue(e, tok) })
}

// refreshDue replaces tok unless it was replaced, dropped or left unread
// since it was minted: a scope set nobody reads is left to expire.
func (c *Cache) refreshDue(e *entry, tok *Token) {
	if (*c.entries.Load())[e.key] != e || e.token.Load() != tok || !e.readSince(tok.MintedAt) {
		return
	}
	c.refreshInBackground(e.key, e)
}

// refreshInBackground starts replacing e's token in a goroutine of its own,
// unless one is already running for e, the back-off after a failure is not
// over, or the cache is closed. Every reader past the refresh point calls it,
// so while a refresh runs it costs an atomic load: a hanging IMS request must
// not gather a goroutine, nor later a failure report, per reader.
func (c *Cache) refreshInBackground(key string, e *entry) {
	now := c.opts.Now()
	if e.refreshing.Load() || !e.mayAttempt(now) || !e.refreshing.CompareAndSwap(false, true) {
		return
	}
	// A refresh that failed between the checks and the swap set a back-off.
	if !e.mayAttempt(now) || !c.startBackground() {
		e.refreshing.Store(false)
		return
	}
	old := e.token.Load()
	go func() {
		defer c.bgWG.Done()
		_, err, _ := c.flight.Do(c.flightKey(key), func() (any, error) {
			return c.replaceIfDue(key, e)
		})
		// Cleared before the retry below is armed: a retry that fired while
		// this refresh still counted as running would start nothing. The
		// failure's back-off keeps readers from starting one meanwhile.
		e.refreshing.Store(false)
		// Once closed, the failure is the cancellation by Close, or moot.
		if err == nil || c.closed.Load() {
			return
		}
		if c.opts.OnBackgroundError != nil {
			c.opts.OnBackgroundError(key, err)
		}
		// Try again after the back-off while the old token is still served.
		if next := e.nextAttemptAt(); old != nil && next.Before(old.SafeEnd()) {
			c.scheduleRefresh(e, old, next)
		}
	}()
}

// startBackground counts a background goroutine about to start in bgWG, or
// reports false once the cache is closed.
func (c *Cache) startBackground() bool {
	c.bgMu.Lock()
	defer c.bgMu.Unlock()
	if c.closed.Load() {
		return false
	}
	c.bgWG.Add(1)
	return true
}

// retire stops e's timer and keeps any from being armed again: e was removed
// from the cache.
func (e *entry) retire() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.retired = true
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
}

func (e *entry) stopTimer() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
}

func (e *entry) nextAttemptAt() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.nextAttempt
}

func (e *entry) readSince(t time.Time) bool { return e.lastUsed.Load() >= t.UnixNano() }

func (e *entry) mayAttempt(now time.Time) bool { return now.UnixNano() >= e.retryAfter.Load() }

func (e *entry) recordFailure(now time.Time, err error, base, limit time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.failures++
	wait := base << min(e.failures-1, 20)
	if wait <= 0 || wait > limit {
		wait = limit
	}
	e.lastErr, e.lastErrAt, e.nextAttempt = err, now, now.Add(wait)
	e.retryAfter.Store(e.nextAttempt.UnixNano())
}

func (e *entry) recordSuccess() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.failures, e.lastErr, e.lastErrAt, e.nextAttempt = 0, nil, time.Time{}, time.Time{}
	e.retryAfter.Store(0)
}
