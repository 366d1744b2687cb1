package logging

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeJournal is a datagram socket standing in for journald.
type fakeJournal struct {
	path string
	conn *net.UnixConn
}

// shortTempDir returns a temp dir whose socket paths fit sun_path (108
// bytes), which t.TempDir() does not promise.
func shortTempDir(tb testing.TB) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", "qmdlog")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func newFakeJournal(tb testing.TB) *fakeJournal {
	tb.Helper()
	return listenFakeJournal(tb, filepath.Join(shortTempDir(tb), "socket"))
}

func listenFakeJournal(tb testing.TB, path string) *fakeJournal {
	tb.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return &fakeJournal{path: path, conn: conn}
}

// recv returns the next datagram and the descriptors passed with it.
func (f *fakeJournal) recv(tb testing.TB) ([]byte, []int) {
	tb.Helper()
	buf := make([]byte, 2<<20)
	oob := make([]byte, unix.CmsgSpace(4*4))
	if err := f.conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		tb.Fatal(err)
	}
	n, oobn, _, _, err := f.conn.ReadMsgUnix(buf, oob)
	if err != nil {
		tb.Fatalf("journal receive: %v", err)
	}
	var fds []int
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			tb.Fatal(err)
		}
		for _, m := range msgs {
			rights, err := unix.ParseUnixRights(&m)
			if err != nil {
				tb.Fatal(err)
			}
			fds = append(fds, rights...)
		}
	}
	return buf[:n], fds
}

// recvEntry receives one datagram (without descriptors) and parses it.
func (f *fakeJournal) recvEntry(tb testing.TB) (journalEntry, []byte) {
	tb.Helper()
	data, fds := f.recv(tb)
	if len(fds) != 0 {
		tb.Fatalf("unexpected descriptors %v", fds)
	}
	e, err := parseNative(data)
	if err != nil {
		tb.Fatalf("parse datagram %q: %v", data, err)
	}
	return e, data
}

// expectNothing asserts that no datagram arrives for a short while.
func (f *fakeJournal) expectNothing(tb testing.TB) {
	tb.Helper()
	_ = f.conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	buf := make([]byte, 64<<10)
	if n, err := f.conn.Read(buf); err == nil {
		tb.Fatalf("unexpected datagram %q", buf[:n])
	}
}

// journalEntry maps field names to their values (a field may repeat).
type journalEntry map[string][]string

func (e journalEntry) get(name string) string {
	if v := e[name]; len(v) > 0 {
		return v[len(v)-1]
	}
	return ""
}

// parseNative parses the native journal protocol as journald does:
// "NAME=value\n", or "NAME\n" + le64 length + value + "\n".
func parseNative(b []byte) (journalEntry, error) {
	e := journalEntry{}
	for len(b) > 0 {
		i := bytes.IndexAny(b, "=\n")
		if i < 0 {
			return nil, errors.New("field without terminator")
		}
		name := b[:i]
		if !validFieldName(name) {
			return nil, fmt.Errorf("invalid field name %q", name)
		}
		var val []byte
		if b[i] == '=' {
			j := bytes.IndexByte(b[i+1:], '\n')
			if j < 0 {
				return nil, fmt.Errorf("field %s: missing newline", name)
			}
			val, b = b[i+1:i+1+j], b[i+2+j:]
		} else {
			rest := b[i+1:]
			if len(rest) < 8 {
				return nil, fmt.Errorf("field %s: short length", name)
			}
			n := binary.LittleEndian.Uint64(rest)
			rest = rest[8:]
			if n >= uint64(len(rest)) || rest[n] != '\n' {
				return nil, fmt.Errorf("field %s: bad binary length %d", name, n)
			}
			val, b = rest[:n], rest[n+1:]
		}
		e[string(name)] = append(e[string(name)], string(val))
	}
	return e, nil
}
