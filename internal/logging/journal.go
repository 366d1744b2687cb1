package logging

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"

	"github.com/containers/qmd/internal/incident"
)

// DefaultJournalSocket is where systemd-journald receives the native
// journal protocol.
const DefaultJournalSocket = "/run/systemd/journal/socket"

const (
	defaultIdentifier  = "qmd"
	defaultSendTimeout = 500 * time.Millisecond
	// journalSndBuf is what sd-journal asks for too: big entries fit in one
	// datagram when the kernel allows it (SO_SNDBUFFORCE needs
	// CAP_NET_ADMIN, SO_SNDBUF is capped by net.core.wmem_max).
	journalSndBuf = 8 << 20
	// truncateValue is the per-value cap used when an entry can be sent
	// neither as a datagram nor through a memfd.
	truncateValue = 16 << 10
	truncatedMark = "...[truncated]"
)

// JournalConfig configures a JournalCore.
type JournalConfig struct {
	// Socket is the journal's native socket; DefaultJournalSocket if empty.
	Socket string
	// Identifier is sent as SYSLOG_IDENTIFIER; "qmd" if empty.
	Identifier string
	// Fallback receives, as console lines, every entry the journal cannot
	// take (socket missing, refused, send timed out). os.Stderr if nil.
	Fallback io.Writer
	// SendTimeout bounds how long a send may block on a busy journald
	// before the entry goes to Fallback instead; 500ms if zero.
	SendTimeout time.Duration

	// Test knobs.
	sndbuf  int  // SO_SNDBUF to ask for; journalSndBuf if zero
	noMemfd bool // pretend memfd_create fails
}

// journal is the state shared by a JournalCore and its With children.
type journal struct {
	mu      sync.RWMutex // RLock while using fd; Lock to close it
	fd      int          // -1 once closed
	path    string
	addrs   sync.Pool // *unix.SockaddrUnix: x/sys caches the raw address in it, so one per sender
	ident   string
	noMemfd bool

	fallback zapcore.WriteSyncer
	failing  atomic.Bool // the last send failed; a notice was written
}

// JournalCore is a zapcore.Core that writes entries to systemd-journald
// using the native protocol: one datagram per entry, a sealed memfd for
// entries too big for a datagram. Fields become journal fields named by
// FieldName; an "event" field naming an incident type adds its MESSAGE_ID.
// Entries the journal cannot take are written to the fallback writer as
// console lines, never dropped silently.
type JournalCore struct {
	zapcore.LevelEnabler
	j *journal

	prefix     string          // field name prefix at this level: "QMD_" or a namespace
	with       []byte          // With fields, encoded
	withFields []zapcore.Field // With fields, for re-encoding with truncation
	msgID      string          // MESSAGE_ID from a With'ed event field
	fallback   zapcore.Core    // console core carrying the same With fields
}

var _ zapcore.Core = (*JournalCore)(nil)

// NewJournalCore opens an unbound datagram socket addressed to
// cfg.Socket. It does not check that journald listens there: entries
// that cannot be delivered go to the fallback writer.
func NewJournalCore(cfg JournalConfig, enab zapcore.LevelEnabler) (*JournalCore, error) {
	if cfg.Socket == "" {
		cfg.Socket = DefaultJournalSocket
	}
	if cfg.Identifier == "" {
		cfg.Identifier = defaultIdentifier
	}
	if cfg.Fallback == nil {
		cfg.Fallback = os.Stderr
	}
	if cfg.SendTimeout <= 0 {
		cfg.SendTimeout = defaultSendTimeout
	}
	if cfg.sndbuf <= 0 {
		cfg.sndbuf = journalSndBuf
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("create journal socket: %w", err)
	}
	// Best effort, as sd-journal does: a small buffer only means more
	// entries take the memfd path.
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, cfg.sndbuf) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, cfg.sndbuf)
	}
	tv := unix.NsecToTimeval(cfg.SendTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("set journal socket send timeout: %w", err)
	}
	ws := zapcore.Lock(zapcore.AddSync(cfg.Fallback))
	j := &journal{
		fd:       fd,
		path:     cfg.Socket,
		ident:    cfg.Identifier,
		noMemfd:  cfg.noMemfd,
		fallback: ws,
	}
	j.addrs.New = func() any { return &unix.SockaddrUnix{Name: j.path} }
	return &JournalCore{
		LevelEnabler: enab,
		j:            j,
		prefix:       fieldPrefix,
		fallback:     zapcore.NewCore(zapcore.NewConsoleEncoder(consoleEncoderConfig(false)), ws, zapcore.DebugLevel),
	}, nil
}

