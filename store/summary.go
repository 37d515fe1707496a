package store

import (
	"slices"
	"time"

	"github.com/google/uuid"
)

// The conversation summary (LastActivity, LastMessageID, Excerpt,
// MessageCount, UnreadCount, Protocols) is computed here, once, for every
// engine: an engine decides how to persist a SummaryDelta (a read-modify-write
// under its lock, or counter increments and timestamped cells) but not what it
// is. The rules:
//
//   - a stored message counts once, and once more as unread while not read;
//   - LastActivity is the latest ReceivedAt of any message ever stored, and at
//     least CreatedAt; deleting is not activity, so it never moves back (the
//     list order must not jump under the user);
//   - LastMessageID and Excerpt show the newest remaining message, by
//     (ReceivedAt, ID);
//   - Protocols collects every protocol seen;
//   - counts never go below zero, whatever order concurrent changes land in.

// SummaryDelta is how one change to a message changes its conversation's
// summary.
type SummaryDelta struct {
	Messages int // added to MessageCount
	Unread   int // added to UnreadCount
	// Activity, when not zero, is a candidate LastActivity: the later wins.
	Activity time.Time
	// Protocol, when not empty, joins Protocols.
	Protocol string
}

func unread(f Flags) int {
	if f.Read {
		return 0
	}
	return 1
}

// PutDelta is the change a newly stored message makes.
func PutDelta(m Message) SummaryDelta {
	return SummaryDelta{Messages: 1, Unread: unread(m.Flags), Activity: m.ReceivedAt, Protocol: m.Protocol}
}

// FlagsDelta is the change of a message's flags from was to now.
func FlagsDelta(was, now Flags) SummaryDelta {
	return SummaryDelta{Unread: unread(now) - unread(was)}
}

// DeleteDelta is the change deleting a message makes. Its activity is zero:
// deleting is not activity.
func DeleteDelta(m Message) SummaryDelta {
	return SummaryDelta{Messages: -1, Unread: -unread(m.Flags)}
}

// Apply returns c with d applied. It does not touch the latest message: see
// WithLatest.
func (c Conversation) Apply(d SummaryDelta) Conversation {
	c.SetCounts(int64(c.MessageCount+d.Messages), int64(c.UnreadCount+d.Unread))
	if d.Activity.After(c.LastActivity) {
		c.LastActivity = d.Activity
	}
	if d.Protocol != "" && !slices.Contains(c.Protocols, d.Protocol) {
		c.Protocols = append(slices.Clone(c.Protocols), d.Protocol)
	}
	return c
}

// SetCounts sets the counts from stored values, which counter-based engines
// may leave below zero for a moment under concurrent changes.
func (c *Conversation) SetCounts(messages, unread int64) {
	c.MessageCount, c.UnreadCount = int(max(messages, 0)), int(max(unread, 0))
}

// WithLatest returns c showing m (nil: none left) as its newest message.
func (c Conversation) WithLatest(m *Message) Conversation {
	c.LastMessageID, c.Excerpt = LatestOf(m)
	return c
}

// LatestOf is what the summary shows of m as the newest message (nil: none).
func LatestOf(m *Message) (id uuid.UUID, excerpt string) {
	if m == nil {
		return uuid.Nil, ""
	}
	return m.ID, m.Excerpt
}

// EmptySummary returns c as a new conversation's summary: no message, last
// activity at creation.
func (c Conversation) EmptySummary() Conversation {
	c.LastActivity = c.CreatedAt
	c.LastMessageID, c.Excerpt, c.MessageCount, c.UnreadCount, c.Protocols = uuid.Nil, "", 0, 0, nil
	return c
}
