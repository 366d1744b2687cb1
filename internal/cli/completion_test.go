//go:build remote

package cli

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
)

// `qmd completion bash|zsh` completes every verb the usage text shows,
// including daemon-level ones added later (their synopsis line is enough).
func TestCompletionCoversUsage(t *testing.T) {
	var help, stderr bytes.Buffer
	if code := Main([]string{"help"}, &help, &stderr); code != 0 {
		t.Fatalf("qmd help: exit %d: %s", code, stderr.String())
	}
	verbs := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^(?:Usage:)?\s+qmd ([a-z][a-z0-9-]*(?:\|[a-z][a-z0-9-]*)*)`).FindAllStringSubmatch(help.String(), -1) {
		for _, v := range strings.Split(m[1], "|") {
			verbs[v] = true
		}
	}
	if len(verbs) < 10 {
		t.Fatalf("found only %d verbs in the usage text:\n%s", len(verbs), help.String())
	}
	for _, shell := range []string{"bash", "zsh"} {
		var out bytes.Buffer
		stderr.Reset()
		if code := Main([]string{"completion", shell}, &out, &stderr); code != 0 {
			t.Fatalf("qmd completion %s: exit %d: %s", shell, code, stderr.String())
		}
		for v := range verbs {
			if !strings.Contains(out.String(), "'"+v+"'") && !strings.Contains(out.String(), "'"+v+":") {
				t.Errorf("qmd completion %s does not complete %q (shown by qmd help); its synopsis line in internal/cli's usage must read \"qmd %s [--flag ARG]... ARGS\"", shell, v, v)
			}
		}
	}
}