// Level reports the minimum enabled level (for zap's Logger.Level).
func (c *JournalCore) Level() zapcore.Level { return zapcore.LevelOf(c.LevelEnabler) }

// With returns a core that adds fields to every entry.
func (c *JournalCore) With(fields []zapcore.Field) zapcore.Core {
	if len(fields) == 0 {
		return c
	}
	enc := getEncoder(c.prefix, 0)
	enc.buf = append(enc.buf, c.with...)
	for i := range fields {
		fields[i].AddTo(enc)
	}
	clone := *c
	clone.prefix = enc.prefix
	clone.with = append([]byte(nil), enc.buf...)
	clone.withFields = append(append([]zapcore.Field(nil), c.withFields...), fields...)
	if enc.msgID != "" {
		clone.msgID = enc.msgID
	}
	clone.fallback = c.fallback.With(fields)
	putEncoder(enc)
	return &clone
}

// Check adds c to ce when the level is enabled.
func (c *JournalCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(ent.Level) {
		return ce.AddCore(ent, c)
	}
	return ce
}

// Write sends the entry to the journal. It only returns an error when
// neither the journal nor the fallback writer took the entry.
func (c *JournalCore) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	enc := c.encode(ent, fields, 0)
	err := c.j.send(enc.buf)
	if isTooBig(err) {
		err = c.j.sendMemfd(enc.buf)
		if err != nil {
			// Last resort: cut long values, mark the entry as truncated.
			putEncoder(enc)
			enc = c.encode(ent, fields, truncateValue)
			err = c.j.send(enc.buf)
		}
	}
	putEncoder(enc)
	if err != nil {
		c.j.noteFailure(err)
		return c.fallback.Write(ent, fields)
	}
	c.j.noteSuccess()
	return nil
}

// Sync is a no-op for the journal (every send is synchronous); it syncs
// the fallback writer.
func (c *JournalCore) Sync() error {
	_ = c.j.fallback.Sync() // stderr on a pipe or socket cannot be synced
	return nil
}

// Close closes the journal socket. Later entries go to the fallback writer.
func (c *JournalCore) Close() error {
	c.j.mu.Lock()
	defer c.j.mu.Unlock()
	if c.j.fd < 0 {
		return nil
	}
	err := unix.Close(c.j.fd)
	c.j.fd = -1
	if err != nil {
		return fmt.Errorf("close journal socket: %w", err)
	}
	return nil
}

