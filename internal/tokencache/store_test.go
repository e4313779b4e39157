package tokencache

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// memStore is a Store in memory that counts its calls and can fail.
type memStore struct {
	mu     sync.Mutex
	tokens map[string]*Token
	loads  int
	saves  int
	err    error
}

func (s *memStore) Load(_ context.Context, key string) (*Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loads++
	if s.err != nil {
		return nil, s.err
	}
	return s.tokens[key], nil
}

func (s *memStore) Save(_ context.Context, key string, tok *Token) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.saves++
	if s.err != nil {
		return s.err
	}
	s.tokens[key] = tok
	return nil
}

func (s *memStore) get(key string) *Token {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokens[key]
}

func newStoreCache(t *testing.T, lifetime time.Duration) (*Cache, *fakeIMS, *fakeClock, *memStore, *[]error) {
	t.Helper()
	clock := newFakeClock()
	ims := &fakeIMS{clock: clock, lifetime: lifetime}
	store := &memStore{tokens: map[string]*Token{}}
	var storeErrs []error
	c := New(ims.mint, Options{
		Now: clock.Now, Store: store, AfterFunc: (&fakeTimers{}).AfterFunc,
		OnStoreError: func(_ string, err error) { storeErrs = append(storeErrs, err) },
	})
	t.Cleanup(c.Close)
	return c, ims, clock, store, &storeErrs
}

var storeScopes = []string{"openid", "AdobeID"}

// TestStoredTokenServesAColdRead: a node with nothing in memory (restarted,
// reloaded, newly elected) uses the stored token instead of minting.
func TestStoredTokenServesAColdRead(t *testing.T) {
	c, ims, clock, store, _ := newStoreCache(t, time.Hour)
	stored := tokenFor(clock, storeScopes, time.Hour)
	store.tokens[Key(storeScopes)] = stored
	clock.Advance(50 * time.Minute) // past its refresh point, before its safe end

	res, err := c.Get(context.Background(), storeScopes)
	if err != nil {
		t.Fatal(err)
	}
	if res.Token.AccessToken != stored.AccessToken || ims.calls.Load() != 0 {
		t.Fatalf("got %s after %d mints, want the stored token and no mint", res.Token.AccessToken, ims.calls.Load())
	}
}

// TestStoredTokenPastItsSafeEndIsMintedAnewAndSaved: a stored token that can
// no longer be leased is not used; the new one is saved for the others.
func TestStoredTokenPastItsSafeEndIsMintedAnewAndSaved(t *testing.T) {
	c, ims, clock, store, _ := newStoreCache(t, time.Hour)
	store.tokens[Key(storeScopes)] = tokenFor(clock, storeScopes, time.Hour)
	clock.Advance(56 * time.Minute)

	res, err := c.Get(context.Background(), storeScopes)
	if err != nil {
		t.Fatal(err)
	}
	if ims.calls.Load() != 1 {
		t.Fatalf("%d mints, want 1", ims.calls.Load())
	}
	if got := store.get(Key(storeScopes)); got != res.Token {
		t.Fatal("the minted token was not saved")
	}
}

// TestRefreshTakesANewerStoredToken: when another node already replaced the
// token, a refresh here takes the stored replacement instead of minting;
// a stored token no newer than the one in memory does not count.
func TestRefreshTakesANewerStoredToken(t *testing.T) {
	c, ims, clock, store, _ := newStoreCache(t, time.Hour)
	first, err := c.Get(context.Background(), storeScopes)
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(41 * time.Minute)

	// The stored token is the one in memory: the refresh mints.
	if _, err := c.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ims.calls.Load() != 2 {
		t.Fatalf("%d mints, want 2: the stored token was no newer than the one in memory", ims.calls.Load())
	}
	second := store.get(Key(storeScopes))
	if second == first.Token {
		t.Fatal("the replacement was not saved")
	}

	// Another node replaces it later and saves its replacement.
	clock.Advance(41 * time.Minute)
	elsewhere := tokenFor(clock, storeScopes, time.Hour)
	store.mu.Lock()
	store.tokens[Key(storeScopes)] = elsewhere
	store.mu.Unlock()
	if _, err := c.Get(context.Background(), storeScopes); err != nil { // marks the token read
		t.Fatal(err)
	}
	if _, err := c.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	res, _ := c.Get(context.Background(), storeScopes)
	if ims.calls.Load() != 2 || res.Token.AccessToken != elsewhere.AccessToken {
		t.Fatalf("%d mints, serving %s; want the stored replacement and no mint", ims.calls.Load(), res.Token.AccessToken)
	}
}

// TestStoreFailuresAreReportedAndMintingGoesOn: a failing store costs
// nothing but a report.
func TestStoreFailuresAreReportedAndMintingGoesOn(t *testing.T) {
	c, ims, _, store, errs := newStoreCache(t, time.Hour)
	store.err = errors.New("storage unavailable")
	if _, err := c.Get(context.Background(), storeScopes); err != nil {
		t.Fatal(err)
	}
	if ims.calls.Load() != 1 || len(*errs) != 2 {
		t.Fatalf("%d mints, %d store errors reported; want 1 and 2 (load and save)", ims.calls.Load(), len(*errs))
	}
}

// TestPurgedMintIsNotSaved: a token minted under a credential that changed
// meanwhile reaches neither memory nor the store.
func TestPurgedMintIsNotSaved(t *testing.T) {
	c, ims, _, store, _ := newStoreCache(t, time.Hour)
	ims.release = make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := c.Get(context.Background(), storeScopes)
		done <- err
	}()
	waitFor(t, func() bool { return ims.calls.Load() == 1 })
	c.Purge()
	close(ims.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if store.get(Key(storeScopes)) != nil || store.saves != 0 {
		t.Fatal("a token minted before the purge was saved")
	}
}

// TestMintFinishingAfterCloseSavesNothing: after Close (an unmount) the cache
// hands the Store nothing: the mount's storage may be gone, and the failed
// save would only be a warning in the log.
func TestMintFinishingAfterCloseSavesNothing(t *testing.T) {
	clock := newFakeClock()
	store := &memStore{tokens: map[string]*Token{}}
	var storeErrs atomic.Int64
	started, release := make(chan struct{}), make(chan struct{})
	mint := func(_ context.Context, scopes []string) (*Token, error) {
		close(started)
		<-release // ignores cancellation, as a slow answer already on its way would
		return tokenFor(clock, scopes, time.Hour), nil
	}
	c := New(mint, Options{Now: clock.Now, Store: store, AfterFunc: (&fakeTimers{}).AfterFunc,
		OnStoreError: func(string, error) { storeErrs.Add(1) }})
	got := make(chan error, 1)
	go func() { _, err := c.Get(context.Background(), storeScopes); got <- err }()
	recv(t, started, "the mint")
	c.Close()
	close(release)
	if err := <-got; err != nil {
		t.Fatalf("get whose mint finished after Close: %v", err)
	}
	store.mu.Lock()
	saves := store.saves
	store.mu.Unlock()
	if saves != 0 || storeErrs.Load() != 0 {
		t.Fatalf("%d saves and %d store errors after Close, want none", saves, storeErrs.Load())
	}
}
