package verify

import (
	"strconv"
	"strings"
)

// spamVerdict reads the topmost verdict of SpamAssassin or rspamd. Only the
// topmost header counts: our filter prepends its own, and anything below it
// came from the sender or an earlier hop.
func spamVerdict(fields []field) SpamFacts {
	for _, f := range fields {
		switch strings.ToLower(f.Name) {
		case "x-spam-status":
			// "Yes, score=7.3 required=5.0 tests=... autolearn=no version=4.0.0"
			verdict, rest, _ := strings.Cut(f.Value, ",")
			out := SpamFacts{Checked: true, Source: "spamassassin", Spam: strings.EqualFold(strings.TrimSpace(verdict), "yes")}
			for _, w := range strings.Fields(rest) {
				k, val, _ := strings.Cut(w, "=")
				switch strings.ToLower(k) {
				case "score", "hits":
					out.Score, _ = strconv.ParseFloat(val, 64)
				case "required":
					out.Threshold, _ = strconv.ParseFloat(val, 64)
				}
			}
			return out
		case "x-spamd-result":
			// "default: True [12.30 / 15.00]; SYMBOL(1.0)[...]; ..."
			head, _, _ := strings.Cut(f.Value, ";")
			_, head, _ = strings.Cut(head, ":")
			head = strings.TrimSpace(head)
			flag, nums, _ := strings.Cut(head, "[")
			out := SpamFacts{Checked: true, Source: "rspamd", Spam: strings.EqualFold(strings.TrimSpace(flag), "true")}
			nums, _, _ = strings.Cut(nums, "]")
			if score, thr, ok := strings.Cut(nums, "/"); ok {
				out.Score, _ = strconv.ParseFloat(strings.TrimSpace(score), 64)
				out.Threshold, _ = strconv.ParseFloat(strings.TrimSpace(thr), 64)
			}
			return out
		case "x-spam-flag":
			return SpamFacts{Checked: true, Source: "spamassassin", Spam: strings.EqualFold(f.Value, "yes")}
		case "x-spam":
			// rspamd's milter adds "X-Spam: Yes" on spam only.
			return SpamFacts{Checked: true, Source: "rspamd", Spam: strings.EqualFold(f.Value, "yes")}
		}
	}
	return SpamFacts{}
}
