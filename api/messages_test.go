package api

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/caliopen/caliopen/privacyindex"
	"github.com/caliopen/caliopen/store"
)

const richMessage = `From: Carol <carol@remote.example>
To: alice@example.org
Subject: =?utf-8?q?Caf=C3=A9?= plans
Date: Mon, 02 Nov 2026 10:00:00 +0000
Message-ID: <rich-1@remote.example>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

--outer
Content-Type: multipart/alternative; boundary="alt"

--alt
Content-Type: text/plain; charset=utf-8

Hello Alice, see the report.
--alt
Content-Type: text/html; charset=utf-8

<p onclick="steal()">Hello <b>Alice</b><script>alert(1)</script></p><img src="https://tracker.example/pixel.gif?u=alice" alt="logo"><a href="https://remote.example/x">link</a>
--alt--
--outer
Content-Type: application/pdf; name="report.pdf"
Content-Disposition: attachment; filename="report.pdf"
Content-Transfer-Encoding: base64

JVBERi0xLjQKJcfsj6IKMSAwIG9iago=
--outer
Content-Type: text/html; name="evil.html"
Content-Disposition: attachment; filename="../../evil.html"

<script>alert(document.cookie)</script>
--outer--
`

func TestMessageView(t *testing.T) {
	h := newHarness(t)
	d := h.deliver(h.alice, richMessage)
	path := "/api/v1/messages/" + d.MessageID.String()

	m := decode[messageView](t, h.do(http.MethodGet, path, h.alice.Token, nil), http.StatusOK)
	if m.Subject != "Café plans" || !strings.Contains(m.TextBody, "see the report") {
		t.Errorf("subject %q text %q", m.Subject, m.TextBody)
	}
	for _, bad := range []string{"<script", "alert(1)", "onclick", "tracker.example"} {
		if strings.Contains(m.HTMLBody, bad) {
			t.Errorf("sanitised HTML still holds %q: %s", bad, m.HTMLBody)
		}
	}
	if !strings.Contains(m.HTMLBody, "<b>Alice</b>") || !strings.Contains(m.HTMLBody, `rel="nofollow noreferrer`) {
		t.Errorf("sanitised HTML lost safe markup or link hardening: %s", m.HTMLBody)
	}
	if m.RemoteImagesBlocked != 1 {
		t.Errorf("remote_images_blocked %d, want 1", m.RemoteImagesBlocked)
	}
	if m.MessageID != "rich-1@remote.example" || !strings.Contains(string(m.Security), "TLSv1.3") {
		t.Errorf("message_id %q, security %s", m.MessageID, m.Security)
	}
	i := slices.IndexFunc(m.Headers, func(h headerView) bool { return h.Name == "Subject" })
	if i < 0 || m.Headers[i].Value != "Café plans" {
		t.Errorf("Subject header not decoded: %+v", m.Headers)
	}
	if len(m.AttachmentList) != 2 {
		t.Fatalf("attachments %+v, want 2", m.AttachmentList)
	}
	pdf := m.AttachmentList[0]
	if pdf.Filename != "report.pdf" || pdf.PartPath != "2" {
		t.Fatalf("attachment %+v, want report.pdf at part 2", pdf)
	}

	// Download: transfer-decoded, served as an attachment.
	rec := h.do(http.MethodGet, pdf.URL, h.alice.Token, nil)
	if rec.Code != http.StatusOK || !strings.HasPrefix(rec.Body.String(), "%PDF-1.4") {
		t.Fatalf("attachment: %d %q", rec.Code, rec.Body.String())
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/pdf" {
		t.Errorf("Content-Type %q", ct)
	}
	if cd := rec.Header().Get("Content-Disposition"); cd != `attachment; filename=report.pdf` {
		t.Errorf("Content-Disposition %q", cd)
	}
	// HTML attachment: never served as HTML, never a path in the filename.
	rec = h.do(http.MethodGet, m.AttachmentList[1].URL, h.alice.Token, nil)
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/octet-stream" {
		t.Fatalf("html attachment: %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	if cd := rec.Header().Get("Content-Disposition"); strings.Contains(cd, "..") || !strings.Contains(cd, "evil.html") {
		t.Errorf("Content-Disposition %q", cd)
	}
	if rec.Header().Get("X-Content-Type-Options") != "nosniff" || !strings.Contains(rec.Header().Get("Content-Security-Policy"), "sandbox") {
		t.Errorf("attachment served without nosniff/sandbox: %v", rec.Header())
	}
	wantError(t, h.do(http.MethodGet, path+"/attachments/9", h.alice.Token, nil), http.StatusNotFound, "not_found", "")
	wantError(t, h.do(http.MethodGet, path+"/attachments/1", h.alice.Token, nil), http.StatusNotFound, "not_found", "")
	wantError(t, h.do(http.MethodGet, path+"/attachments/x.1", h.alice.Token, nil), http.StatusBadRequest, "invalid", "part")
	// Nested part path into the alternative.
	rec = h.do(http.MethodGet, path+"/attachments/1.1", h.alice.Token, nil)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "see the report") || rec.Header().Get("Content-Type") != "text/plain; charset=utf-8" {
		t.Errorf("part 1.1: %d %q %q", rec.Code, rec.Header().Get("Content-Type"), rec.Body)
	}

	// Raw.
	rec = h.do(http.MethodGet, path+"/raw", h.alice.Token, nil)
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "message/rfc822" ||
		rec.Body.String() != strings.ReplaceAll(h.mail(richMessage), "\n", "\r\n") {
		t.Errorf("raw: %d %q, %d bytes", rec.Code, rec.Header().Get("Content-Type"), rec.Body.Len())
	}

	// Flags: partial updates keep the rest.
	f := decode[store.Flags](t, h.do(http.MethodPatch, path, h.alice.Token, map[string]any{"read": true, "tags": []string{"work", "work", "q4"}}), http.StatusOK)
	if !f.Read || f.Starred || !slices.Equal(f.Tags, []string{"work", "q4"}) {
		t.Errorf("flags %+v", f)
	}
	f = decode[store.Flags](t, h.do(http.MethodPatch, path, h.alice.Token, map[string]any{"starred": true}), http.StatusOK)
	if !f.Read || !f.Starred || len(f.Tags) != 2 {
		t.Errorf("flags after starring %+v", f)
	}
	wantError(t, h.do(http.MethodPatch, path, h.alice.Token, map[string]any{"tags": []string{""}}), http.StatusBadRequest, "invalid", "tags[0]")
	wantError(t, h.do(http.MethodPatch, path, h.alice.Token, map[string]any{"read": "yes"}), http.StatusBadRequest, "invalid", "read")
	wantError(t, h.do(http.MethodPatch, path, h.alice.Token, map[string]any{"flagged": true}), http.StatusBadRequest, "invalid", "flagged")

	// Conversation: participants resolved, unread count follows the flag.
	conv := decode[conversationView](t, h.do(http.MethodGet, "/api/v1/conversations/"+d.ConversationID.String(), h.alice.Token, nil), http.StatusOK)
	if conv.MessageCount != 1 || conv.UnreadCount != 0 || conv.PI.Version != privacyindex.Version {
		t.Errorf("conversation %+v", conv)
	}
	if !slices.ContainsFunc(conv.Participants, func(p participantView) bool {
		return p.Address == "carol@remote.example" && p.ContactID != nil && p.ContactName != ""
	}) {
		t.Errorf("participants not resolved to contacts: %+v", conv.Participants)
	}
	msgs := decode[page[messageSummary]](t, h.do(http.MethodGet, "/api/v1/conversations/"+d.ConversationID.String()+"/messages", h.alice.Token, nil), http.StatusOK)
	if len(msgs.Items) != 1 || msgs.Items[0].ID != d.MessageID || msgs.NextCursor != "" {
		t.Errorf("messages %+v", msgs)
	}

	// Delete the message, then the conversation.
	if rec := h.do(http.MethodDelete, path, h.alice.Token, nil); rec.Code != http.StatusNoContent {
		t.Fatalf("delete message: %d %s", rec.Code, rec.Body)
	}
	wantError(t, h.do(http.MethodGet, path, h.alice.Token, nil), http.StatusNotFound, "not_found", "")
	if rec := h.do(http.MethodDelete, "/api/v1/conversations/"+d.ConversationID.String(), h.alice.Token, nil); rec.Code != http.StatusNoContent {
		t.Fatalf("delete conversation: %d %s", rec.Code, rec.Body)
	}
	wantError(t, h.do(http.MethodGet, "/api/v1/conversations/"+d.ConversationID.String(), h.alice.Token, nil), http.StatusNotFound, "not_found", "")
}

