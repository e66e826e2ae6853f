// Package fault classifies errors as fatal (the relay must stop and a human must
// act) or retryable (the pipeline restarts from the slot after a backoff).
//
// Unclassified errors are retryable: restarting from the slot's confirmed
// position can only duplicate events, never lose them, so retrying is the safe
// default; only errors that retrying cannot fix are marked fatal.
package fault

import "errors"

type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

// Fatal marks err as fatal. Fatal(nil) is nil.
func Fatal(err error) error {
	if err == nil {
		return nil
	}
	return &fatalError{err: err}
}

// IsFatal reports whether err, or any error it wraps, was marked fatal.
func IsFatal(err error) bool {
	var f *fatalError
	return errors.As(err, &f)
}
