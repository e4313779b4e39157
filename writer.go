package adobeims

import (
	"context"
	"fmt"
	"net/http"
	"sync"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// Operations that change the credential, in Vault or at Adobe. They run one
// at a time on a node (the active one: all of them are forwarded there), so
// that none of them acts on a config another has changed under it.
const (
	opConfigWrite    = "config write"
	opConfigDelete   = "config delete"
	opRoleWrite      = "role write"
	opRotateRoot     = "rotate-root"
	opRotateSchedule = "scheduled rotation"
	opRollback       = "rollback of an interrupted rotation"
)

// writerLock is held across each operation that changes the credential. It is
// a channel rather than a sync.Mutex so that a request gives up when Vault
// cancels it instead of queueing past its deadline.
type writerLock struct {
	slot chan struct{}

	mu     sync.Mutex
	holder string // the operation holding the lock, for the busy error

	// onWait is a test seam: it is told when an operation finds the lock
	// held and starts to wait.
	onWait func(op string)
}

func newWriterLock(onWait func(op string)) *writerLock {
	return &writerLock{slot: make(chan struct{}, 1), onWait: onWait}
}

// tryLock takes the lock if it is free, for work that may as well wait for
// its next turn rather than queue.
func (w *writerLock) tryLock(op string) (unlock func(), ok bool) {
	select {
	case w.slot <- struct{}{}:
		return w.hold(op), true
	default:
		return nil, false
	}
}

// lock waits for the lock until ctx ends, and returns the function that
// releases it.
func (w *writerLock) lock(ctx context.Context, op string) (unlock func(), err error) {
	select {
	case w.slot <- struct{}{}:
	default:
		if w.onWait != nil {
			w.onWait(op)
		}
		select {
		case w.slot <- struct{}{}:
		case <-ctx.Done():
			w.mu.Lock()
			holder := w.holder
			w.mu.Unlock()
			return nil, &busyError{op: op, holder: holder, err: ctx.Err()}
		}
	}
	return w.hold(op), nil
}

// hold records op as the holder of the lock just taken, and returns the
// function that releases it.
func (w *writerLock) hold(op string) func() {
	w.mu.Lock()
	w.holder = op
	w.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			w.mu.Lock()
			w.holder = ""
			w.mu.Unlock()
			<-w.slot
		})
	}
}

// busyError is a request that ran out of time waiting for another operation
// that changes the credential.
type busyError struct {
	op, holder string
	err        error
}

func (e *busyError) Error() string {
	holder := e.holder
	if holder == "" {
		holder = "another operation on the credential"
	}
	return fmt.Sprintf("%s gave up waiting for a %s to finish (%v): operations that change the credential run one at a time; try again", e.op, holder, e.err)
}

func (e *busyError) Unwrap() error { return e.err }

// exclusively runs a request's handler under the writer lock. A request that
// cannot get it in time answers 503, which clients may retry.
func (b *backend) exclusively(op string, handler framework.OperationFunc) framework.OperationFunc {
	return func(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
		unlock, err := b.writer.lock(ctx, op)
		if err != nil {
			return nil, logical.CodedError(http.StatusServiceUnavailable, err.Error())
		}
		defer unlock()
		return handler(ctx, req, d)
	}
}
