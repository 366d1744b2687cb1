package procwatch

import (
	"context"
	"os/exec"
	"testing"
	"time"
)

func TestWatchReportsExit(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done, err := Watch(context.Background(), cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
		t.Fatal("reported exit of a running process")
	case <-time.After(50 * time.Millisecond):
	}
	killed := time.Now()
	_ = cmd.Process.Kill()
	go func() { _ = cmd.Wait() }()
	select {
	case <-done:
		t.Logf("exit seen after %s", time.Since(killed))
	case <-time.After(5 * time.Second):
		t.Fatal("exit not reported")
	}
}

func TestWatchCancel(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	ctx, cancel := context.WithCancel(context.Background())
	done, err := Watch(ctx, cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("cancel did not end the watch")
	}
}

func TestWatchBadPid(t *testing.T) {
	if _, err := Watch(context.Background(), 0); err == nil {
		t.Fatal("pid 0 accepted")
	}
	if _, err := Watch(context.Background(), 1<<30); err == nil {
		t.Fatal("nonexistent pid accepted")
	}
}
