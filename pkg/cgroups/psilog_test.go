package cgroups

import (
	"errors"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestLogPSINote(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	log := zap.New(core)
	w := &PSIWatch{Name: "asil.service memory"}
	boom := errors.New("boom")
	for _, c := range []struct {
		kind   PSINoteKind
		logged bool
		level  zapcore.Level
	}{
		{PSIUnavailable, true, zapcore.InfoLevel},
		{PSIStillUnavailable, true, zapcore.DebugLevel},
		{PSIRearmed, true, zapcore.InfoLevel},
		{PSISpurious, true, zapcore.DebugLevel},
		{PSIEnded, false, 0},
		{PSIFallback, false, 0},
	} {
		logs.TakeAll()
		if got := LogPSINote(log, PSINote{Kind: c.kind, Watch: w, Path: "/x/memory.pressure", Err: boom}); got != c.logged {
			t.Errorf("kind %d: LogPSINote = %v, want %v", c.kind, got, c.logged)
		}
		es := logs.TakeAll()
		if !c.logged {
			if len(es) != 0 {
				t.Errorf("kind %d: logged %v, want it left to the caller", c.kind, es)
			}
			continue
		}
		if len(es) != 1 || es[0].Level != c.level || es[0].ContextMap()["trigger"] != w.Name {
			t.Errorf("kind %d: logged %+v, want one %v entry naming the trigger", c.kind, es, c.level)
		}
	}
}
