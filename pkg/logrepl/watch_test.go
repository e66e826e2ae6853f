package logrepl

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// TestWatchRidesOnBeats drives the watch's schedule with status updates
// (beats) and a clock the test hands over one reading at a time, so that
// each beat is judged at the time the test says; the fallback is hours
// away, so only beats trigger checks.
func TestWatchRidesOnBeats(t *testing.T) {
	const interval = time.Hour
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := make(chan time.Time)
	beat := make(chan struct{})
	var checks atomic.Int32
	fatal := errors.New("publication gone")
	done := make(chan error, 1)
	go func() {
		done <- watchLoop(context.Background(), context.Background(), interval, beat, func() time.Time { return <-clock }, func() error {
			if checks.Add(1) == 3 {
				return fatal
			}
			return nil
		})
	}()
	clock <- t0 // the start
	at := func(min int, want int32, what string) {
		t.Helper()
		beat <- struct{}{}
		clock <- t0.Add(time.Duration(min) * time.Minute)
		if want == 3 {
			return
		}
		// The loop takes the next beat only once it has dealt with this one.
		beat <- struct{}{}
		clock <- t0.Add(time.Duration(min) * time.Minute)
		if got := checks.Load(); got != want {
			t.Fatalf("%s: %d checks, want %d", what, got, want)
		}
	}
	at(6, 0, "a status update soon after the start")
	at(48, 1, "the first status update after four fifths of the interval")
	at(90, 1, "a status update 42 minutes after the check")
	at(96, 2, "a status update 48 minutes after the check")
	at(150, 3, "")
	if err := <-done; !errors.Is(err, fatal) {
		t.Fatalf("watch returned %v, want the check's error", err)
	}
}

// TestWatchFallsBackToItsTimer: without status updates the watch still
// checks, every interval without a beat channel.
func TestWatchFallsBackToItsTimer(t *testing.T) {
	stop, cancel := context.WithCancel(context.Background())
	checked := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- watchLoop(context.Background(), stop, time.Millisecond, nil, time.Now, func() error {
			checked <- struct{}{}
			return nil
		})
	}()
	<-checked
	<-checked
	cancel()
	go func() {
		for range checked {
		}
	}()
	if err := <-done; err != nil {
		t.Fatalf("watch returned %v after stop, want nil", err)
	}
	close(checked)
}
