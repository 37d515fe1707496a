// Package systemd holds the unit files; this test proves they load.
package systemd

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestUnitsVerify runs systemd-analyze verify on every unit, with ExecStart
// pointed at a freshly built caliopen binary, and fails on any warning.
func TestUnitsVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("systemd-analyze not installed")
		}
		t.Skip("systemd-analyze not installed")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "caliopen")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/caliopen").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	units, _ := filepath.Glob("*.service")
	if len(units) != 4 {
		t.Fatalf("want 4 units (serve, milter, lookupd, api), found %v", units)
	}
	roles := map[string]bool{}
	var paths []string
	for _, u := range units {
		raw, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		text := string(raw)
		for _, must := range []string{"User=caliopen", "ProtectSystem=strict", "PrivateTmp=yes", "NoNewPrivileges=yes", "StateDirectory=caliopen", "CapabilityBoundingSet=\n", "\nMemoryMax=", "\nTasksMax="} {
			if !strings.Contains(text, must) {
				t.Errorf("%s: missing %q", u, strings.TrimSpace(must))
			}
		}
		for _, line := range strings.Split(text, "\n") {
			if cmd, ok := strings.CutPrefix(line, "ExecStart=/usr/local/bin/caliopen "); ok {
				f := strings.Fields(cmd)
				roles[f[len(f)-1]] = true
			}
		}
		p := filepath.Join(dir, u)
		os.WriteFile(p, []byte(strings.ReplaceAll(text, "/usr/local/bin/caliopen", bin)), 0o644)
		paths = append(paths, p)
	}
	for _, r := range []string{"serve", "milter", "lookupd", "api"} {
		if !roles[r] {
			t.Errorf("no unit runs caliopen %s", r)
		}
	}
	out, err := exec.Command(analyze, append([]string{"verify"}, paths...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, dir) {
			t.Errorf("systemd-analyze: %s", line)
		}
	}
}
