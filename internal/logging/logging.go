// Package logging builds qmd's zap logger: native journald logging with
// stable structured fields (QMD_PARTITION, QMD_EVENT, ..., MESSAGE_ID)
// when qmd runs under systemd, human-readable console lines elsewhere.
//
// Other packages never spell field keys themselves: they use the helpers
// in this package (Partition, Event, ContainerID, ...), so that
// `journalctl -u qmd QMD_EVENT=oom-kill` finds every OOM kill.
package logging

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"
)

// Mode selects the log output.
type Mode string

// Modes. ModeAuto logs to journald when stderr is connected to the journal
// (systemd sets JOURNAL_STREAM) and to the console otherwise.
const (
	ModeAuto    Mode = "auto"
	ModeJournal Mode = "journal"
	ModeConsole Mode = "console"
	ModeJSON    Mode = "json"
)

// Options configures New. The zero value is usable: auto mode, info level.
type Options struct {
	// Mode is "auto" (default when empty), "journal", "console" or "json".
	Mode Mode
	// Level is "debug", "info" (default when empty), "warn" or "error".
	Level string
	// AtomicLevel, when set (zap.NewAtomicLevel()), is the level the logger
	// follows; Level, when not empty, is applied to it. Keep it to change
	// the level at runtime (config reload, SIGUSR, D-Bus).
	AtomicLevel zap.AtomicLevel
	// Identifier is the journal's SYSLOG_IDENTIFIER; "qmd" when empty.
	Identifier string
	// JournalSocket is the journal's native socket;
	// DefaultJournalSocket when empty.
	JournalSocket string
	// Stderr receives console and JSON output, and journal entries the
	// journal could not take. os.Stderr when nil.
	Stderr io.Writer

	// journalStream replaces the JOURNAL_STREAM check in tests.
	journalStream func() bool
}

// New builds the logger described by opts.
//
// In journal mode each entry is one native-protocol datagram; the logger
// never loses an entry silently: what the journal refuses is written to
// Stderr. In auto mode a journal stream without a reachable journal
// socket (e.g. a container without journald) gives console output.
func New(opts Options) (*zap.Logger, error) {
	level, err := resolveLevel(opts)
	if err != nil {
		return nil, err
	}
	if opts.Stderr == nil {
		opts.Stderr = os.Stderr
	}
	if opts.JournalSocket == "" {
		opts.JournalSocket = DefaultJournalSocket
	}
	mode, err := resolveMode(opts)
	if err != nil {
		return nil, err
	}
	errOut := zapcore.Lock(zapcore.AddSync(opts.Stderr))
	zopts := []zap.Option{
		zap.AddCaller(),
		zap.AddStacktrace(zapcore.DPanicLevel),
		zap.ErrorOutput(errOut),
	}
	var core zapcore.Core
	switch mode {
	case ModeJournal:
		jc, err := NewJournalCore(JournalConfig{
			Socket:     opts.JournalSocket,
			Identifier: opts.Identifier,
			Fallback:   opts.Stderr,
		}, level)
		if err != nil {
			return nil, err
		}
		core = jc
	case ModeJSON:
		core = zapcore.NewCore(zapcore.NewJSONEncoder(jsonEncoderConfig()), errOut, level)
	default:
		core = zapcore.NewCore(zapcore.NewConsoleEncoder(consoleEncoderConfig(useColor(opts.Stderr))), errOut, level)
	}
	return zap.New(core, zopts...), nil
}

func resolveLevel(opts Options) (zap.AtomicLevel, error) {
	level := opts.AtomicLevel
	if level == (zap.AtomicLevel{}) {
		level = zap.NewAtomicLevel()
	} else if opts.Level == "" {
		return level, nil
	}
	l, err := zapcore.ParseLevel(strings.ToLower(opts.Level))
	if err != nil {
		return level, fmt.Errorf("parse log level %q: want debug, info, warn or error", opts.Level)
	}
	level.SetLevel(l)
	return level, nil
}

func resolveMode(opts Options) (Mode, error) {
	switch opts.Mode {
	case ModeJournal, ModeConsole, ModeJSON:
		return opts.Mode, nil
	case ModeAuto, "":
	default:
		return "", fmt.Errorf("parse log mode %q: want auto, journal, console or json", opts.Mode)
	}
	detect := opts.journalStream
	if detect == nil {
		detect = func() bool { return JournalStream(os.Getenv("JOURNAL_STREAM"), 2) }
	}
	if !detect() {
		return ModeConsole, nil
	}
	if fi, err := os.Stat(opts.JournalSocket); err != nil || fi.Mode()&os.ModeSocket == 0 {
		return ModeConsole, nil
	}
	return ModeJournal, nil
}

// JournalStream reports whether fd is the journal stream systemd
// described in env, the value of $JOURNAL_STREAM ("<device>:<inode>",
// decimal): the check systemd.exec(5) documents for switching to native
// journal logging.
func JournalStream(env string, fd int) bool {
	devs, inos, ok := strings.Cut(env, ":")
	if !ok {
		return false
	}
	dev, err1 := strconv.ParseUint(devs, 10, 64)
	ino, err2 := strconv.ParseUint(inos, 10, 64)
	if err1 != nil || err2 != nil {
		return false
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return false
	}
	return uint64(st.Dev) == dev && st.Ino == ino //nolint:unconvert // Dev is uint32 on some arches
}

// useColor reports whether w is a terminal that wants colour.
func useColor(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || os.Getenv("NO_COLOR") != "" || os.Getenv("TERM") == "dumb" {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func consoleEncoderConfig(color bool) zapcore.EncoderConfig {
	cfg := zapcore.EncoderConfig{
		TimeKey:        "time",
		LevelKey:       "level",
		NameKey:        "logger",
		CallerKey:      "caller",
		FunctionKey:    zapcore.OmitKey,
		MessageKey:     "msg",
		StacktraceKey:  "stacktrace",
		LineEnding:     zapcore.DefaultLineEnding,
		EncodeLevel:    zapcore.CapitalLevelEncoder,
		EncodeTime:     zapcore.ISO8601TimeEncoder,
		EncodeDuration: zapcore.StringDurationEncoder,
		EncodeCaller:   zapcore.ShortCallerEncoder,
	}
	if color {
		cfg.EncodeLevel = zapcore.CapitalColorLevelEncoder
	}
	return cfg
}

func jsonEncoderConfig() zapcore.EncoderConfig {
	cfg := consoleEncoderConfig(false)
	cfg.EncodeLevel = zapcore.LowercaseLevelEncoder
	return cfg
}
