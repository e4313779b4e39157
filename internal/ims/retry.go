package ims

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"syscall"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/imsgate"
	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/redact"
)

const (
	// maxBody bounds what is read of a response; IMS answers are tiny.
	maxBody = 1 << 20
	// minAttemptBudget is the least time worth starting another attempt
	// with: less cannot fit a connection and an answer, and would trade a
	// meaningful error for a timeout.
	minAttemptBudget = 100 * time.Millisecond
	// maxRetryAfter caps an absurd Retry-After before it meets the budget.
	maxRetryAfter = 24 * time.Hour
)

// retryPolicy says whether an attempt's outcome may be tried again.
type retryPolicy func(resp *http.Response, err error) bool

// idempotent is for requests that may be repeated freely: throttling,
// server errors (except 501) and network errors, but never a certificate
// the host does not trust.
func idempotent(resp *http.Response, err error) bool {
	if err != nil {
		return !isCertError(err)
	}
	return resp.StatusCode == http.StatusTooManyRequests ||
		resp.StatusCode >= 500 && resp.StatusCode != http.StatusNotImplemented
}

// notProcessed is for requests that must not run twice: it retries only
// when the server cannot have acted on the request.
func notProcessed(resp *http.Response, err error) bool {
	if err != nil {
		var op *net.OpError
		return errors.As(err, &op) && op.Op == "dial" && errors.Is(err, syscall.ECONNREFUSED)
	}
	return resp.StatusCode == http.StatusTooManyRequests
}

// call is the state of one logical request across its attempts. It is used
// by one goroutine only.
type call struct {
	t        *transport
	op       string
	retry    retryPolicy
	start    time.Time
	deadline time.Time
	secrets  []string
	// gate is set for requests to IMS on behalf of the credential; throttled
	// is set once the gate says the call must not try again.
	gate      *imsgate.Gate
	epoch     uint64 // the gate's epoch of the credential the call is for
	throttled error  // an *imsgate.ThrottledError

	attempts     int
	attemptStart time.Time
	wait         time.Duration
	final        *http.Response
	body         bytes.Buffer // RoundTrip's copy of the final body
	bodyErr      error        // RoundTrip's caller failed reading the body
}

// String, GoString and Format print what the call is and how far it got,
// never its secrets or the body it read, which may hold a token.
func (c call) String() string                { return fmt.Sprint(c.withoutSecrets()) }
func (c call) GoString() string              { return fmt.Sprintf("%#v", c.withoutSecrets()) }
func (c call) Format(f fmt.State, verb rune) { redact.Format(f, verb, c.withoutSecrets()) }

// redactedCall is what formatting a call shows.
type redactedCall struct {
	Op       string
	Attempts int
	Secrets  string
	BodyLen  int
}

func (c call) withoutSecrets() redactedCall {
	v := redactedCall{Op: c.op, Attempts: c.attempts, BodyLen: c.body.Len()}
	if len(c.secrets) > 0 {
		v.Secrets = redact.Marker
	}
	return v
}

// newCall starts a call bounded by the transport's MaxElapsed. The returned
// context must be used for the call's requests; cancel it when done.
func (t *transport) newCall(ctx context.Context, op string, retry retryPolicy, secrets ...string) (*call, context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, t.maxElapsed)
	deadline, _ := ctx.Deadline()
	return &call{t: t, op: op, retry: retry, start: time.Now(), deadline: deadline, secrets: secrets}, ctx, cancel
}

// send runs req with retries and returns the last attempt's response with
// its body unread, or an *Error when no response came.
func (c *call) send(req *http.Request) (*http.Response, error) {
	orig := req.Body
	rreq, err := retryablehttp.FromRequest(req) // buffers the body, for replays
	if orig != nil {
		_ = orig.Close() // read side, and FromRequest has read it: a close error loses nothing
	}
	if err != nil {
		return nil, c.fail(nil, localErrorf("preparing the request: %v", err))
	}
	rc := &retryablehttp.Client{
		HTTPClient:   c.t.http,
		Logger:       nil, // its messages carry URLs; attempts are logged in checkRetry
		RetryWaitMin: c.t.waitMin,
		RetryWaitMax: c.t.waitMax,
		RetryMax:     c.t.retryMax,
		CheckRetry:   c.checkRetry,
		Backoff:      func(time.Duration, time.Duration, int, *http.Response) time.Duration { return c.wait },
		// The last response reaches the caller, so its error body is parsed.
		ErrorHandler: retryablehttp.PassthroughErrorHandler,
		RequestLogHook: func(retryablehttp.Logger, *http.Request, int) {
			c.attemptStart = time.Now()
		},
	}
	resp, err := rc.Do(rreq)
	if err != nil {
		if resp != nil {
			_ = resp.Body.Close() // the response is dropped; a close error loses nothing
		}
		return nil, c.transportError(req.Context(), err)
	}
	c.final = resp
	return resp, nil
}

