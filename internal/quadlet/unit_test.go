package quadlet

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseSyntax(t *testing.T) {
	src := "\xef\xbb\xbf# comment\n; another comment\n\n[Container]\r\n" +
		"Volume=/a:/a\n" +
		"Volume = /b:/b  \n" + // spaces around '=' and trailing
		"PodmanArgs=--one \\\n" +
		"# a comment inside a continuation is skipped\n" +
		"  --two\\\n" +
		"--three\n" +
		"Exec=/bin/echo \"a b\" 'c d' e\\\\\n" + // an escaped backslash does not continue
		"Empty=\n" +
		"[X-Custom Section]\n" +
		"Key.Name-1_x=v=w\n"
	f, err := Parse("t.container", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want := []Entry{
		{"Container", "Volume", "/a:/a", "t.container", 5},
		{"Container", "Volume", "/b:/b", "t.container", 6},
		{"Container", "PodmanArgs", "--one  --two --three", "t.container", 7},
		{"Container", "Exec", `/bin/echo "a b" 'c d' e\\`, "t.container", 11},
		{"Container", "Empty", "", "t.container", 12},
		{"X-Custom Section", "Key.Name-1_x", "v=w", "t.container", 14},
	}
	if !reflect.DeepEqual(f.Entries, want) {
		t.Errorf("entries:\n got %#v\nwant %#v", f.Entries, want)
	}
}

func TestParseContinuationAtEOFAndEmptyLine(t *testing.T) {
	f, err := Parse("t.conf", []byte("[Container]\nPodmanArgs=--a \\\n\nVolume=/x:/x\nExec=/init \\"))
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Entries) != 3 || f.Entries[0].Value != "--a" || f.Entries[1].Line != 4 || f.Entries[2].Value != "/init" {
		t.Errorf("entries %#v", f.Entries)
	}
}

// TestParseErrors: malformed input is an error naming file:line, never a
// panic.
func TestParseErrors(t *testing.T) {
	cases := []struct{ src, want string }{
		{"Volume=/a:/a\n", "bad.container:1: Volume= before any [Section] header"},
		{"[Container]\nthis is not an assignment\n", `bad.container:2: "this is not an assignment" is not a KEY=VALUE assignment`},
		{"[Container\nA=b\n", `bad.container:1: invalid section header "[Container"`},
		{"[]\n", `bad.container:1: invalid section name ""`},
		{"[Con]tainer]\n", `bad.container:1: invalid section name "Con]tainer"`},
		{"[Container]\n=value\n", "bad.container:2: assignment without a key"},
		{"[Container]\nBad Key=1\n", `bad.container:2: invalid key "Bad Key"`},
		{"[Container]\nA=\x00\n", "bad.container:2: contains a NUL byte"},
		{"[Container]\n\nA=\xff\n", "bad.container:3: not valid UTF-8"},
		{".include /etc/x\n", "bad.container:1: .include is not supported"},
	}
	for _, tc := range cases {
		_, err := Parse("bad.container", []byte(tc.src))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.src, err, tc.want)
		}
	}
	big := make([]byte, MaxFileSize+1)
	if _, err := Parse("big.container", big); err == nil || !strings.Contains(err.Error(), "big.container: ") {
		t.Errorf("oversized file: %v", err)
	}
}

func TestSplitWords(t *testing.T) {
	cases := []struct {
		in   string
		mode SplitMode
		want []string
		err  string
	}{
		{`a  b	c`, ExecArgs, []string{"a", "b", "c"}, ""},
		{`"a b" 'c d'`, ExecArgs, []string{"a b", "c d"}, ""},
		{`x"a b"y`, ExecArgs, []string{"xa by"}, ""},
		{`"" a`, ExecArgs, []string{"", "a"}, ""},
		{`a\tb \x41\101\u00e9\s`, ExecArgs, []string{"a\tb", "AAé "}, ""},
		{`"it\"s"`, ExecArgs, []string{`it"s`}, ""},
		{`a\ b`, StrvRetainEscape, []string{`a\ b`}, ""},
		{`-/dev/kvm -/dev/fuse`, StrvRetainEscape, []string{"-/dev/kvm", "-/dev/fuse"}, ""},
		{`"unterminated`, ExecArgs, nil, "unterminated \" quote"},
		{`'also`, StrvRetainEscape, nil, "unterminated ' quote"},
		{`trailing\`, ExecArgs, nil, "trailing backslash"},
		{`\q`, ExecArgs, nil, `unknown escape \q`},
		{`\x0`, ExecArgs, nil, `needs 2 hex digits`},
		{`\x00`, ExecArgs, nil, "NUL"},
		{`\xff`, ExecArgs, nil, "raw byte"},
		{`\uD800`, ExecArgs, nil, "not a valid character"},
		{``, ExecArgs, nil, ""},
	}
	for _, tc := range cases {
		got, err := SplitWords(tc.in, tc.mode)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q: %q %v, want %q", tc.in, got, err, tc.want)
		}
	}
}