// encode builds the datagram for an entry. maxValue > 0 truncates longer
// values (and re-encodes the With fields, which are otherwise copied).
func (c *JournalCore) encode(ent zapcore.Entry, fields []zapcore.Field, maxValue int) *fieldEncoder {
	enc := getEncoder(fieldPrefix, maxValue)
	enc.appendString("MESSAGE", ent.Message)
	enc.buf = append(enc.buf, "PRIORITY="...)
	enc.buf = append(enc.buf, '0'+priority(ent.Level), '\n')
	enc.appendString("SYSLOG_IDENTIFIER", c.j.ident)
	if ent.Caller.Defined {
		enc.appendString("CODE_FILE", ent.Caller.File)
		enc.buf = append(enc.buf, "CODE_LINE="...)
		enc.buf = strconv.AppendInt(enc.buf, int64(ent.Caller.Line), 10)
		enc.buf = append(enc.buf, '\n')
		if ent.Caller.Function != "" {
			enc.appendString("CODE_FUNC", ent.Caller.Function)
		}
	}
	if ent.LoggerName != "" {
		enc.appendString("QMD_LOGGER", ent.LoggerName)
	}
	if ent.Stack != "" {
		enc.appendString("QMD_STACKTRACE", ent.Stack)
	}
	msgID := c.msgID
	if maxValue > 0 {
		for i := range c.withFields {
			c.withFields[i].AddTo(enc)
		}
	} else {
		enc.buf = append(enc.buf, c.with...)
	}
	enc.prefix = c.prefix
	enc.msgID = ""
	for i := range fields {
		fields[i].AddTo(enc)
	}
	if enc.msgID != "" {
		msgID = enc.msgID
	}
	if msgID != "" {
		enc.buf = append(enc.buf, "MESSAGE_ID="...)
		enc.buf = append(enc.buf, msgID...)
		enc.buf = append(enc.buf, '\n')
	}
	if enc.truncated {
		enc.buf = append(enc.buf, "QMD_TRUNCATED=1\n"...)
	}
	return enc
}

// priority maps zap levels to syslog priorities.
func priority(l zapcore.Level) byte {
	switch {
	case l <= zapcore.DebugLevel:
		return 7 // debug
	case l == zapcore.InfoLevel:
		return 6 // info
	case l == zapcore.WarnLevel:
		return 4 // warning
	case l == zapcore.ErrorLevel:
		return 3 // err
	default:
		return 2 // crit: DPanic, Panic, Fatal
	}
}

func isTooBig(err error) bool {
	return errors.Is(err, unix.EMSGSIZE) || errors.Is(err, unix.ENOBUFS)
}

func (j *journal) send(b []byte) error {
	j.mu.RLock()
	defer j.mu.RUnlock()
	if j.fd < 0 {
		return errClosed
	}
	addr := j.addrs.Get().(*unix.SockaddrUnix)
	defer j.addrs.Put(addr)
	for {
		err := unix.Sendmsg(j.fd, b, nil, addr, 0)
		if err != unix.EINTR { //nolint:errorlint // raw errno from x/sys
			return err
		}
	}
}

var errClosed = errors.New("journal socket closed")

// sendMemfd is systemd's method for entries too big for a datagram: write
// the entry to a memfd, seal it and pass the descriptor with SCM_RIGHTS.
func (j *journal) sendMemfd(b []byte) error {
	if j.noMemfd {
		return fmt.Errorf("create memfd: %w", unix.ENOSYS)
	}
	fd, err := unix.MemfdCreate("qmd-journal", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return fmt.Errorf("create memfd: %w", err)
	}
	defer unix.Close(fd)
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR { //nolint:errorlint // raw errno from x/sys
			continue
		}
		if err != nil {
			return fmt.Errorf("write memfd: %w", err)
		}
		b = b[n:]
	}
	seals := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE | unix.F_SEAL_SEAL
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
		return fmt.Errorf("seal memfd: %w", err)
	}
	j.mu.RLock()
	defer j.mu.RUnlock()
	if j.fd < 0 {
		return errClosed
	}
	addr := j.addrs.Get().(*unix.SockaddrUnix)
	defer j.addrs.Put(addr)
	if err := unix.Sendmsg(j.fd, nil, unix.UnixRights(fd), addr, 0); err != nil {
		return fmt.Errorf("send memfd: %w", err)
	}
	return nil
}

// noteFailure writes one notice to the fallback writer when the journal
// becomes unreachable, so operators see why lines moved to stderr.
func (j *journal) noteFailure(err error) {
	if j.failing.CompareAndSwap(false, true) {
		j.notice(zapcore.WarnLevel, "journal unreachable, logging to stderr", err)
	}
}

func (j *journal) noteSuccess() {
	if j.failing.Load() && j.failing.CompareAndSwap(true, false) {
		j.notice(zapcore.InfoLevel, "journal reachable again", nil)
	}
}