// do runs req with retries and reads the final body.
func (c *call) do(req *http.Request) (*http.Response, []byte, error) {
	resp, err := c.send(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close() //nolint:errcheck // read side: the body is read up to maxBody; a close error loses nothing
	body, err := io.ReadAll(&limitedBody{ReadCloser: resp.Body})
	if err != nil {
		return nil, nil, c.fail(resp, fmt.Errorf("reading the response: %w", stripURL(err)))
	}
	return resp, body, nil
}

// limitedBody reads a response body up to maxBody bytes and fails the read
// that finds more, rather than ending there as io.LimitReader would: a body
// cut short can still parse, as a JSON object followed by padding does.
// It looks for the byte past the limit in the read that reaches the limit,
// so that a caller reading through a limit of its own (oauth2 stops at 1 MiB)
// still gets the error.
type limitedBody struct {
	io.ReadCloser
	n int // bytes returned so far
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.n >= maxBody {
		return 0, b.probe()
	}
	p = p[:min(len(p), maxBody-b.n)]
	n, err := b.ReadCloser.Read(p)
	b.n += n
	if err == nil && b.n >= maxBody {
		err = b.probe()
	}
	return n, err
}

// probe reads one byte past the limit: an error saying the body is too
// large if there is one, io.EOF if the body ended at the limit.
func (b *limitedBody) probe() error {
	var one [1]byte
	if _, err := io.ReadFull(b.ReadCloser, one[:]); err != nil {
		return err // io.EOF when the body ended exactly at the limit
	}
	return localErrorf("the response body is larger than %d MiB, the most this client reads: it was not read to its end", maxBody>>20)
}

// RoundTrip lets oauth2 send through the call, and keeps a copy of the final
// body so that a response oauth2 rejects can be diagnosed without oauth2's
// error text, which quotes the body.
func (c *call) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.send(req)
	if err != nil {
		return nil, err
	}
	resp.Body = &teeBody{ReadCloser: &limitedBody{ReadCloser: resp.Body}, c: c}
	return resp, nil
}

type teeBody struct {
	io.ReadCloser
	c *call
}

// String, GoString and Format print the call the body belongs to, redacted:
// for a verb such as %s, fmt would print the call field by field.
func (t teeBody) String() string                { return fmt.Sprint(t.withoutSecrets()) }
func (t teeBody) GoString() string              { return fmt.Sprintf("%#v", t.withoutSecrets()) }
func (t teeBody) Format(f fmt.State, verb rune) { redact.Format(f, verb, t.withoutSecrets()) }

// redactedTeeBody is what formatting a teeBody shows.
type redactedTeeBody struct{ Call *call }

func (t teeBody) withoutSecrets() redactedTeeBody { return redactedTeeBody{Call: t.c} }

func (t *teeBody) Read(p []byte) (int, error) {
	n, err := t.ReadCloser.Read(p)
	if room := maxBody - t.c.body.Len(); room > 0 {
		t.c.body.Write(p[:min(n, room)])
	}
	if err != nil && err != io.EOF {
		t.c.bodyErr = err
	}
	return n, err
}

// checkRetry runs after every attempt: it decides whether to try again and
// how long to wait, then logs and reports the attempt.
func (c *call) checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	c.attempts++
	a := Attempt{Op: c.op, Number: c.attempts, Duration: time.Since(c.attemptStart)}
	if resp != nil {
		a.Status = resp.StatusCode
		a.DebugID = quote(resp.Header.Get("x-debug-id"), maxDebugIDLen, c.secrets)
	}
	if err != nil {
		a.Err = scrubErr(stripURL(err), c.secrets)
	}

	c.noteThrottle(resp)
	c.wait = 0
	if ctx.Err() == nil && c.throttled == nil && c.attempts <= c.t.retryMax && c.retry(resp, err) {
		c.wait = c.backoff(resp)
		c.awaitThrottle()
		// Sleeping past the bound would only end in a timeout; the answer
		// already in hand tells the operator more.
		a.Retrying = c.throttled == nil && time.Until(c.deadline)-c.wait >= minAttemptBudget
	}

	args := []any{"op", a.Op, "attempt", a.Number, "status", a.Status, "duration", a.Duration, "x_debug_id", a.DebugID, "retrying", a.Retrying}
	if a.Retrying {
		args = append(args, "wait", c.wait)
	}
	if a.Err != nil {
		args = append(args, "error", a.Err.Error())
	}
	c.t.logger.Debug("adobe request attempt", args...)
	if c.t.onAttempt != nil {
		c.t.onAttempt(a)
	}
	// Never an error: the attempt's own response or error must reach the
	// caller, not a replacement.
	return a.Retrying, nil
}

