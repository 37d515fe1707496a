package api

import (
	"net/url"
	"regexp"
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
	p := ugcWithoutNames()
	// Only absolute http(s)/mailto links: a relative URL would resolve
	// against our own origin, and an unparseable one is not shown anyway.
	p.AllowRelativeURLs(false)
	p.RequireParseableURLs(true)
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

// ugcWithoutNames is bluemonday's UGCPolicy without the "id" attribute (any
// element) and "name" (on map): an element the sender names can shadow
// globals of the page that shows it (DOM clobbering, e.g. <img id=config>
// becomes window.config). Everything else is UGCPolicy as of v1.0.27.
func ugcWithoutNames() *bluemonday.Policy {
	p := bluemonday.NewPolicy()
	p.AllowAttrs("dir").Matching(bluemonday.Direction).Globally()
	p.AllowAttrs("lang").Matching(regexp.MustCompile(`[a-zA-Z]{2,20}`)).Globally()
	p.AllowAttrs("title").Matching(bluemonday.Paragraph).Globally()
	p.AllowStandardURLs()

	p.AllowElements("article", "aside", "figure", "section", "summary",
		"h1", "h2", "h3", "h4", "h5", "h6", "hgroup",
		"br", "div", "hr", "p", "span", "wbr",
		"abbr", "acronym", "cite", "code", "dfn", "em", "figcaption", "mark", "s", "samp", "strong", "sub", "sup", "var",
		"b", "i", "pre", "small", "strike", "tt", "u", "rp", "rt", "ruby")
	p.AllowAttrs("open").Matching(regexp.MustCompile(`(?i)^(|open)$`)).OnElements("details")
	p.AllowAttrs("cite").OnElements("blockquote", "q")
	p.AllowAttrs("href").OnElements("a", "area")
	p.AllowAttrs("alt").Matching(bluemonday.Paragraph).OnElements("area")
	p.AllowAttrs("coords").Matching(regexp.MustCompile(`^([0-9]+,)+[0-9]+$`)).OnElements("area")
	p.AllowAttrs("rel").Matching(bluemonday.SpaceSeparatedTokens).OnElements("area")
	p.AllowAttrs("shape").Matching(regexp.MustCompile(`(?i)^(default|circle|rect|poly)$`)).OnElements("area")
	p.AllowAttrs("datetime").Matching(bluemonday.ISO8601).OnElements("time", "del", "ins")
	p.AllowAttrs("dir").Matching(bluemonday.Direction).OnElements("bdi", "bdo")
	p.AllowAttrs("cite").Matching(bluemonday.Paragraph).OnElements("del", "ins")
	p.AllowAttrs("value", "min", "max", "low", "high", "optimum").Matching(bluemonday.Number).OnElements("meter")
	p.AllowAttrs("value", "max").Matching(bluemonday.Number).OnElements("progress")
	p.AllowLists()
	p.AllowTables()
	p.AllowImages()
	return p
}