func TestConversationPagination(t *testing.T) {
	h := newHarness(t)
	base := h.clock.Now().Add(-time.Hour)
	want := map[uuid.UUID]bool{}
	for i := range 23 {
		c := seedConversation(t, h.st, h.alice.ID, base.Add(time.Duration(i)*time.Minute), i, 1, nil)
		want[c.ID] = true
	}
	// Bob's conversations never show up in Alice's list.
	seedConversation(t, h.st, h.bob.ID, base, 99, 1, nil)

	var got []conversationView
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("pagination does not end")
		}
		q := url.Values{"limit": {"5"}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		p := decode[page[conversationView]](t, h.do(http.MethodGet, "/api/v1/conversations?"+q.Encode(), h.alice.Token, nil), http.StatusOK)
		if len(p.Items) > 5 {
			t.Fatalf("page of %d, limit 5", len(p.Items))
		}
		got = append(got, p.Items...)
		if p.NextCursor == "" {
			break
		}
		cursor = p.NextCursor
	}
	if len(got) != 23 {
		t.Fatalf("%d conversations listed, want 23", len(got))
	}
	for i, c := range got {
		if !want[c.ID] {
			t.Fatalf("conversation %s listed twice or not Alice's", c.ID)
		}
		delete(want, c.ID)
		if i > 0 && c.LastActivity.After(got[i-1].LastActivity) {
			t.Fatalf("not sorted by last activity at %d", i)
		}
		if c.PI.Band != "D" || c.PI.Score != 22 {
			t.Errorf("conversation PI %+v, want 22 D from its messages", c.PI)
		}
	}

	// Bad paging input is a 400, never a 500.
	for q, field := range map[string]string{"limit=0": "limit", "limit=abc": "limit", "limit=501": "limit",
		"cursor=%25%25": "cursor", "cursor=bm90IGpzb24": "cursor", "cursor=" + cursorOf(`{"c":"garbage","n":5}`): "cursor"} {
		wantError(t, h.do(http.MethodGet, "/api/v1/conversations?"+q, h.alice.Token, nil), http.StatusBadRequest, "invalid", field)
	}
}

