package api

import (
	"net/url"
	"strings"

	"github.com/microcosm-cc/bluemonday"
)

// blockedSrc replaces every image source: loading one from a remote server
// tells the sender when and where the message was read (a tracking pixel),
// and a relative one would hit our own origin. about:invalid is never fetched.
const blockedSrc = "about:invalid#remote-content-blocked"

// htmlPolicy is built once: bluemonday policies are safe for concurrent use
// once configured, and this one is never changed after.
var htmlPolicy = func() *bluemonday.Policy {
	p := bluemonday.UGCPolicy()
	p.RequireNoFollowOnLinks(true)
	p.RequireNoReferrerOnLinks(true)
	p.AddTargetBlankToFullyQualifiedLinks(true)
	p.RewriteSrc(func(u *url.URL) {
		*u = url.URL{Scheme: "about", Opaque: "invalid", Fragment: "remote-content-blocked"}
	})
	return p
}()

// sanitizeHTML makes a message's HTML safe to show in the web client: no
// script, no styles or handlers, no remote content. It returns how many
// sources it blocked so the client can say so.
func sanitizeHTML(in string) (string, int) {
	if in == "" {
		return "", 0
	}
	out := htmlPolicy.Sanitize(in)
	return out, strings.Count(out, blockedSrc)
}
