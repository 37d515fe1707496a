package privacyindex

import (
	"math"
	"testing"
)

func TestObservedRecencyWeighting(t *testing.T) {
	msgs := []ScoredMessage{
		{At: now.Add(-days(30)), Score: 20},              // weight 1/2
		{At: now, Score: 80, Inbound: true},              // weight 1
		{At: now.Add(-days(181)), Score: 0},              // outside 180 days
		{At: now.Add(-days(60)), Score: 50},              // weight 1/4
		{At: now.Add(days(2)), Score: 80, Inbound: true}, // future (clock skew): weight 1, not 4
	}
	// (80 + 80 + 10 + 12.5) / (1 + 1 + 0.5 + 0.25) = 182.5 / 2.75
	mean, n := Observed(msgs, now)
	if n != 4 || math.Abs(mean-182.5/2.75) > 1e-9 {
		t.Fatalf("Observed = %v over %d, want %v over 4", mean, n, 182.5/2.75)
	}
	r := Contact(ContactInput{Messages: msgs, Now: now})
	if !r.Observed || r.Score != 66 || r.Band != "B" || r.Messages != 4 || r.Warning {
		t.Errorf("contact: %+v", r)
	}
}

func TestObservedLast50(t *testing.T) {
	var msgs []ScoredMessage
	for i := 0; i < 50; i++ { // the 50 most recent: all 90
		msgs = append(msgs, ScoredMessage{At: now.Add(-days(float64(i) / 10)), Score: 90})
	}
	for i := 0; i < 30; i++ { // older ones, inside 180 days, must not count
		msgs = append(msgs, ScoredMessage{At: now.Add(-days(10 + float64(i))), Score: 0})
	}
	if mean, n := Observed(msgs, now); n != 50 || math.Abs(mean-90) > 1e-9 {
		t.Errorf("Observed = %v over %d, want 90 over 50", mean, n)
	}
}

func TestContactWarningCap(t *testing.T) {
	msgs := []ScoredMessage{
		{At: now.Add(-days(1)), Score: 79},
		{At: now.Add(-days(29)), Score: 24, Warning: true},
	}
	r := Contact(ContactInput{Messages: msgs, Now: now})
	if !r.Warning || r.Score != 24 || len(r.Caps) != 1 || !r.Caps[0].Binding {
		t.Errorf("warning 29 days ago: %+v", r)
	}
	msgs[1].At = now.Add(-days(31))
	r = Contact(ContactInput{Messages: msgs, Now: now})
	if r.Warning || r.Score <= 24 || len(r.Caps) != 0 {
		t.Errorf("warning 31 days ago still caps: %+v", r)
	}
}

func TestContactSwitchAdvice(t *testing.T) {
	clear := ChannelInput{Protocol: ProtoEmail, Address: "bob@old.example", LastUsed: now, Now: now}
	mail := bobEmail()
	mail.Key = ChannelKey{Trust: KeyConsistent, Strength: StrengthStrong}
	r := Contact(ContactInput{Channels: []ChannelInput{clear, mail}, Current: ChannelRef{ProtoEmail, "bob@old.example"}, Now: now})
	if !r.Recommendation.Switch || len(r.Advice) == 0 || r.Advice[0].Action != ActSwitchChannel ||
		r.Advice[0].Gain != r.Channels[1].Score-r.Channels[0].Score {
		t.Fatalf("want a switch proposed first: %+v / %+v", r.Recommendation, r.Advice)
	}
	if adviceGain(r.Advice, ActVerifyKey) <= 0 {
		t.Errorf("want the recommended channel's advice (verify key) too: %+v", r.Advice)
	}
}

func TestConversation(t *testing.T) {
	msgs := []ScoredMessage{}
	for i := 0; i < 20; i++ {
		msgs = append(msgs, ScoredMessage{At: now.Add(-days(float64(i))), Score: 60 + i%2}) // mean 60.5
	}
	msgs = append(msgs, ScoredMessage{At: now.Add(-days(40)), Score: 0, Warning: true}) // 21st: ignored
	r := Conversation(ConversationInput{
		Participants: []ParticipantScore{{ID: "alice", Score: 92}, {ID: "bob", Score: 75}, {ID: "carol", Score: 88}},
		Messages:     msgs,
	})
	if !r.Scored || r.Score != 60 || r.Band != "B" || r.Warning || len(r.Caps) != 1 || !r.Caps[0].Binding {
		t.Errorf("capped by the mean of the last 20 (60.5 → 60): %+v", r)
	}
	if r.Facts[0].ID != "weakest_participant" || r.Facts[0].Points != 75 || r.Facts[0].Label != "weakest participant: bob" {
		t.Errorf("weakest participant fact: %+v", r.Facts)
	}
	r = Conversation(ConversationInput{Participants: []ParticipantScore{{ID: "bob", Score: 30}, {ID: "dan", Score: 45}}, Messages: msgs[:20]})
	if r.Score != 30 || r.Caps[0].Binding {
		t.Errorf("weakest link 30 under a mean of 60: %+v", r)
	}
	if r := Conversation(ConversationInput{}); r.Scored || r.Band != "" {
		t.Errorf("empty conversation scored: %+v", r)
	}
	if r := Conversation(ConversationInput{Messages: msgs[:3]}); r.Score != 60 || !r.Scored {
		t.Errorf("no participant scores: the mean alone, want 60: %+v", r)
	}
}