func cursorOf(js string) string {
	var c cursor
	if err := jsonUnmarshal([]byte(js), &c); err != nil {
		panic(err)
	}
	return c.encode()
}

func TestConversationFilters(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.filterScanLimit = 30 })
	base := h.clock.Now().Add(-time.Hour)
	var all, unread, tagged, bandB []uuid.UUID
	for i := range 40 {
		c := seedConversation(t, h.st, h.alice.ID, base.Add(time.Duration(i)*time.Minute), i, 2, func(m *store.Message) {
			m.Flags.Read = i%3 != 0
			if i%7 == 0 {
				m.Flags.Tags = []string{"project"}
			}
			if i%5 == 0 {
				m.PI = store.PI{Version: 1, Score: 70, Band: "B"}
			}
		})
		all = append(all, c.ID)
		if i%3 == 0 {
			unread = append(unread, c.ID)
		}
		if i%7 == 0 {
			tagged = append(tagged, c.ID)
		}
		if i%5 == 0 {
			bandB = append(bandB, c.ID)
		}
	}
	collect := func(q string) []uuid.UUID {
		var ids []uuid.UUID
		cursor := ""
		for pages := 0; ; pages++ {
			if pages > 100 {
				t.Fatalf("%s: pagination does not end", q)
			}
			u := "/api/v1/conversations?limit=4&" + q
			if cursor != "" {
				u += "&cursor=" + url.QueryEscape(cursor)
			}
			p := decode[page[conversationView]](t, h.do(http.MethodGet, u, h.alice.Token, nil), http.StatusOK)
			for _, c := range p.Items {
				ids = append(ids, c.ID)
			}
			if p.NextCursor == "" {
				return ids
			}
			cursor = p.NextCursor
		}
	}
	same := func(name string, got, want []uuid.UUID) {
		t.Helper()
		slices.SortFunc(got, func(a, b uuid.UUID) int { return strings.Compare(a.String(), b.String()) })
		slices.SortFunc(want, func(a, b uuid.UUID) int { return strings.Compare(a.String(), b.String()) })
		if !slices.Equal(got, want) {
			t.Errorf("%s: got %d conversations, want %d", name, len(got), len(want))
		}
	}
	same("unread", collect("unread=true"), unread)
	same("tag", collect("tag=project"), tagged)
	same("band", collect("band=b"), bandB)
	same("protocol", collect("protocol=email"), all)
	if got := collect("protocol=xmpp"); len(got) != 0 {
		t.Errorf("protocol=xmpp: %d conversations", len(got))
	}

	// A filter matching little stops at the work bound with a cursor.
	p := decode[page[conversationView]](t, h.do(http.MethodGet, "/api/v1/conversations?limit=50&tag=project", h.alice.Token, nil), http.StatusOK)
	if p.NextCursor == "" || len(p.Items) >= len(tagged) {
		t.Errorf("bounded scan: %d items, cursor %q: want a short page with a cursor", len(p.Items), p.NextCursor)
	}
	for q, field := range map[string]string{"band=F": "band", "unread=maybe": "unread", "protocol=carrier-pigeon": "protocol"} {
		wantError(t, h.do(http.MethodGet, "/api/v1/conversations?"+q, h.alice.Token, nil), http.StatusBadRequest, "invalid", field)
	}
}

