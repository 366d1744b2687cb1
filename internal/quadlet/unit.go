// Package quadlet reads containers/qm's Quadlet files (qm.container and its
// qm.container.d/*.conf drop-ins) and writes the equivalent qmd drop-in:
// `qmd import-quadlet`.
//
// The unit file syntax is systemd's (systemd.syntax(7)): [Section] headers,
// KEY=VALUE assignments, repeated keys, '#'/';' comments, lines continued
// with a trailing backslash (replaced by a space; comment lines inside a
// continuation are skipped), and values split into words with quoting and
// C escapes as systemd's extract_first_word() does. Malformed input is an
// error naming file:line.
package quadlet

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxFileSize bounds one unit file (systemd's own limit is far larger, but
// a Quadlet file is a few kilobytes).
const MaxFileSize = 1 << 20

// Entry is one KEY=VALUE assignment.
type Entry struct {
	Section string
	Key     string
	// Value has continuations joined and surrounding whitespace removed;
	// quotes and escapes are kept (they are resolved per key, as systemd
	// and Quadlet do).
	Value string
	File  string
	Line  int // line of the KEY=
}

// Where is "file:line".
func (e Entry) Where() string { return fmt.Sprintf("%s:%d", e.File, e.Line) }

func (e Entry) String() string {
	return fmt.Sprintf("%s: [%s] %s=%s", e.Where(), e.Section, e.Key, e.Value)
}

// File is a parsed unit file: its assignments in order.
type File struct {
	Path    string
	Entries []Entry
}

// SyntaxError is malformed input at file:line.
type SyntaxError struct {
	File string
	Line int
	Msg  string
}

func (e *SyntaxError) Error() string {
	if e.Line == 0 {
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	}
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
}

// Parse reads one unit file. path names it in errors and entries.
func Parse(path string, data []byte) (*File, error) {
	if len(data) > MaxFileSize {
		return nil, &SyntaxError{File: path, Msg: fmt.Sprintf("%d bytes: larger than %d, not a unit file", len(data), MaxFileSize)}
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // a UTF-8 BOM, as systemd skips it
	f := &File{Path: path}
	section := ""
	var cont strings.Builder // a continued line so far
	contLine := 0            // where it started
	lines := strings.Split(string(data), "\n")
	for i, raw := range lines {
		n := i + 1
		if strings.IndexByte(raw, 0) >= 0 {
			return nil, &SyntaxError{File: path, Line: n, Msg: "contains a NUL byte"}
		}
		if !utf8.ValidString(raw) {
			return nil, &SyntaxError{File: path, Line: n, Msg: "not valid UTF-8"}
		}
		line := strings.TrimSpace(raw)
		if contLine != 0 && (line == "" || line[0] == '#' || line[0] == ';') {
			// systemd skips comment lines inside a continuation; an
			// empty line ends it.
			if line == "" {
				if err := f.add(&section, cont.String(), path, contLine); err != nil {
					return nil, err
				}
				cont.Reset()
				contLine = 0
			}
			continue
		}
		if contLine == 0 && (line == "" || line[0] == '#' || line[0] == ';') {
			continue
		}
		if endsContinued(line) {
			if contLine == 0 {
				contLine = n
			}
			cont.WriteString(line[:len(line)-1])
			cont.WriteByte(' ')
			continue
		}
		if contLine != 0 {
			cont.WriteString(line)
			line = cont.String()
			n = contLine
			cont.Reset()
			contLine = 0
		}
		if err := f.add(&section, line, path, n); err != nil {
			return nil, err
		}
	}
	if contLine != 0 {
		// A backslash on the last line: systemd takes what it has.
		if err := f.add(&section, strings.TrimSpace(cont.String()), path, contLine); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// endsContinued reports whether the line ends with an unescaped backslash.
func endsContinued(line string) bool {
	escaped := false
	for i := 0; i < len(line); i++ {
		if escaped {
			escaped = false
		} else if line[i] == '\\' {
			escaped = true
		}
	}
	return escaped
}

func (f *File) add(section *string, line, path string, n int) error {
	line = strings.TrimSpace(line)
	if line == "" {
		return nil
	}
	if line[0] == '[' {
		if line[len(line)-1] != ']' {
			return &SyntaxError{File: path, Line: n, Msg: fmt.Sprintf("invalid section header %s: want [Name]", strconv.Quote(line))}
		}
		name := line[1 : len(line)-1]
		if name == "" || strings.ContainsAny(name, "[]") || hasControl(name) {
			return &SyntaxError{File: path, Line: n, Msg: fmt.Sprintf("invalid section name %s", strconv.Quote(name))}
		}
		*section = name
		return nil
	}
	if strings.HasPrefix(line, ".include") {
		return &SyntaxError{File: path, Line: n, Msg: ".include is not supported (systemd removed it; use a drop-in)"}
	}
	k, v, ok := strings.Cut(line, "=")
	if !ok {
		return &SyntaxError{File: path, Line: n, Msg: fmt.Sprintf("%s is not a KEY=VALUE assignment, a [Section] header or a comment", strconv.Quote(line))}
	}
	k = strings.TrimSpace(k)
	if k == "" {
		return &SyntaxError{File: path, Line: n, Msg: "assignment without a key"}
	}
	if !validKey(k) {
		return &SyntaxError{File: path, Line: n, Msg: fmt.Sprintf("invalid key %s (letters, digits, '-', '_', '.')", strconv.Quote(k))}
	}
	if *section == "" {
		return &SyntaxError{File: path, Line: n, Msg: fmt.Sprintf("%s= before any [Section] header", k)}
	}
	f.Entries = append(f.Entries, Entry{Section: *section, Key: k, Value: strings.TrimSpace(v), File: path, Line: n})
	return nil
}

func validKey(k string) bool {
	for _, r := range k {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
		default:
			return false
		}
	}
	return true
}

func hasControl(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return true
		}
	}
	return false
}

// SplitMode selects how SplitWords treats backslashes.
type SplitMode int

const (
	// ExecArgs unquotes and resolves C escapes (\n, \x41, \u00e9, ...), as
	// systemd does for ExecStart= and Environment= and Quadlet for Exec=,
	// PodmanArgs=, Environment=, Annotation=.
	ExecArgs SplitMode = iota
	// StrvRetainEscape unquotes and keeps escapes as written, as Quadlet
	// does for AddDevice=, DropCapability=, AddCapability=, Sysctl=.
	StrvRetainEscape
)

// SplitWords splits a value into whitespace-separated words. Single and
// double quotes group words and may appear inside a word ("a"b is ab); an
// empty pair of quotes is an empty word. An unterminated quote or a bad
// escape is an error.
func SplitWords(s string, mode SplitMode) ([]string, error) {
	var words []string
	var w strings.Builder
	inWord := false
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\':
			if i+1 >= len(s) {
				return nil, fmt.Errorf("%s: trailing backslash", strconv.Quote(s))
			}
			inWord = true
			if mode == StrvRetainEscape {
				w.WriteByte('\\')
				w.WriteByte(s[i+1])
				i++
				continue
			}
			r, n, err := cunescape(s[i+1:])
			if err != nil {
				return nil, fmt.Errorf("%s: %v", strconv.Quote(s), err)
			}
			w.WriteString(r)
			i += n
		case quote != 0:
			if c == quote {
				quote = 0
			} else {
				w.WriteByte(c)
			}
		case c == '\'' || c == '"':
			quote = c
			inWord = true
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteByte(c)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("%s: unterminated %c quote", strconv.Quote(s), quote)
	}
	if inWord {
		words = append(words, w.String())
	}
	return words, nil
}

