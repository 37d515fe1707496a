// Package usertext checks the short texts people type and others read:
// display names, contact names, channel names, tags, subjects. Such a text
// is one line of valid UTF-8 with no control character and no bidirectional
// override or isolate, which could make a name read as another one
// ("Trojan Source", CVE-2021-42574) or break the line it is shown on.
package usertext

import (
	"fmt"
	"unicode/utf8"
)

// Check returns an error saying what is wrong with s, or nil. The error
// reads after a field name: "name: holds a control character (U+0000)".
func Check(s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("is not valid UTF-8")
	}
	for _, r := range s {
		switch {
		case IsControl(r):
			return fmt.Errorf("holds a control character (%U)", r)
		case IsBidiOverride(r):
			return fmt.Errorf("holds a bidirectional override (%U)", r)
		}
	}
	return nil
}

// IsControl reports a C0 or C1 control character, or DEL.
func IsControl(r rune) bool { return r < 0x20 || r >= 0x7f && r <= 0x9f }

// IsBidiOverride reports a bidirectional embedding, override or isolate
// (U+202A–U+202E, U+2066–U+2069); marks such as U+200F are fine.
func IsBidiOverride(r rune) bool { return r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069 }
