package testutil

import (
	"context"
	"testing"
	"time"
)

// RunInBackground runs run (a Run loop: a controller, the protector) on
// its own goroutine until the end of the test, then cancels its context,
// waits for it and fails the test if it returned an error.
func RunInBackground(t testing.TB, run func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// Eventually polls cond (an effect of a loop on another goroutine) for up
// to 5 s, without depending on how fast the machine is.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
