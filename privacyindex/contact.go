package privacyindex

import (
	"math"
	"slices"
	"strconv"
	"time"
)

// Contact and conversation windows.
const (
	observedWindow   = 180 * 24 * time.Hour // messages older than this do not count
	observedMax      = 50                   // only the most recent 50 messages count
	halfLifeDays     = 30.0                 // a message's weight halves every 30 days
	warningWindow    = 30 * 24 * time.Hour  // a warning this recent caps the contact at 24
	warningCap       = 24
	conversationLast = 20 // a conversation is no higher than the mean of its last 20 messages
)

// ScoredMessage is a message's stored PI, as the contact and conversation
// scores need it.
type ScoredMessage struct {
	At      time.Time `json:"at"`
	Score   int       `json:"score"`
	Warning bool      `json:"warning"`
	Inbound bool      `json:"inbound"`
}

// ContactInput is what a contact's PI is computed from. Messages are the
// contact's messages in both directions, in any order (only the 50 most
// recent within 180 days of Now count); Channels are its ways to reach it.
type ContactInput struct {
	Messages []ScoredMessage `json:"messages"`
	Channels []ChannelInput  `json:"channels"`
	// Current is the channel the user writes on now (zero: none).
	Current ChannelRef `json:"current"`
	Now     time.Time  `json:"now"`
}

// ContactResult is a contact's PI: the observed score of past traffic, shown
// with the best channel's potential and the advice to reach it.
type ContactResult struct {
	Version int `json:"version"`
	// Observed is false when no message falls in the window: Score is then
	// 0 and Band empty, as there is nothing to score.
	Observed bool   `json:"observed"`
	Score    int    `json:"score"`
	Band     string `json:"band"`
	Warning  bool   `json:"warning"` // a message with a warning in the last 30 days
	// Messages is how many messages the observed score is made of.
	Messages       int             `json:"messages"`
	Facts          []Fact          `json:"facts"`
	Caps           []Cap           `json:"caps"`
	Advice         []Advice        `json:"advice"`
	Recommendation Recommendation  `json:"recommendation"`
	Channels       []ChannelResult `json:"channels"`
}

// age is how long before now t was; a date in the future (clock skew)
// counts as now rather than earning extra weight.
func age(now, t time.Time) time.Duration {
	return max(now.Sub(t), 0)
}

// Observed returns the recency-weighted mean of the 50 most recent messages
// within 180 days of now (weight 2^(−age in days / 30)), and how many counted.
func Observed(msgs []ScoredMessage, now time.Time) (mean float64, n int) {
	in := make([]ScoredMessage, 0, len(msgs))
	for _, m := range msgs {
		if age(now, m.At) <= observedWindow {
			in = append(in, m)
		}
	}
	// Most recent first; ties by score so the selection is deterministic.
	slices.SortStableFunc(in, func(a, b ScoredMessage) int {
		if c := b.At.Compare(a.At); c != 0 {
			return c
		}
		return a.Score - b.Score
	})
	if len(in) > observedMax {
		in = in[:observedMax]
	}
	var sum, wsum float64
	for _, m := range in {
		days := age(now, m.At).Hours() / 24
		w := math.Exp2(-days / halfLifeDays)
		sum += w * float64(clamp(m.Score, 0, 100))
		wsum += w
	}
	if wsum == 0 {
		return 0, 0
	}
	return sum / wsum, len(in)
}

