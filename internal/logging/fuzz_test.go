package logging

import (
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// FuzzJournalEncoding checks that any key, value and message give a
// valid native-protocol datagram that parses back to the same data, with
// and without truncation.
func FuzzJournalEncoding(f *testing.F) {
	f.Add("partition", "qm", "hello")
	f.Add("container_id", "a=b", "multi\nline")
	f.Add("", "\n", "")
	f.Add("ü-ü.9", "x\x00y\nz", "\n\n")
	f.Add(strings.Repeat("k", 70), strings.Repeat("v\n", 40), "m")
	f.Add("event", "oom-kill", "oom")
	f.Fuzz(func(t *testing.T, key, value, msg string) {
		name := FieldName(key)
		if !validFieldName([]byte(name)) {
			t.Fatalf("FieldName(%q) = %q: invalid", key, name)
		}
		if !strings.HasPrefix(name, fieldPrefix) {
			t.Fatalf("FieldName(%q) = %q: no prefix", key, name)
		}
		c := &JournalCore{LevelEnabler: zapcore.DebugLevel, j: &journal{ident: "qmd"}, prefix: fieldPrefix, fallback: zapcore.NewNopCore()}
		withCore := c.With([]zapcore.Field{zap.String(key, value), zap.Namespace(key)}).(*JournalCore)
		ent := zapcore.Entry{Level: zapcore.InfoLevel, Message: msg}
		fields := []zapcore.Field{zap.String(key, value), zap.ByteString(key, []byte(value)), zap.Any(key, value)}
		for _, maxValue := range []int{0, 7} {
			enc := withCore.encode(ent, fields, maxValue)
			e, err := parseNative(enc.buf)
			if err != nil {
				t.Fatalf("max %d: %v in %q", maxValue, err, enc.buf)
			}
			putEncoder(enc)
			want := value
			if maxValue > 0 && len(value) > maxValue {
				want = ""
				if e.get("QMD_TRUNCATED") != "1" {
					t.Fatalf("truncated entry without QMD_TRUNCATED")
				}
			}
			nested := string(appendFieldName(nil, nestedPrefix(fieldPrefix, key), key))
			got := e[name]
			if nested != name {
				got = append(got[:len(got):len(got)], e[nested]...)
			}
			if len(got) != 4 {
				t.Fatalf("max %d: %s/%s = %q, want 4 values", maxValue, name, nested, got)
			}
			if want != "" || maxValue == 0 {
				if got[0] != want || got[3] != want {
					t.Fatalf("max %d: %s = %q, want 4 x %q", maxValue, name, got, want)
				}
				if maxValue == 0 && e.get("MESSAGE") != msg {
					t.Fatalf("MESSAGE = %q, want %q", e.get("MESSAGE"), msg)
				}
			}
		}
	})
}
