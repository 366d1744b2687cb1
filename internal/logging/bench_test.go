package logging

import (
	"bytes"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/containers/qmd/internal/incident"
)

// drain reads and discards datagrams until the socket is closed.
func (f *fakeJournal) drain() {
	buf := make([]byte, 1<<20)
	for {
		if _, err := f.conn.Read(buf); err != nil {
			return
		}
	}
}

func benchLogger(b *testing.B, opts ...zap.Option) *zap.Logger {
	fj := newFakeJournal(b)
	go fj.drain()
	c, err := NewJournalCore(JournalConfig{Socket: fj.path, Fallback: &bytes.Buffer{}}, zapcore.InfoLevel)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return zap.New(c, opts...).With(Partition("qm"), ContainerID("4f1b6a0c9e2d"))
}

// BenchmarkJournalCore is one incident line, encoded and sent to a
// journal socket, through the zap logger as qmd uses it.
func BenchmarkJournalCore(b *testing.B) {
	for _, bc := range []struct {
		name string
		opts []zap.Option
	}{
		{"plain", nil},
		{"caller", []zap.Option{zap.AddCaller()}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			log := benchLogger(b, bc.opts...)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				log.Info("partition restarted",
					Event(incident.Restart),
					IncidentID(uint64(i)),
					State("running"),
					Reason("exit status 137\nafter oom kill"),
				)
			}
		})
	}
}

// BenchmarkJournalEncode is the encoding alone, without the send.
func BenchmarkJournalEncode(b *testing.B) {
	c := &JournalCore{LevelEnabler: zapcore.InfoLevel, j: &journal{ident: "qmd"}, prefix: fieldPrefix, fallback: zapcore.NewNopCore()}
	wc := c.With([]zapcore.Field{Partition("qm"), ContainerID("4f1b6a0c9e2d")}).(*JournalCore)
	ent := zapcore.Entry{Level: zapcore.InfoLevel, Message: "partition restarted"}
	fields := []zapcore.Field{Event(incident.Restart), IncidentID(42), State("running"), Reason("exit status 137\nafter oom kill")}
	b.ReportAllocs()
	for range b.N {
		putEncoder(wc.encode(ent, fields, 0))
	}
}
