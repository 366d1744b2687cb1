package quadlet

import (
	"os"
	"strings"
	"testing"

	"github.com/containers/qmd/internal/config"
)

// FuzzParse: any input is parsed or rejected with an error naming the
// file (never a panic); whatever parses converts or fails with an error,
// and a converted drop-in always loads with qmd's configuration loader.
func FuzzParse(f *testing.F) {
	for _, p := range []string{"testdata/qm/qm.container", "testdata/qm/qm.container.d/90-limits.conf", "testdata/qm/qm.container.d/30-windowmanager.conf"} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	for _, s := range []string{
		"[Container]\nPodmanArgs=--memory 2G --memory-swap 3G -m1G --security-opt label=level:s0:c1\n",
		"[Container]\nVolume=./x:/y:ro\nAddDevice=-/dev/a:/dev/a:rwm\nExec=\"a\\x41\" 'b'\n",
		"[Service]\nEnvironment=A=${B} B=$A\nOOMScoreAdjust=900\n[Container]\nRootfs=${A}%n\n",
		"[Container]\nSecurityLabelDisable=1\nSecurityLabelNested=1\nDropCapability=all\n",
		"[Service]\nMemoryHigh=2G\nMemoryMax=1G\nTasksMax=0\nLimitNOFILE=10:5\n",
		"[A\n", "=\n", "[X]\nk=v \\\n", "\xff", "[Container]\nAnnotation=\"=\"\nEnvironment==x\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse("fuzz.container", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.container") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		res, err := Convert([]*File{file}, Options{})
		if err != nil {
			return
		}
		if _, err := config.Parse("fuzz.toml", res.TOML); err != nil {
			t.Fatalf("converted drop-in does not load: %v\n%s", err, res.TOML)
		}
	})
}
