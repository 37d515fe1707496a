package usertext

import (
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	for _, ok := range []string{"", "Alice Martin", "Zoë Ødegård", "日本語", "محمد", "a\u200fb" /* RLM: a mark, not an override */, "tag: ☂"} {
		if err := Check(ok); err != nil {
			t.Errorf("Check(%q) = %v, want nil", ok, err)
		}
	}
	for in, want := range map[string]string{
		"a\x00b":          "control character (U+0000)",
		"line\nbreak":     "control character (U+000A)",
		"tab\there":       "control character (U+0009)",
		"del\x7f":         "control character (U+007F)",
		"c1\u0085":        "control character (U+0085)",
		"paypal\u202ecom": "bidirectional override (U+202E)",
		"\u202aembed":     "bidirectional override (U+202A)",
		"iso\u2066late":   "bidirectional override (U+2066)",
		"pdi\u2069":       "bidirectional override (U+2069)",
		"bad\xffutf8":     "not valid UTF-8",
	} {
		if err := Check(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Check(%q) = %v, want %q", in, err, want)
		}
	}
}