func (j *journal) notice(l zapcore.Level, msg string, err error) {
	enc := zapcore.NewConsoleEncoder(consoleEncoderConfig(false))
	ent := zapcore.Entry{Level: l, Time: time.Now(), Message: msg}
	fs := []zapcore.Field{{Key: "socket", Type: zapcore.StringType, String: j.path}}
	if err != nil {
		fs = append(fs, zapcore.Field{Key: KeyError, Type: zapcore.ErrorType, Interface: err})
	}
	buf, e := enc.EncodeEntry(ent, fs)
	if e != nil {
		return
	}
	_, _ = j.fallback.Write(buf.Bytes())
	buf.Free()
}

// fieldEncoder is a zapcore.ObjectEncoder that appends journal fields in
// the native protocol to buf.
type fieldEncoder struct {
	buf       []byte
	prefix    string // "QMD_" or "QMD_<NAMESPACE>_..."
	msgID     string // MESSAGE_ID of a root-level "event" field
	maxValue  int    // truncate values longer than this, if > 0
	truncated bool
}

var encoderPool = sync.Pool{New: func() any { return &fieldEncoder{buf: make([]byte, 0, 1024)} }}

func getEncoder(prefix string, maxValue int) *fieldEncoder {
	e := encoderPool.Get().(*fieldEncoder)
	e.buf = e.buf[:0]
	e.prefix = prefix
	e.msgID = ""
	e.maxValue = maxValue
	e.truncated = false
	return e
}

func putEncoder(e *fieldEncoder) {
	if cap(e.buf) > 64<<10 {
		return // don't keep huge buffers around
	}
	encoderPool.Put(e)
}

// appendString appends a field whose name is already valid.
func (e *fieldEncoder) appendString(name, v string) {
	e.buf = append(e.buf, name...)
	e.appendValue(v)
}

func (e *fieldEncoder) name(key string) { e.buf = appendFieldName(e.buf, e.prefix, key) }

func (e *fieldEncoder) appendValue(v string) {
	if e.maxValue > 0 && len(v) > e.maxValue {
		n := e.maxValue
		for n > 0 && !utf8.RuneStart(v[n]) {
			n--
		}
		v = v[:n] + truncatedMark
		e.truncated = true
	}
	e.buf = appendValue(e.buf, v)
}

// appendValue appends "=v\n", or for values with a newline the binary
// form "\n" + little-endian uint64 length + v + "\n".
func appendValue[S ~string | ~[]byte](b []byte, v S) []byte {
	for i := 0; i < len(v); i++ {
		if v[i] == '\n' {
			b = append(b, '\n')
			b = binary.LittleEndian.AppendUint64(b, uint64(len(v)))
			b = append(b, v...)
			return append(b, '\n')
		}
	}
	b = append(b, '=')
	b = append(b, v...)
	return append(b, '\n')
}

// AddString implements zapcore.ObjectEncoder; it also picks up the
// MESSAGE_ID of a root-level "event" field.
func (e *fieldEncoder) AddString(key, v string) {
	if key == KeyEvent && e.prefix == fieldPrefix {
		if id, ok := messageIDs[incident.Type(v)]; ok {
			e.msgID = id
		}
	}
	e.name(key)
	e.appendValue(v)
}

func (e *fieldEncoder) AddByteString(key string, v []byte) { e.AddString(key, string(v)) }

func (e *fieldEncoder) AddBinary(key string, v []byte) {
	e.AddString(key, base64.StdEncoding.EncodeToString(v))
}

func (e *fieldEncoder) addRaw(key string, f func([]byte) []byte) {
	e.name(key)
	e.buf = append(e.buf, '=')
	e.buf = f(e.buf)
	e.buf = append(e.buf, '\n')
}

func (e *fieldEncoder) AddBool(key string, v bool) {
	e.addRaw(key, func(b []byte) []byte { return strconv.AppendBool(b, v) })
}

func (e *fieldEncoder) AddInt64(key string, v int64) {
	e.name(key)
	e.buf = append(e.buf, '=')
	e.buf = strconv.AppendInt(e.buf, v, 10)
	e.buf = append(e.buf, '\n')
}