// cunescape resolves the escape after a backslash: it returns the text and
// how many bytes of s it used.
func cunescape(s string) (string, int, error) {
	simple := map[byte]string{'a': "\a", 'b': "\b", 'f': "\f", 'n': "\n", 'r': "\r", 't': "\t", 'v': "\v",
		'\\': "\\", '"': "\"", '\'': "'", 's': " "}
	if r, ok := simple[s[0]]; ok {
		return r, 1, nil
	}
	hex := func(digits int) (rune, error) {
		if len(s) < 1+digits {
			return 0, fmt.Errorf("\\%c needs %d hex digits", s[0], digits)
		}
		v, err := strconv.ParseUint(s[1:1+digits], 16, 32)
		if err != nil {
			return 0, fmt.Errorf("\\%s: bad hex digits", s[:1+digits])
		}
		return rune(v), nil
	}
	var r rune
	var n int
	var err error
	switch s[0] {
	case 'x':
		r, err = hex(2)
		n = 3
	case 'u':
		r, err = hex(4)
		n = 5
	case 'U':
		r, err = hex(8)
		n = 9
	case '0', '1', '2', '3':
		if len(s) < 3 {
			return "", 0, fmt.Errorf("\\%s: an octal escape has 3 digits", s)
		}
		v, perr := strconv.ParseUint(s[:3], 8, 8)
		if perr != nil {
			return "", 0, fmt.Errorf("\\%s: bad octal digits", s[:3])
		}
		r, n = rune(v), 3
	default:
		return "", 0, fmt.Errorf("unknown escape \\%c", s[0])
	}
	if err != nil {
		return "", 0, err
	}
	if r == 0 {
		return "", 0, fmt.Errorf("\\%s is a NUL byte", s[:n])
	}
	if r < 0x80 || s[0] == 'u' || s[0] == 'U' {
		if !utf8.ValidRune(r) {
			return "", 0, fmt.Errorf("\\%s is not a valid character", s[:n])
		}
		return string(r), n, nil
	}
	// \xHH and octal above 0x7f are raw bytes in systemd; only UTF-8 text
	// is useful in a qmd configuration.
	return "", 0, fmt.Errorf("\\%s is a raw byte, not UTF-8 text", s[:n])
}

// unquote strips one pair of surrounding double quotes, as Quadlet does for
// single-valued keys (Rootfs="/usr/lib/qm/rootfs").
func unquote(v string) string {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		return v[1 : len(v)-1]
	}
	return v
}

// parseBool reads a systemd boolean.
func parseBool(v string) (bool, error) {
	switch strings.ToLower(v) {
	case "1", "yes", "y", "true", "t", "on":
		return true, nil
	case "0", "no", "n", "false", "f", "off":
		return false, nil
	}
	return false, fmt.Errorf("%s is not a boolean (yes/no, true/false, on/off, 1/0)", strconv.Quote(v))
}