// Contact computes a contact's PI.
func Contact(in ContactInput) ContactResult {
	r := ContactResult{Version: Version, Facts: []Fact{}, Caps: []Cap{}, Advice: []Advice{}}
	mean, n := Observed(in.Messages, in.Now)
	r.Messages = n
	for _, m := range in.Messages {
		if m.Warning && age(in.Now, m.At) <= warningWindow {
			r.Warning = true
			break
		}
	}
	if n > 0 {
		r.Observed = true
		score := roundHalfUp(mean)
		r.Facts = append(r.Facts, Fact{ID: "observed",
			Label:  "recency-weighted mean over " + strconv.Itoa(n) + " message(s) in the last 180 days",
			Points: float64(score), Max: 100})
		if r.Warning {
			r.Caps = append(r.Caps, Cap{ID: "K5", Limit: warningCap, Reason: "a message with a warning in the last 30 days"})
		}
		r.Score = applyCaps(score, r.Caps)
		r.Band = BandOf(r.Score)
	}

	r.Channels = make([]ChannelResult, len(in.Channels))
	for i, c := range in.Channels {
		if c.Now.IsZero() {
			c.Now = in.Now
		}
		r.Channels[i] = Channel(c)
	}
	r.Recommendation = Recommend(r.Channels, in.Current)
	if !r.Recommendation.Found {
		return r
	}
	rec := r.Recommendation
	var use ChannelResult
	for _, c := range r.Channels {
		if c.Ref() == rec.Channel {
			use = c
			break
		}
	}
	r.Facts = append(r.Facts, Fact{ID: "potential",
		Label:  "best channel now: " + rec.BestMode + " (" + BandOf(rec.BestScore) + ")",
		Points: float64(rec.BestScore), Max: 100})
	// The advice is the switch, if one is proposed, then what raises the
	// channel the user is to write on.
	if r.Recommendation.Switch {
		r.Advice = append(r.Advice, Advice{Action: ActSwitchChannel, Text: r.Recommendation.Text, Gain: r.Recommendation.Gain})
	}
	r.Advice = append(r.Advice, use.Advice...)
	return r
}

// ParticipantScore is one participant's observed PI in a conversation.
type ParticipantScore struct {
	ID    string `json:"id"`
	Score int    `json:"score"`
}

// ConversationInput: the observed PI of each participant that has one, and
// the conversation's messages (any order; the 20 most recent count).
type ConversationInput struct {
	Participants []ParticipantScore `json:"participants"`
	Messages     []ScoredMessage    `json:"messages"`
}

// ConversationResult is a conversation's PI.
type ConversationResult struct {
	Version int `json:"version"`
	// Scored is false when there is neither a participant score nor a
	// message: Score is then 0 and Band empty.
	Scored  bool   `json:"scored"`
	Score   int    `json:"score"`
	Band    string `json:"band"`
	Warning bool   `json:"warning"` // one of the last 20 messages has a warning
	Facts   []Fact `json:"facts"`
	Caps    []Cap  `json:"caps"`
	// Advice is empty: what raises a conversation is what raises its
	// weakest participant, whose contact result carries the advice.
	Advice []Advice `json:"advice"`
}

// Conversation computes a conversation's PI: the weakest link — the lowest
// observed PI among its participants — and no higher than the mean of its
// last 20 messages (rounded down, so it is never above that mean).
func Conversation(in ConversationInput) ConversationResult {
	r := ConversationResult{Version: Version, Facts: []Fact{}, Caps: []Cap{}, Advice: []Advice{}}
	base, haveBase := 0, false
	for i, p := range in.Participants {
		s := clamp(p.Score, 0, 100)
		if !haveBase || s < base {
			base, haveBase = s, true
			r.Facts = r.Facts[:0]
			r.Facts = append(r.Facts, Fact{ID: "weakest_participant",
				Label: "weakest participant: " + in.Participants[i].ID, Points: float64(s), Max: 100})
		}
	}
	recent := slices.Clone(in.Messages)
	slices.SortStableFunc(recent, func(a, b ScoredMessage) int { return b.At.Compare(a.At) })
	if len(recent) > conversationLast {
		recent = recent[:conversationLast]
	}
	if len(recent) > 0 {
		sum := 0
		for _, m := range recent {
			sum += clamp(m.Score, 0, 100)
			r.Warning = r.Warning || m.Warning
		}
		meanFloor := sum / len(recent)
		r.Facts = append(r.Facts, Fact{ID: "recent_messages",
			Label:  "mean of the last " + strconv.Itoa(len(recent)) + " messages",
			Points: math.Round(float64(sum)/float64(len(recent))*100) / 100, Max: 100})
		if !haveBase {
			base, haveBase = meanFloor, true
		} else {
			r.Caps = append(r.Caps, Cap{ID: "recent_mean", Limit: meanFloor,
				Reason: "no higher than the mean of its last " + strconv.Itoa(len(recent)) + " messages"})
		}
	}
	if !haveBase {
		return r
	}
	r.Scored = true
	r.Score = applyCaps(base, r.Caps)
	r.Band = BandOf(r.Score)
	return r
}

// roundHalfUp rounds to the nearest integer, halves up; scores are never
// negative, so this is the usual rounding.
func roundHalfUp(x float64) int {
	return int(math.Floor(x + 0.5))
}