func TestMessagePagination(t *testing.T) {
	h := newHarness(t)
	c := seedConversation(t, h.st, h.alice.ID, h.clock.Now().Add(-time.Hour), 1, 12, nil)
	seen := map[uuid.UUID]bool{}
	cursor := ""
	var last time.Time
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		u := "/api/v1/conversations/" + c.ID.String() + "/messages?limit=5"
		if cursor != "" {
			u += "&cursor=" + url.QueryEscape(cursor)
		}
		p := decode[page[messageSummary]](t, h.do(http.MethodGet, u, h.alice.Token, nil), http.StatusOK)
		for _, m := range p.Items {
			if seen[m.ID] {
				t.Fatalf("message %s twice", m.ID)
			}
			if !last.IsZero() && m.ReceivedAt.After(last) {
				t.Fatal("messages not newest first")
			}
			seen[m.ID], last = true, m.ReceivedAt
		}
		if p.NextCursor == "" {
			break
		}
		cursor = p.NextCursor
	}
	if len(seen) != 12 {
		t.Fatalf("%d messages, want 12", len(seen))
	}
}

// TestConversationPIFollowsMessages: a cached conversation PI is replaced
// as soon as the conversation's messages change.
func TestConversationPIFollowsMessages(t *testing.T) {
	h := newHarness(t)
	conv := seedConversation(t, h.st, h.alice.ID, h.clock.Now().Add(-time.Hour), 1, 1, func(m *store.Message) {
		m.PI = store.PI{Version: 1, Score: 5, Band: "E"}
	})
	path := "/api/v1/conversations/" + conv.ID.String()
	if v := decode[conversationView](t, h.do(http.MethodGet, path, h.alice.Token, nil), http.StatusOK); v.PI.Score != 5 {
		t.Fatalf("PI %d, want 5", v.PI.Score)
	}
	_, _, err := h.st.PutMessage(context.Background(), store.Message{
		ID: uuid.Must(uuid.NewV7()), UserID: h.alice.ID, ConversationID: conv.ID, DedupKey: "second", Protocol: "email",
		Inbound: true, ReceivedAt: h.clock.Now(), Date: h.clock.Now(), Participants: conv.Participants,
		PI: store.PI{Version: 1, Score: 25, Band: "C"}, RawHash: conv.LastMessageID.String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	list := decode[page[conversationView]](t, h.do(http.MethodGet, "/api/v1/conversations", h.alice.Token, nil), http.StatusOK)
	if len(list.Items) != 1 || list.Items[0].PI.Score != 15 {
		t.Fatalf("PI after a new message: %+v, want 15 (mean of 5 and 25)", list.Items)
	}
}

// TestCursorAcrossLimits: a cursor taken with one limit continues correctly
// with another (the cursor remembers the store page size it points into).
func TestCursorAcrossLimits(t *testing.T) {
	h := newHarness(t)
	base := h.clock.Now().Add(-time.Hour)
	for i := range 20 {
		seedConversation(t, h.st, h.alice.ID, base.Add(time.Duration(i)*time.Minute), i, 1, nil)
	}
	var ids []uuid.UUID
	cursor := ""
	for _, limit := range []string{"7", "3", "6", "50"} {
		u := "/api/v1/conversations?limit=" + limit
		if cursor != "" {
			u += "&cursor=" + url.QueryEscape(cursor)
		}
		p := decode[page[conversationView]](t, h.do(http.MethodGet, u, h.alice.Token, nil), http.StatusOK)
		for _, c := range p.Items {
			ids = append(ids, c.ID)
		}
		cursor = p.NextCursor
		if cursor == "" {
			break
		}
	}
	seen := map[uuid.UUID]bool{}
	for _, id := range ids {
		if seen[id] {
			t.Fatalf("conversation %s twice", id)
		}
		seen[id] = true
	}
	if len(ids) != 20 || cursor != "" {
		t.Fatalf("%d conversations over pages of 7, 3, 6, 50 (cursor %q), want 20", len(ids), cursor)
	}
}

// The bodies are served from the raw message (ingest stores only the
// excerpt); a record stored with its bodies, as before, is served as stored.
func TestMessageBodiesFromRawAndOldRecords(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	d := h.deliver(h.alice, richMessage)
	stored, err := h.st.GetMessage(ctx, h.alice.ID, d.MessageID)
	if err != nil {
		t.Fatal(err)
	}
	if stored.TextBody != "" || stored.HTMLBody != "" || !strings.Contains(stored.Excerpt, "see the report") {
		t.Fatalf("stored record: text %q html %q excerpt %q; want no bodies, an excerpt", stored.TextBody, stored.HTMLBody, stored.Excerpt)
	}

	// An old record: same raw message, bodies in the record.
	raw, err := h.st.GetBlob(ctx, stored.RawHash)
	if err != nil {
		t.Fatal(err)
	}
	old := stored
	old.ID, old.DedupKey = uuid.Must(uuid.NewV7()), "old:"+stored.RawHash
	old.TextBody, old.HTMLBody = "as stored then", "<p>stored <i>then</i></p>"
	if _, err := h.st.PutBlob(ctx, raw); err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.st.PutMessage(ctx, old); err != nil {
		t.Fatal(err)
	}
	m := decode[messageView](t, h.do(http.MethodGet, "/api/v1/messages/"+old.ID.String(), h.alice.Token, nil), http.StatusOK)
	if m.TextBody != "as stored then" || m.HTMLBody != "<p>stored <i>then</i></p>" {
		t.Errorf("old record served text %q html %q", m.TextBody, m.HTMLBody)
	}
	if i := slices.IndexFunc(m.Headers, func(h headerView) bool { return h.Name == "Subject" }); i < 0 || m.Headers[i].Value != "Café plans" {
		t.Errorf("old record headers: %+v", m.Headers)
	}
}
