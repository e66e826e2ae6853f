//go:build !relaydev

package main

import (
	"context"
	"errors"
	"io"
)

// The production binary leaves the dev mode out: it would link test tooling
// (an embedded broker, a Postgres launcher) that a deployed relay never uses.
func cmdDev(context.Context, []string, io.Writer, io.Writer) error {
	return errors.New("this binary was built without the dev mode: run ./dev.sh (go run -tags relaydev ./cmd/relay dev)")
}