func (e *fieldEncoder) AddUint64(key string, v uint64) {
	e.name(key)
	e.buf = append(e.buf, '=')
	e.buf = strconv.AppendUint(e.buf, v, 10)
	e.buf = append(e.buf, '\n')
}

func (e *fieldEncoder) AddFloat64(key string, v float64) { e.addFloat(key, v, 64) }
func (e *fieldEncoder) AddFloat32(key string, v float32) { e.addFloat(key, float64(v), 32) }

func (e *fieldEncoder) addFloat(key string, v float64, bits int) {
	e.addRaw(key, func(b []byte) []byte {
		switch {
		case math.IsNaN(v):
			return append(b, "NaN"...)
		case math.IsInf(v, 1):
			return append(b, "+Inf"...)
		case math.IsInf(v, -1):
			return append(b, "-Inf"...)
		}
		return strconv.AppendFloat(b, v, 'g', -1, bits)
	})
}

func (e *fieldEncoder) AddComplex128(key string, v complex128) {
	e.AddString(key, strconv.FormatComplex(v, 'g', -1, 128))
}

func (e *fieldEncoder) AddComplex64(key string, v complex64) {
	e.AddString(key, strconv.FormatComplex(complex128(v), 'g', -1, 64))
}

func (e *fieldEncoder) AddDuration(key string, v time.Duration) { e.AddString(key, v.String()) }

func (e *fieldEncoder) AddTime(key string, v time.Time) {
	e.addRaw(key, func(b []byte) []byte { return v.AppendFormat(b, time.RFC3339Nano) })
}

func (e *fieldEncoder) AddInt(k string, v int)         { e.AddInt64(k, int64(v)) }
func (e *fieldEncoder) AddInt32(k string, v int32)     { e.AddInt64(k, int64(v)) }
func (e *fieldEncoder) AddInt16(k string, v int16)     { e.AddInt64(k, int64(v)) }
func (e *fieldEncoder) AddInt8(k string, v int8)       { e.AddInt64(k, int64(v)) }
func (e *fieldEncoder) AddUint(k string, v uint)       { e.AddUint64(k, uint64(v)) }
func (e *fieldEncoder) AddUint32(k string, v uint32)   { e.AddUint64(k, uint64(v)) }
func (e *fieldEncoder) AddUint16(k string, v uint16)   { e.AddUint64(k, uint64(v)) }
func (e *fieldEncoder) AddUint8(k string, v uint8)     { e.AddUint64(k, uint64(v)) }
func (e *fieldEncoder) AddUintptr(k string, v uintptr) { e.AddUint64(k, uint64(v)) }

// AddArray stores the array as JSON in one field.
func (e *fieldEncoder) AddArray(key string, v zapcore.ArrayMarshaler) error {
	m := zapcore.NewMapObjectEncoder()
	err := m.AddArray(key, v)
	e.AddString(key, jsonString(m.Fields[key]))
	return err
}

// AddObject flattens the object: its field "b" under key "a" becomes
// QMD_A_B, so it can be matched in journalctl.
func (e *fieldEncoder) AddObject(key string, v zapcore.ObjectMarshaler) error {
	saved := e.prefix
	e.prefix = nestedPrefix(saved, key)
	err := v.MarshalLogObject(e)
	e.prefix = saved
	return err
}

// AddReflected stores the value as JSON (strings as they are).
func (e *fieldEncoder) AddReflected(key string, v any) error {
	if s, ok := v.(string); ok {
		e.AddString(key, s)
		return nil
	}
	e.AddString(key, jsonString(v))
	return nil
}

// OpenNamespace prefixes the following fields with the key.
func (e *fieldEncoder) OpenNamespace(key string) { e.prefix = nestedPrefix(e.prefix, key) }

func nestedPrefix(prefix, key string) string {
	b := appendFieldName(make([]byte, 0, len(prefix)+len(key)+1), prefix, key)
	if len(b) < maxFieldName {
		b = append(b, '_')
	}
	return string(b)
}

func jsonString(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}