// noteThrottle tells the gate what IMS answered. IMS throttling the
// credential for longer than a read should wait (a 429 or 503 with a
// Retry-After beyond imsgate.MaxWait, or a 429 without one, whose length is
// unknown) ends the call: the gate holds back every request until then.
func (c *call) noteThrottle(resp *http.Response) {
	if c.gate == nil || resp == nil {
		return
	}
	switch resp.StatusCode {
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
	default:
		if resp.StatusCode >= 200 && resp.StatusCode < 300 {
			c.gate.Succeeded()
		}
		return
	}
	if d, ok := retryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
		c.throttled = c.gate.ThrottleFor(c.epoch, d)
	} else if resp.StatusCode == http.StatusTooManyRequests {
		c.throttled = c.gate.ThrottleUnknownFor(c.epoch)
	}
}

// awaitThrottle stretches the wait before a retry to the end of a throttle
// another call has met, or ends the call if that is beyond imsgate.MaxWait.
func (c *call) awaitThrottle() {
	d, terr := c.gate.Check()
	if terr != nil {
		c.throttled = terr
		return
	}
	c.wait = max(c.wait, d)
}

// backoff is exponential with equal jitter, unless the server said when to
// come back: Retry-After is honoured on every response that is retried, as
// Adobe's own networking library does.
func (c *call) backoff(resp *http.Response) time.Duration {
	if resp != nil {
		if d, ok := retryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
			return d
		}
	}
	return jitteredBackoff(c.t.waitMin, c.t.waitMax, c.attempts)
}

// jitteredBackoff returns a wait in [ceiling/2, ceiling], ceiling doubling
// from waitMin per attempt up to waitMax, and never below waitMin.
func jitteredBackoff(waitMin, waitMax time.Duration, attempt int) time.Duration {
	ceiling := waitMax
	if shift := attempt - 1; shift < 32 {
		if d := waitMin << shift; d > 0 && d < waitMax {
			ceiling = d
		}
	}
	half := ceiling / 2
	return max(waitMin, half+rand.N(half+1)) //nolint:gosec // G404: retry jitter needs no unpredictability
}

// retryAfter reads a Retry-After header: delay-seconds or an HTTP date.
func retryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		return time.Duration(min(secs, int64(maxRetryAfter/time.Second))) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return min(max(t.Sub(now), 0), maxRetryAfter), true
}

func (c *call) newError(resp *http.Response) *Error {
	e := &Error{Op: c.op, Attempts: c.attempts, redact: c.secrets}
	if resp != nil {
		e.StatusCode = resp.StatusCode
		e.DebugID = quote(resp.Header.Get("x-debug-id"), maxDebugIDLen, c.secrets)
	}
	return e
}

// finish scrubs e of the call's secrets and adds the hint.
func (c *call) finish(e *Error) *Error {
	e.Code = scrub(e.Code, c.secrets)
	e.Description = scrub(e.Description, c.secrets)
	e.Err = scrubErr(e.Err, c.secrets)
	if c.throttled != nil {
		if e.Err == nil {
			e.Err = c.throttled
		} else {
			e.Err = fmt.Errorf("%w; %w", e.Err, c.throttled)
		}
	}
	e.Hint = hint(e)
	return e
}

// fail describes a call that failed for cause, after resp if there is one.
func (c *call) fail(resp *http.Response, cause error) *Error {
	e := c.newError(resp)
	e.Err = cause
	return c.finish(e)
}

// responseError describes a response that is not the expected success.
func (c *call) responseError(resp *http.Response, body []byte) *Error {
	e := c.newError(resp)
	parseErrorBody(e, resp.Header, body)
	return c.finish(e)
}

// transportError describes a call that got no response.
func (c *call) transportError(ctx context.Context, err error) *Error {
	err = stripURL(err)
	var netErr net.Error
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		err = fmt.Errorf("gave up after %s: %w", time.Since(c.start).Round(time.Millisecond), err)
	case errors.As(err, &netErr) && netErr.Timeout():
		err = fmt.Errorf("no answer within %s: %w", c.t.http.Timeout, err)
	}
	return c.fail(nil, err)
}

// stripURL drops url.Error's wrapping: the URL adds nothing the operator
// does not know, and a URL is the one place a transport error could quote
// something sensitive.
func stripURL(err error) error {
	for {
		ue, ok := err.(*url.Error) //nolint:errorlint // only a *url.Error at the top of the chain can be peeled off; one deeper sits behind text that may already quote the URL
		if !ok {
			return err
		}
		err = ue.Err
	}
}
